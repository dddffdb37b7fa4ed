"""What users write, through StepModel, compared with keras.Model in the same test.

Unbuilt and subclassed networks, every loss form, pre-wrapped and per-network
mixed precision, frozen networks, metric names of several outputs, the
network's own metrics, export, odd inputs, and the framework's weights.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from stepkit import ConfigError, DataStructureError, StepModel, losses

RNG = np.random.default_rng(0)
X = RNG.normal(size=(70, 5)).astype("float32")  # 70: a partial last batch of 16
Y = (X @ RNG.normal(size=(5, 1)) + 0.3).astype("float32")
FIT = dict(batch_size=16, epochs=2, shuffle=False, verbose=0)


class Subclassed(keras.Model):
    """A network as most users write it: layers made in __init__, built on first call."""

    def __init__(self, out=1, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(out)

    def call(self, x, training=False):
        return self.out(self.hidden(x))


def unbuilt_sequential():
    return keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])


def fit_both(make, compile_kwargs, fit_x=X, fit_y=Y, **fit_kwargs):
    """(keras history, stepkit history, keras net, stepkit net) from equal inits."""
    keras.utils.set_random_seed(3)
    ref = make()
    if not isinstance(ref, keras.Model):  # Keras trains a bare layer inside a Sequential
        ref = keras.Sequential([ref])
    ref.compile(**compile_kwargs())
    h_ref = ref.fit(fit_x, fit_y, **{**FIT, **fit_kwargs}).history
    keras.utils.set_random_seed(3)
    net = make()
    ours = StepModel(net, step="supervised")
    ours.compile(**compile_kwargs())
    h_ours = ours.fit(fit_x, fit_y, **{**FIT, **fit_kwargs}).history
    return h_ref, h_ours, ref, net


def assert_same(h_ref, h_ours, ref, net, atol=1e-6):
    assert h_ours.keys() == h_ref.keys()
    for key in h_ref:
        np.testing.assert_allclose(h_ours[key], h_ref[key], rtol=0, atol=atol, err_msg=key)
    for a, b in zip(ref.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)


# ---------------------------------------------------------------- 1. unbuilt networks

@pytest.mark.parametrize("make", [unbuilt_sequential, Subclassed,
                                  lambda: keras.layers.Dense(1)],
                         ids=["sequential-without-input", "subclassed", "bare-layer"])
def test_unbuilt_networks_train_exactly_like_keras(make):
    h_ref, h_ours, ref, net = fit_both(
        make, lambda: dict(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"]),
        validation_split=0.2)
    assert h_ref["loss"][1] < h_ref["loss"][0]
    assert_same(h_ref, h_ours, ref, net)


class SubGenerator(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(8 * 8)
        self.reshape = keras.layers.Reshape((8, 8, 1))

    def call(self, z):
        return self.reshape(ops.sigmoid(self.dense(z)))


def test_gan_with_subclassed_unbuilt_networks_trains_both_roles():
    images = RNG.uniform(size=(32, 8, 8, 1)).astype("float32")
    d = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)])
    gan = StepModel({"generator": SubGenerator(), "discriminator": d}, step="gan",
                    config={"latent_dim": 4}, seed=0)
    gan.compile()
    history = gan.fit(images, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["d_loss"]).all() and np.isfinite(history["g_loss"]).all()
    assert {r: int(o.iterations) for r, o in gan.optimizers.items()} == {
        "generator": 2, "discriminator": 2}
    assert gan.predict(np.zeros((3, 4), "float32"), verbose=0).shape == (3, 8, 8, 1)


# ---------------------------------------------------------------- 2. loss forms

def _keras_loss_value(loss, y, p, sw=None):
    """The loss keras.Model.compile(loss=...) computes and logs on one batch."""
    net = keras.Sequential([keras.Input((1,)), keras.layers.Identity()])
    net.compile(loss=loss)
    return float(net.evaluate(p, y, sample_weight=sw, batch_size=len(y), verbose=0))


@pytest.mark.parametrize("form", [
    "mse", "binary_crossentropy", keras.losses.mean_absolute_error,
    keras.losses.MeanSquaredError(), keras.losses.MeanSquaredError(reduction="sum"),
    keras.losses.BinaryCrossentropy(from_logits=True)],
    ids=["mse", "bce-name", "mae-function", "MSE-object", "MSE-sum", "BCE-logits-object"])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_loss_form_reduces_as_keras_compile_does(form, weighted):
    y = RNG.uniform(size=(12, 1)).round().astype("float32")
    p = RNG.uniform(0.05, 0.95, size=(12, 1)).astype("float32")
    sw = np.linspace(0.2, 2.0, 12).astype("float32") if weighted else None
    ours = float(losses.get(form)(y, p, sw))
    np.testing.assert_allclose(ours, _keras_loss_value(form, y, p, sw), rtol=1e-6)


def test_unreduced_loss_object_averages_per_sample_values():
    # keras.Model.compile differentiates the *sum* of a reduction=None loss while
    # logging its mean; stepkit steps take the per-sample mean, like "mse".
    y, p = Y[:16], X[:16, :1]
    unreduced = keras.losses.MeanSquaredError(reduction=None)
    np.testing.assert_allclose(float(losses.get(unreduced)(y, p)),
                               _keras_loss_value("mse", y, p), rtol=1e-6)
    keras.utils.set_random_seed(3)
    ref_net = unbuilt_sequential()
    keras.utils.set_random_seed(3)
    model = StepModel(unbuilt_sequential(), step="custom-loss", config={"loss": unreduced})
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    ref_net.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    np.testing.assert_allclose(model.fit(X, Y, **FIT).history["loss"],
                               ref_net.fit(X, Y, **FIT).history["loss"], atol=1e-6)


def test_gan_accepts_a_loss_name_and_a_function():
    images = RNG.uniform(size=(32, 8, 8, 1)).astype("float32")
    for loss in ("binary_crossentropy", keras.losses.hinge):
        gan = StepModel(step="gan", config={"latent_dim": 4}, seed=0)
        gan.compile(loss=loss)
        if keras.backend.backend() == "torch" and loss == "binary_crossentropy":
            # torch's probability-form BCE refuses the guide's noisy targets (up to 1.05):
            # refused when fit() starts, naming both fixes.
            with pytest.raises(ConfigError, match="loss given to compile.*label_noise=0"):
                gan.fit(images, batch_size=16, epochs=1, verbose=0)
            continue
        history = gan.fit(images, batch_size=16, epochs=1, verbose=0).history
        assert np.isfinite(history["d_loss"]).all()


# ---------------------------------------------------------------- 3. mixed precision

def test_every_role_is_loss_scaled_exactly_once_with_pre_wrapped_optimizers():
    keras.mixed_precision.set_global_policy("mixed_float16")
    wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
    for pre in ("generator", "discriminator"):
        gan = StepModel(step="gan", config={"latent_dim": 4})
        opts = {"generator": keras.optimizers.Adam(1e-3),
                "discriminator": keras.optimizers.Adam(1e-3)}
        opts[pre] = wrapped
        gan.compile(optimizer=opts)
        for role, opt in gan.optimizers.items():
            assert isinstance(opt, keras.optimizers.LossScaleOptimizer), role
            assert not isinstance(opt.inner_optimizer, keras.optimizers.LossScaleOptimizer)
        assert gan.optimizers[pre] is wrapped
        wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))


class DeepHalf(keras.Model):
    """Keras' test_loss_scaling_prevents_underflow network: float16 under a float32 policy."""

    def __init__(self):
        super().__init__(dtype="mixed_float16")
        self.chain = [keras.layers.Dense(1, use_bias=False, kernel_initializer="ones",
                                         activation="sigmoid", dtype="mixed_float16")
                      for _ in range(15)]

    def call(self, x):
        for layer in self.chain:
            x = layer(x)
        return x


@pytest.mark.parametrize("auto_scale_loss", [False, True])
def test_network_with_its_own_float16_policy_is_loss_scaled_like_keras(auto_scale_loss):
    # Sigmoid gradients through 15 float16 layers underflow to 0 unless the loss
    # is scaled; SGD(1e9) makes any update visible.
    kernels = []
    for wrap in (lambda n: n, lambda n: StepModel(n, step="supervised")):
        net = DeepHalf()
        model = wrap(net)
        model.compile(keras.optimizers.SGD(1e9), loss="mse", auto_scale_loss=auto_scale_loss)
        model.fit(np.ones((1, 1)), np.ones((1, 1)), batch_size=1, verbose=0)
        kernels.append(net.chain[0].kernel.numpy())
    keras_kernel, stepkit_kernel = kernels
    assert (keras_kernel != 1.0).any() == auto_scale_loss
    np.testing.assert_array_equal(stepkit_kernel, keras_kernel)


# ---------------------------------------------------------------- 4. frozen roles

def test_frozen_network_is_skipped_with_a_warning_then_trains_after_unfreezing():
    keras.utils.set_random_seed(3)
    net = unbuilt_sequential()
    model = StepModel(net, step="supervised")
    net.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="no trainable variables"):
        model.build_from_data((X[:16], Y[:16]))
        before = [w.copy() for w in net.get_weights()]
        history = model.fit(X, Y, **FIT).history
    # keras.Model.fit on a frozen model: same losses, no update
    keras.utils.set_random_seed(3)
    ref = unbuilt_sequential()
    ref.trainable = False
    ref.compile(optimizer="sgd", loss="mse")
    # Keras warns on TensorFlow and torch; its JAX trainer trains the frozen model silently.
    warns = (pytest.warns(UserWarning, match="does not have any trainable weights")
             if keras.backend.backend() != "jax" else contextlib.nullcontext())
    with warns:
        np.testing.assert_allclose(history["loss"], ref.fit(X, Y, **FIT).history["loss"],
                                   atol=1e-6)
    for a, b in zip(before, net.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    net.trainable = True
    model.compile(optimizer="sgd", loss="mse")
    model.fit(X, Y, **FIT)
    assert np.abs(net.get_weights()[0] - before[0]).max() > 1e-4


def test_gan_with_frozen_discriminator_trains_only_the_generator():
    images = RNG.uniform(size=(32, 8, 8, 1)).astype("float32")
    gan = StepModel(step="gan", config={"latent_dim": 4}, seed=0)
    gan.build_from_data(images[:16])
    gan.discriminator.trainable = False
    gan.compile()
    d_before = [w.copy() for w in gan.discriminator.get_weights()]
    g_before = [w.copy() for w in gan.generator.get_weights()]
    with pytest.warns(UserWarning, match="'discriminator'"):
        gan.fit(images, batch_size=16, epochs=1, verbose=0)
    for a, b in zip(d_before, gan.discriminator.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(gan.generator.get_weights()[0] - g_before[0]).max() > 0


# ---------------------------------------------------------------- 5. metric names

def two_outputs():
    inputs = keras.Input((5,))
    return keras.Model(inputs, {"p": keras.layers.Dense(1, name="p")(inputs),
                                "q": keras.layers.Dense(1, name="q")(inputs)})


@pytest.mark.parametrize("make,compile_kwargs,y", [
    (two_outputs, lambda: dict(optimizer="sgd", loss={"p": "mse", "q": "mae"},
                               metrics={"p": ["mae", "mse"], "q": "mse"},
                               weighted_metrics={"p": "mae"}), {"p": Y, "q": -Y}),
    (unbuilt_sequential, lambda: dict(optimizer="sgd", loss="mse", metrics=["mse", "mse"],
                                      weighted_metrics=["mse"]), Y),
], ids=["dict-outputs", "same-metric-twice"])
def test_history_keys_and_values_equal_keras(make, compile_kwargs, y):
    h_ref, h_ours, ref, net = fit_both(make, compile_kwargs, fit_y=y)
    assert len(h_ref) >= 4
    assert_same(h_ref, h_ours, ref, net)


def test_a_real_shadowing_is_still_an_error():
    model = StepModel(unbuilt_sequential(), step="supervised")
    model.compile(optimizer="sgd", loss="mse",
                  metrics=[keras.metrics.MeanAbsoluteError(name="loss")])
    with pytest.raises(ValueError, match="Two different values would be logged as 'loss'"):
        model.fit(X, Y, **FIT)


# ---------------------------------------------------------------- 6. the network's metrics

class WithOwnMetric(Subclassed):
    def __init__(self):
        super().__init__()
        self.activation_mean = keras.metrics.Mean(name="activation_mean")

    def call(self, x, training=False):
        out = super().call(x)
        self.activation_mean.update_state(out)
        return out


def test_metrics_held_by_the_network_are_logged_like_keras():
    if keras.backend.backend() == "jax":
        # Keras' JAX trainer cannot update a metric inside call() (its stateless step has no
        # state for it); stepkit's JAX step keeps it. The validation mean is that of the
        # network's outputs on the last 20% of X, with the final weights.
        ref = WithOwnMetric()
        ref.compile(optimizer="sgd", loss="mse")
        with pytest.raises(TypeError, match="'NoneType' object is not callable"):
            ref.fit(X, Y, **FIT, validation_split=0.2)
        net = WithOwnMetric()
        model = StepModel(net, step="supervised")
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(X, Y, **FIT, validation_split=0.2).history
        held_out = X[int(len(X) * 0.8):]
        expected = float(np.mean(ops.convert_to_numpy(net(held_out))))
        np.testing.assert_allclose(history["val_activation_mean"][-1], expected, rtol=1e-5)
        assert np.isfinite(history["activation_mean"]).all()
        return
    h_ref, h_ours, ref, net = fit_both(
        WithOwnMetric, lambda: dict(optimizer="sgd", loss="mse"), validation_split=0.2)
    assert "activation_mean" in h_ref and "val_activation_mean" in h_ref
    assert_same(h_ref, h_ours, ref, net)


# ---------------------------------------------------------------- 7. export

@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras 3.15 exports format='tf_saved_model' from TensorFlow and JAX, not from torch "
           "with a free batch dimension (StepModel.export says so and names the formats that "
           "work; test_export_backends.py compares each backend's formats)")
@pytest.mark.parametrize("step", ["supervised", "gan"])
def test_export_serves_what_predict_returns(tmp_path, step):
    if step == "supervised":
        model = StepModel(Subclassed(), step="supervised")
        model.compile(optimizer="sgd", loss="mse")
        model.fit(X, Y, **FIT)
        inputs = X[:4]
    else:
        model = StepModel(step="gan", config={"latent_dim": 4}, seed=0)
        model.compile()
        model.fit(RNG.uniform(size=(16, 8, 8, 1)).astype("float32"), epochs=1, verbose=0)
        inputs = RNG.normal(size=(4, 4)).astype("float32")
    model.export(str(tmp_path / "exported"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    out = served.signatures["serving_default"](tf.constant(inputs))
    np.testing.assert_allclose(next(iter(out.values())).numpy(),
                               model.predict(inputs, verbose=0), atol=1e-6)


# ---------------------------------------------------------------- 8. inputs Keras accepts

class OptionalInput(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, inputs, training=False):
        x, extra = inputs
        return self.dense(x) if extra is None else self.dense(x + extra)


def test_optional_none_inputs_from_a_generator_equal_keras():
    def batches():
        for i in range(0, 64, 16):
            yield (X[i:i + 16], None), Y[i:i + 16]

    keras.utils.set_random_seed(3)
    ref = OptionalInput()
    ref.compile(optimizer="sgd", loss="mse")
    h_ref = ref.fit(batches(), epochs=1, verbose=0).history
    keras.utils.set_random_seed(3)
    net = OptionalInput()
    model = StepModel(net, step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    assert_same(h_ref, model.fit(batches(), epochs=1, verbose=0).history, ref, net)


class AddsItsOwnLoss(Subclassed):
    def call(self, x, training=False):
        out = super().call(x)
        self.add_loss(ops.mean(ops.square(out - 2.0)))
        return out


def test_fit_without_targets_trains_a_network_that_adds_its_own_loss():
    h_ref, h_ours, ref, net = fit_both(AddsItsOwnLoss, lambda: dict(optimizer="sgd"),
                                       fit_y=None)
    assert h_ref["loss"][1] < h_ref["loss"][0]
    assert_same(h_ref, h_ours, ref, net)


def test_fit_without_targets_and_a_compiled_loss_is_a_clear_error():
    model = StepModel(unbuilt_sequential(), step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(DataStructureError, match="needs targets.*Received a batch with"):
        model.fit(X, epochs=1, verbose=0)


def test_regularization_losses_are_added_and_reported_like_keras():
    def make():
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(
            1, kernel_regularizer=keras.regularizers.L2(0.1),
            activity_regularizer=keras.regularizers.L1(0.01))])

    h_ref, h_ours, ref, net = fit_both(make, lambda: dict(optimizer="sgd", loss="mse"),
                                       validation_split=0.2)
    assert_same(h_ref, h_ours, ref, net)


# ---------------------------------------------------------------- 10. weights

def test_get_weights_starts_with_the_network_weights():
    model = StepModel(Subclassed(), step="supervised", seed=1)
    model.build_from_data((X[:4], Y[:4]))
    net_weights = model.networks["network"].get_weights()
    all_weights = model.get_weights()
    assert len(all_weights) == len(net_weights) + 2  # step counter and RNG state
    for a, b in zip(net_weights, all_weights, strict=False):
        np.testing.assert_array_equal(a, b)
    model.set_weights(all_weights)


def test_outputs_that_share_a_name_log_like_keras():
    def make():
        inputs = keras.Input((5,))
        x = keras.layers.Dense(3, name="shared")(inputs)
        return keras.Model(inputs, [x, x, x])

    targets = [np.tile(Y, (1, 3))] * 3
    h_ref, h_ours, ref, net = fit_both(make, lambda: dict(optimizer="sgd", loss=["mse"] * 3),
                                       fit_y=targets)
    assert sorted(h_ref) == ["loss", "shared_loss"]
    assert_same(h_ref, h_ours, ref, net)


class CountsBatches(Subclassed):
    def __init__(self):
        super().__init__()
        self.batches_seen = self.add_weight(shape=(), initializer="zeros", trainable=False)


def test_callbacks_read_the_network_attributes_through_the_model():
    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.batches_seen.assign_add(1.0)

    net = CountsBatches()
    model = StepModel(net, step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    model.fit(X, Y, callbacks=[Count()], **FIT)
    assert float(net.batches_seen) == 10  # 2 epochs x 5 batches
    gan = StepModel(step="gan", config={"latent_dim": 4})
    with pytest.raises(AttributeError, match="no attribute 'batches_seen'"):
        gan.batches_seen  # noqa: B018  (several networks: nothing to read through)


@pytest.mark.tensorflow_only("tf.saved_model.save takes a Keras model only on TensorFlow (as "
                             "for keras.Model)")
def test_tf_saved_model_save_serves_what_predict_returns(tmp_path):
    model = StepModel(Subclassed(), step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    model.fit(X, Y, **FIT)
    tf.saved_model.save(model, str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    out = served(tf.constant(X[:4]))
    np.testing.assert_allclose(next(iter(out.values())).numpy(),
                               model.predict(X[:4], verbose=0), atol=1e-6)
