"""The custom-loss step reproduces the guide's lower-level example."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from stepkit import ConfigError, StepModel


class GuideModel(keras.Model):
    """keras.io "Going lower-level": own Mean loss tracker plus MeanAbsoluteError."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
        self.loss_fn = keras.losses.MeanSquaredError()

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.loss_fn(y, y_pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        self.loss_tracker.update_state(loss)
        self.mae_metric.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]


def _guide(seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return GuideModel(inputs, keras.layers.Dense(1)(hidden))


@pytest.mark.tensorflow_only("the guide's TensorFlow example (tf.GradientTape); "
                              "test_backend_fidelity.py compares each backend's guide")
def test_reproduces_guide_lower_level_example(mlp, regression_data):
    x, y = regression_data
    x, y = x[:96], y[:96]  # full batches: the guide's unweighted Mean is then exact too
    guide = _guide()
    guide.compile(optimizer=keras.optimizers.Adam(1e-2))
    ours = StepModel(mlp(), step="custom-loss", config={"loss": keras.losses.MeanSquaredError()})
    ours.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["mae"])
    h_guide = guide.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    h_ours = ours.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    assert h_ours.keys() == h_guide.keys() == {"loss", "mae"}
    for key in h_guide:
        np.testing.assert_allclose(h_ours[key], h_guide[key], atol=1e-6)
    for a, b in zip(guide.weights, ours.networks["network"].weights, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6)


def test_partial_last_batch_is_weighted_like_keras(mlp, regression_data):
    # The guide's Mean weights every batch alike; stepkit weights by batch size,
    # which is what keras.Model.fit reports for the same loss.
    x, y = regression_data
    ref = mlp()
    ref.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    ours = StepModel(mlp(), step="custom-loss", config={"loss": "mse"})
    ours.compile(optimizer=keras.optimizers.SGD(0.01))
    kw = dict(batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(ours.fit(x, y, **kw).history["loss"],
                               ref.fit(x, y, **kw).history["loss"], atol=1e-6)


@keras.saving.register_keras_serializable(package="stepkit_tests")
def huberish(y_true, y_pred):
    err = ops.abs(y_true - y_pred)
    return ops.mean(ops.where(err < 1.0, 0.5 * err**2, err - 0.5), axis=-1)


def test_callable_loss_with_sample_weight_equals_keras(mlp, regression_data):
    x, y = regression_data
    w = np.linspace(0.5, 1.5, len(x)).astype("float32")
    ref = mlp()
    ref.compile(optimizer="sgd", loss=huberish)
    ours = StepModel(mlp(), step="custom-loss", config={"loss": huberish})
    ours.compile(optimizer="sgd")
    kw = dict(sample_weight=w, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(ours.fit(x, y, **kw).history["loss"],
                               ref.fit(x, y, **kw).history["loss"], atol=1e-6)
    assert ours.evaluate(x, y, verbose=0) == pytest.approx(ref.evaluate(x, y, verbose=0),
                                                           abs=1e-6)


def test_compile_loss_is_refused(mlp):
    model = StepModel(mlp(), step="custom-loss")
    with pytest.raises(ValueError, match="takes no `loss` in compile"):
        model.compile(optimizer="sgd", loss="mse")


def test_bad_loss_name_is_a_config_error(mlp):
    with pytest.raises(ConfigError, match="'loss' must be a Keras loss name.*'not-a-loss'"):
        StepModel(mlp(), step="custom-loss", config={"loss": "not-a-loss"})
