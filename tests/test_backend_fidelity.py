"""StepModel against Keras on the current backend, with numbers (the same under every backend).

StepModel and its reference start from equal weights, train on the same batches in
the same process, and their histories and weights are compared: ``supervised``
against ``keras.Model.fit`` (sample/class weights, two outputs, steps_per_execution,
jit on/off, eager, callbacks, evaluate, predict, mixed precision) and against the
guide's first ``train_step``; ``custom-loss`` against the guide's lower-level one;
``gan`` against the guide's GAN (``guide_models.py``) given the same noise: a
``SeedGenerator`` with the StepModel's seed, its seeds turned into numbers the way
stepkit does (``noise="stepkit"``; Keras' own ``keras.random`` agrees on JAX only, see
test_keras_random_draws_stepkits_noise_on_jax_only). Seeded noise: the same seed gives
the same run, another seed another, and a saved, loaded run continues exactly.
"""

import functools

import keras
import numpy as np
import pytest
from guide_models import custom_loss_model, gan_model, supervised_model
from keras import layers, ops

import stepkit
from stepkit import StepModel
from stepkit import backend as sk_backend

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X_56 = RNG.normal(size=(56, 5)).astype("float32")  # 3 batches of 16 and one of 8
Y_56 = (X_56 @ RNG.normal(size=(5, 1)) + 0.3).astype("float32")
X, Y = X_56[:48], Y_56[:48]  # full batches: each batch shape is one more JAX/XLA compile,
# and the guides' loss trackers do not weight batches by their size
SW = np.linspace(0.2, 2.0, len(X_56)).astype("float32")
FIT = dict(batch_size=16, shuffle=False, verbose=0)
TORCH_NO_COMPILE = pytest.mark.skipif(
    BACKEND == "torch", reason="jit_compile=True is torch.compile (inductor): it compiles C++ "
    "for each model, about 50 s a model on a 2-core CPU, beyond this module's time budget")


@pytest.fixture(autouse=True)
def _restore_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


def mlp(out=1, activation=None):
    return keras.Sequential([keras.Input((5,)), layers.Dense(8, activation="relu"),
                             layers.Dense(out, activation=activation)])


def twins(make, seed=3):
    """Two networks with equal initial weights."""
    keras.utils.set_random_seed(seed)
    a = make()
    keras.utils.set_random_seed(seed)
    b = make()
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)
    return a, b


def assert_same(h_ref, h_ours, w_ref, w_ours, atol=1e-6):
    assert h_ours.keys() == h_ref.keys()
    for key in h_ref:
        np.testing.assert_allclose(h_ours[key], h_ref[key], rtol=0, atol=atol, err_msg=key)
    for a, b in zip(w_ref, w_ours, strict=True):
        np.testing.assert_allclose(np.asarray(b, "float32"), np.asarray(a, "float32"),
                                   rtol=0, atol=atol)


def fit_both(make, compile_kwargs, x=X, y=Y, callbacks=list, **fit_kwargs):
    """Keras and StepModel(step="supervised") trained alike; returns both models and runs.

    ``compile_kwargs`` and ``callbacks`` are called once per model (fresh optimizers).
    """
    ref, net = twins(make)
    ref.compile(**compile_kwargs())
    h_ref = ref.fit(x, y, callbacks=callbacks(), **{**FIT, **fit_kwargs}).history
    ours = StepModel(net, step="supervised")
    ours.compile(**compile_kwargs())
    h_ours = ours.fit(x, y, callbacks=callbacks(), **{**FIT, **fit_kwargs}).history
    return ref, ours, h_ref, h_ours


# ---------------------------------------------------------------- supervised vs keras fit

@pytest.mark.parametrize("mode", [
    pytest.param({"jit_compile": True}, id="jit", marks=TORCH_NO_COMPILE),
    pytest.param({"jit_compile": False}, id="no-jit"),
    pytest.param({"run_eagerly": True}, id="eager")])
def test_supervised_fit_evaluate_predict_equal_keras(mode):
    # a last batch of 8 where nothing is compiled per batch shape
    n = len(X) if mode.get("jit_compile") else len(X_56)
    xv, yv = X[:16] + 0.5, Y[:16]
    ref, ours, h_ref, h_ours = fit_both(
        mlp, lambda: dict(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                          metrics=["mae"], weighted_metrics=["mse"], **mode),
        x=X_56[:n], y=Y_56[:n], sample_weight=SW[:n], validation_data=(xv, yv), epochs=2)
    assert {"loss", "mae", "mse", "val_loss", "val_mae"} <= set(h_ref)
    assert h_ref["loss"][1] < h_ref["loss"][0]
    assert_same(h_ref, h_ours, ref.get_weights(), ours.networks["network"].get_weights())
    e_ref = ref.evaluate(xv, yv, batch_size=16, return_dict=True, verbose=0)
    e_ours = ours.evaluate(xv, yv, batch_size=16, return_dict=True, verbose=0)
    assert e_ours.keys() == e_ref.keys()
    for key in e_ref:
        np.testing.assert_allclose(e_ours[key], e_ref[key], rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(ours.predict(xv, batch_size=16, verbose=0),
                               ref.predict(xv, batch_size=16, verbose=0), rtol=0, atol=1e-6)


def test_supervised_class_weights_equal_keras():
    labels = (np.argsort(X[:, :3], axis=1)[:, -1]).astype("int32")
    ref, ours, h_ref, h_ours = fit_both(
        lambda: mlp(3, "softmax"),
        lambda: dict(optimizer=keras.optimizers.Adam(1e-2),
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"]),
        y=labels, class_weight={0: 1.0, 1: 3.0, 2: 0.5}, epochs=2)
    assert_same(h_ref, h_ours, ref.get_weights(), ours.networks["network"].get_weights())


def two_outputs():
    inputs = keras.Input((5,))
    hidden = layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, {"a": layers.Dense(1, name="a")(hidden),
                                "b": layers.Dense(2, name="b")(hidden)})


def test_supervised_two_outputs_dict_loss_equal_keras():
    y = {"a": Y, "b": np.concatenate([Y, -Y], axis=1)}
    ref, ours, h_ref, h_ours = fit_both(
        two_outputs, lambda: dict(optimizer=keras.optimizers.Adam(1e-2),
                                  loss={"a": "mse", "b": "mae"}, loss_weights={"a": 1.0, "b": 0.5},
                                  metrics={"a": ["mae"]}),
        y=y, epochs=2)
    assert {"loss", "a_loss", "b_loss"} <= set(h_ref)
    assert_same(h_ref, h_ours, ref.get_weights(), ours.networks["network"].get_weights())


def test_steps_per_execution_2_equals_keras_or_is_refused_alike():
    compile_kwargs = dict(loss="mse", steps_per_execution=2)
    if BACKEND == "torch":  # Keras' torch trainer runs one batch per call
        ref, net = twins(mlp)
        ref.compile(optimizer="adam", **compile_kwargs)
        with pytest.raises(ValueError, match="steps_per_execution") as keras_error:
            ref.fit(X, Y, **FIT)
        ours = StepModel(net, step="supervised")
        ours.compile(optimizer="adam", **compile_kwargs)
        with pytest.raises(ValueError, match="steps_per_execution") as our_error:
            ours.fit(X, Y, **FIT)
        assert str(our_error.value) == str(keras_error.value)
        return
    ref, ours, h_ref, h_ours = fit_both(
        mlp, lambda: dict(optimizer=keras.optimizers.Adam(1e-2), **compile_kwargs), epochs=2)
    assert int(ours.optimizer.iterations) == int(ref.optimizer.iterations) == 6  # 2+1 a epoch
    assert_same(h_ref, h_ours, ref.get_weights(), ours.networks["network"].get_weights())


class ShrinkFirstKernel(keras.callbacks.Callback):
    """Reads the learning rate and writes a weight through ``self.model`` each epoch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        kernel = self.model.trainable_weights[0]
        kernel.assign(kernel * 0.9)
        self.seen.append((float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                          float(keras.ops.convert_to_numpy(keras.ops.sum(kernel)))))


def test_callbacks_reading_and_writing_the_model_give_keras_history():
    shrinkers = []

    def callbacks():
        shrinkers.append(ShrinkFirstKernel())
        return [keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
                keras.callbacks.EarlyStopping(monitor="loss", min_delta=0.4, patience=0),
                shrinkers[-1]]

    ref, ours, h_ref, h_ours = fit_both(
        mlp, lambda: dict(optimizer=keras.optimizers.SGD(0.05), loss="mse"), epochs=6,
        callbacks=callbacks)
    assert 1 < len(h_ref["loss"]) < 6, h_ref  # early stopping stopped it
    np.testing.assert_allclose(h_ref["learning_rate"][:2], [0.025, 0.0125])
    assert_same(h_ref, h_ours, ref.get_weights(), ours.networks["network"].get_weights())
    keras_seen, our_seen = (s.seen for s in shrinkers)
    assert len(keras_seen) == len(h_ref["loss"])
    np.testing.assert_allclose(our_seen, keras_seen, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the guides' own train_steps


def test_supervised_step_equals_the_guides_first_train_step_and_keras():
    keras_net, guide_net = twins(mlp)
    _, net = twins(mlp)
    runs = {}
    for who, model in (("keras", keras_net), ("guide", supervised_model(guide_net)),
                       ("stepkit", StepModel(net, step="supervised"))):
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
        runs[who] = model.fit(X, Y, epochs=2, **FIT).history
    assert_same(runs["guide"], runs["stepkit"], guide_net.get_weights(), net.get_weights())
    assert_same(runs["keras"], runs["guide"], keras_net.get_weights(), guide_net.get_weights())


def test_custom_loss_step_equals_the_guides_lower_level_train_step():
    guide_net, net = twins(mlp)
    guide = custom_loss_model(guide_net)
    guide.compile(optimizer=keras.optimizers.Adam(1e-2))  # loss and metrics are its own
    h_guide = guide.fit(X, Y, epochs=2, **FIT).history
    ours = StepModel(net, step="custom-loss", config={"loss": keras.losses.MeanSquaredError()})
    ours.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["mae"])
    h_ours = ours.fit(X, Y, epochs=2, **FIT).history
    assert set(h_guide) == {"loss", "mae"} and h_guide["loss"][1] < h_guide["loss"][0]
    assert_same(h_guide, h_ours, guide_net.get_weights(), net.get_weights())


# ---------------------------------------------------------------- mixed precision

# Keras itself cannot train Conv2DTranspose in float16 or bfloat16 with torch on CPU
# ("slow_conv2d: grad_weight must be contiguous"), so these networks are dense only;
# test_torch_cpu_reduced_precision_conv_transpose_fails_in_keras_too shows it.
POLICIES = ["mixed_float16", "mixed_bfloat16"] if BACKEND == "torch" else ["mixed_float16"]


@pytest.mark.parametrize("policy", POLICIES)
def test_mixed_precision_fit_equals_keras(policy):
    keras.mixed_precision.set_global_policy(policy)
    ref, ours, h_ref, h_ours = fit_both(
        mlp, lambda: dict(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"]),
        epochs=2)
    scaled = policy == "mixed_float16"
    assert isinstance(ref.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    assert isinstance(ours.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    assert ours.networks["network"].layers[0].compute_dtype == policy.split("_")[1]
    assert_same(h_ref, h_ours, ref.get_weights(), ours.networks["network"].get_weights())


@pytest.mark.skipif(BACKEND != "torch", reason="a limitation of torch's CPU kernels")
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_torch_cpu_reduced_precision_conv_transpose_fails_in_keras_too(policy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the limitation is torch's CPU kernels'")
    keras.mixed_precision.set_global_policy(policy)
    x, y = RNG.uniform(size=(8, 2, 2, 1)).astype("float32"), np.ones((8, 32), "float32")
    errors = {}
    for who in ("keras", "stepkit"):
        net = keras.Sequential([keras.Input((2, 2, 1)), layers.Conv2DTranspose(2, 4, 2, "same"),
                                layers.Flatten()])
        model = net if who == "keras" else StepModel(net, step="supervised")
        model.compile(optimizer="adam", loss="mse")
        with pytest.raises(RuntimeError) as error:
            model.fit(x, y, **FIT)
        errors[who] = str(error.value)
    assert "contiguous" in errors["keras"]
    assert errors["stepkit"] == errors["keras"]


# ---------------------------------------------------------------- gan: two roles, seeded noise

LATENT = 4
IMAGES = RNG.uniform(size=(32, 8, 8, 1)).astype("float32")  # two full batches of 16


def gan_networks(seed=5):
    """The guide's DCGAN shrunk to 8x8 images (a Conv2DTranspose up, a strided Conv2D down)."""
    keras.utils.set_random_seed(seed)
    generator = keras.Sequential([
        keras.Input((LATENT,)), layers.Dense(4 * 4 * 4), layers.LeakyReLU(0.2),
        layers.Reshape((4, 4, 4)), layers.Conv2DTranspose(4, 4, strides=2, padding="same"),
        layers.LeakyReLU(0.2), layers.Conv2D(1, 3, padding="same", activation="sigmoid"),
    ], name="generator")
    discriminator = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(4, 3, strides=2, padding="same"),
        layers.LeakyReLU(0.2), layers.GlobalMaxPooling2D(), layers.Dense(1),
    ], name="discriminator")
    return {"generator": generator, "discriminator": discriminator}


def gan_optimizers():
    """Different optimizers per role, so that a role using the other's would show."""
    return {"generator": keras.optimizers.SGD(0.05, momentum=0.5),
            "discriminator": keras.optimizers.Adam(1e-3)}


@functools.cache
def fit_gan(seed, epochs):
    """StepModel(step="gan", seed=seed) trained for ``epochs`` (shared: compiles are slow)."""
    nets = gan_networks()
    initial = {role: net.get_weights() for role, net in nets.items()}
    model = StepModel(nets, step="gan", config={"latent_dim": LATENT}, seed=seed)
    model.compile(optimizer=gan_optimizers())
    return model, initial, model.fit(IMAGES, epochs=epochs, **FIT).history


def network_weights(nets):
    """Both networks' weights; ``nets`` maps roles to networks or to weight lists."""
    return [w for role in ("generator", "discriminator")
            for w in getattr(nets[role], "get_weights", lambda r=role: nets[r])()]


def test_gan_step_equals_the_guides_gan_given_the_same_noise():
    model, initial, history = fit_gan(seed=7, epochs=2)
    nets = gan_networks()
    assert_same({}, {}, network_weights(initial), network_weights(nets), atol=0)
    guide = gan_model(nets["generator"], nets["discriminator"], LATENT, seed=7, noise="stepkit")
    optimizers = gan_optimizers()
    guide.compile(d_optimizer=optimizers["discriminator"], g_optimizer=optimizers["generator"],
                  loss_fn=keras.losses.BinaryCrossentropy(from_logits=True))
    h_guide = guide.fit(IMAGES, epochs=2, **FIT).history
    assert_same(h_guide, history, network_weights(nets), network_weights(model.networks))
    # each role's own optimizer made one update per batch: 2 batches x 2 epochs
    assert {r: int(o.iterations) for r, o in model.optimizers.items()} == {
        "generator": 4, "discriminator": 4}
    assert int(guide.d_optimizer.iterations) == int(guide.g_optimizer.iterations) == 4
    for role, net in model.networks.items():
        for before, after in zip(initial[role], net.get_weights(), strict=True):
            assert np.abs(after - before).max() > 0, role


def test_keras_random_draws_stepkits_noise_on_jax_only():
    """Why the guide comparison uses noise="stepkit": same seeds, other numbers off JAX."""
    ours_gen, keras_gen = keras.random.SeedGenerator(7), keras.random.SeedGenerator(7)
    ours = [sk_backend.stateless_normal((3, 4), ops.cast(ours_gen.next(), "int32")),
            sk_backend.stateless_uniform((6, 1), ops.cast(ours_gen.next(), "int32"))]
    theirs = [keras.random.normal((3, 4), seed=keras_gen),
              keras.random.uniform((6, 1), seed=keras_gen)]
    same = [np.array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
            for a, b in zip(ours, theirs, strict=True)]
    assert same == [BACKEND == "jax"] * 2


def test_same_seed_same_gan_run_other_seed_other_run():
    _, _, two_epochs = fit_gan(seed=7, epochs=2)
    _, _, same_seed = fit_gan(seed=7, epochs=1)  # another model, the same seed
    _, _, other_seed = fit_gan(seed=8, epochs=1)
    for key in ("d_loss", "g_loss"):
        assert same_seed[key][0] == two_epochs[key][0], key
        assert abs(other_seed[key][0] - two_epochs[key][0]) > 1e-5, key


def test_gan_saved_loaded_and_continued_equals_an_uninterrupted_run(tmp_path):
    model, _, history = fit_gan(seed=7, epochs=2)
    first, _, _ = fit_gan(seed=7, epochs=1)
    first.save(tmp_path / "gan.keras")
    loaded = stepkit.load_model(tmp_path / "gan.keras")
    # the networks' weights and the framework's (step counter, RNG state); the optimizers'
    # state shows in the continued run
    assert_same({}, {}, first.get_weights(), loaded.get_weights(), atol=0)
    h_second = loaded.fit(IMAGES, epochs=1, **FIT).history
    assert {r: int(o.iterations) for r, o in loaded.optimizers.items()} == {
        "generator": 4, "discriminator": 4}
    assert_same({k: v[1:] for k, v in history.items()}, h_second, model.get_weights(),
                loaded.get_weights())
