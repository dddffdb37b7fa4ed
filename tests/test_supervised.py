"""The supervised step reproduces keras.Model.fit exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stepkit import StepModel


def _pair(make, compile_kwargs):
    ref = make()
    ref.compile(**compile_kwargs())
    ours = StepModel(make(), step="supervised")
    ours.compile(**compile_kwargs())
    return ref, ours


def _assert_same(h_ref, h_ours, ref, ours, atol=1e-6):
    assert h_ref.history.keys() == h_ours.history.keys()
    for key in h_ref.history:
        np.testing.assert_allclose(h_ours.history[key], h_ref.history[key], rtol=0, atol=atol,
                                   err_msg=key)
    for a, b in zip(ref.weights, ours.networks["network"].weights, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=atol)


def regression_compile():
    return dict(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])


def test_fit_history_and_weights_equal_keras_with_partial_batch_and_validation(
        mlp, regression_data):
    x, y = regression_data
    ref, ours = _pair(mlp, regression_compile)
    kw = dict(batch_size=16, epochs=3, validation_split=0.2, shuffle=False, verbose=0)
    _assert_same(ref.fit(x, y, **kw), ours.fit(x, y, **kw), ref, ours)
    assert set(ours.fit(x, y, epochs=1, verbose=0).history) == {"loss", "mae"}


def test_fit_with_sample_weight_equals_keras(mlp, regression_data):
    x, y = regression_data
    w = np.linspace(0.1, 2.0, len(x)).astype("float32")
    ref, ours = _pair(mlp, lambda: dict(optimizer="sgd", loss="mse", weighted_metrics=["mae"]))
    kw = dict(sample_weight=w, batch_size=16, epochs=2, shuffle=False, verbose=0)
    _assert_same(ref.fit(x, y, **kw), ours.fit(x, y, **kw), ref, ours)
    np.testing.assert_allclose(ours.evaluate(x, y, sample_weight=w, verbose=0),
                               ref.evaluate(x, y, sample_weight=w, verbose=0), atol=1e-6)


def test_fit_with_class_weight_equals_keras(mlp, regression_data):
    x, _ = regression_data
    labels = (x[:, 0] > 0.3).astype("int32")
    ref, ours = _pair(lambda: mlp(out=2),
                      lambda: dict(optimizer="adam", loss="sparse_categorical_crossentropy",
                                   metrics=["accuracy"]))
    kw = dict(class_weight={0: 0.3, 1: 3.0}, batch_size=16, epochs=2, shuffle=False, verbose=0)
    _assert_same(ref.fit(x, labels, **kw), ours.fit(x, labels, **kw), ref, ours)


def test_tf_data_dataset_and_evaluate_equal_keras(mlp, regression_data):
    x, y = regression_data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    ref, ours = _pair(mlp, regression_compile)
    _assert_same(ref.fit(ds, epochs=2, verbose=0), ours.fit(ds, epochs=2, verbose=0), ref, ours)
    assert ours.evaluate(ds, verbose=0, return_dict=True) == pytest.approx(
        ref.evaluate(ds, verbose=0, return_dict=True), abs=1e-6)
    np.testing.assert_allclose(ours.predict(x, verbose=0), ref.predict(x, verbose=0), atol=1e-6)


def test_loss_is_epoch_mean_weighted_by_batch_size(mlp, regression_data):
    # The per-batch logs seen by callbacks end at the epoch mean, which weights
    # the partial last batch by its size (Keras' figure), not 1/7 per batch.
    x, y = regression_data
    model = StepModel(mlp(), step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    weights = [w.numpy() for w in model.weights]
    seen = []
    cb = keras.callbacks.LambdaCallback(
        on_test_batch_end=lambda batch, logs: seen.append(logs["loss"]))
    result = model.evaluate(x, y, batch_size=16, verbose=0, callbacks=[cb])
    per_batch = [float(keras.ops.convert_to_numpy(keras.losses.mean_squared_error(
                     y[i:i + 16], model.predict(x[i:i + 16], verbose=0))).mean())
                 for i in range(0, len(x), 16)]
    sizes = [len(x[i:i + 16]) for i in range(0, len(x), 16)]
    assert result == pytest.approx(np.average(per_batch, weights=sizes), abs=1e-5)
    assert result != pytest.approx(np.mean(per_batch), abs=1e-4)
    assert seen[-1] == pytest.approx(result)
    assert all((a == w.numpy()).all() for a, w in zip(weights, model.weights, strict=True))


def test_metrics_reset_each_epoch(mlp, regression_data):
    x, y = regression_data
    model = StepModel(mlp(), step="supervised")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    # With a zero learning rate every epoch sees the same model: equal means.
    np.testing.assert_allclose(history["loss"], [history["loss"][0]] * 3, rtol=1e-6)
    np.testing.assert_allclose(history["mae"], [history["mae"][0]] * 3, rtol=1e-6)
