"""The ``sam`` and ``ema`` wrappers against hand-written Keras steps and Keras' ``use_ema``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops
from sam_references import SAMModel

from stepkit import StepModel
from stepkit.errors import ConfigError

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 5)).astype("float32")
Y = (X @ RNG.normal(size=(5, 1))).astype("float32")
X_VAL, Y_VAL = X[:16] + 0.5, Y[:16]
IMAGES = RNG.uniform(size=(16, 4, 4, 1)).astype("float32")


def regressor():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def gan_networks():
    keras.utils.set_random_seed(2)
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="sigmoid"),
                                  keras.layers.Reshape((4, 4, 1))], name="generator")
    discriminator = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                      keras.layers.Dense(1)], name="discriminator")
    return {"generator": generator, "discriminator": discriminator}


def gan(wrappers=None):
    model = StepModel(gan_networks(), step="gan", config={"latent_dim": 4}, seed=3,
                      wrappers=wrappers)
    model.compile(optimizer={r: keras.optimizers.SGD(0.5) for r in ("generator",
                                                                     "discriminator")})
    return model


def assert_weights_equal(ours, ref, rtol=1e-5):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b),
                                   rtol=rtol, atol=1e-6)


# ---------------------------------------------------------------- sam

SAM, ASAM = ({}, None), ({"adaptive": True, "rho": 0.5}, 0.01)
# TensorFlow: in a graph, and under XLA with two batches per execution; JAX and torch: as fit
# compiles by default.
XLA = {"jit_compile": True, "steps_per_execution": 2}
CASES = ([(*SAM, {"jit_compile": False}), (*ASAM, {"jit_compile": False}), (*SAM, XLA)]
         if BACKEND == "tensorflow" else [(*SAM, {}), (*ASAM, {})])


@pytest.mark.parametrize(("config", "eta", "mode"), CASES,
                         ids=[f"{'asam' if c[1] else 'sam'}-{'xla' if c[2] is XLA else 'default'}"
                              for c in CASES])
def test_sam_equals_a_hand_written_train_step(config, eta, mode):
    ours = StepModel(regressor(), step="supervised", wrappers=[{"name": "sam", **config}])
    ours.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", **mode)
    h_ours = ours.fit(X, Y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    ref = SAMModel(regressor(), rho=config.get("rho", 0.05), eta=eta)  # not compiled with XLA
    ref.compile(optimizer=keras.optimizers.SGD(0.1), **{k: v for k, v in mode.items()
                                                         if k != "jit_compile"})
    h_ref = ref.fit(X, Y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    assert_weights_equal(ours.networks["network"].weights, ref.network.weights)
    # the loss reported is the first pass's, at the weights being trained
    np.testing.assert_allclose(h_ours["loss"], h_ref["loss"], rtol=1e-5)


def test_sam_trains_otherwise_than_plain_sgd():
    def weights(wrappers):
        model = StepModel(regressor(), step="supervised", wrappers=wrappers)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()[0]

    assert np.abs(weights(["sam"]) - weights(None)).max() > 1e-3


class Counting(keras.Model):
    """A network that counts its calls: its forward passes in a traced (or eager) step."""

    def __init__(self, network, record):
        super().__init__()
        self.network, self.record = network, record  # a function: Keras leaves it as it is

    def call(self, x, training=False):
        self.record()
        return self.network(x, training=training)


def test_sam_on_a_gans_discriminator_evaluates_only_its_loss_twice():
    # Without SAM each network runs twice a step: the discriminator in its loss and in the
    # generator's; the generator makes the discriminator's fakes (outside its loss) and runs
    # in its own loss. SAM on the discriminator evaluates its loss, and only its, twice.
    counts = {}

    def recorder(role):
        return lambda: counts.update({role: counts.get(role, 0) + 1})

    nets = {r: Counting(n, recorder(r)) for r, n in gan_networks().items()}
    model = StepModel(nets, step="gan", config={"latent_dim": 4}, seed=3,
                      wrappers=[{"name": "sam", "roles": ["discriminator"]}])
    model.compile()
    model.build_from_data(IMAGES[:8])
    counts.clear()
    model.train_on_batch(IMAGES[:8])
    assert counts == {"generator": 2, "discriminator": 3}


BATCHES = [IMAGES[:8], IMAGES[8:], IMAGES[:8]]


@pytest.fixture(scope="module")
def bare_gan():
    """A GAN without wrappers and its networks' weights after each batch of BATCHES."""
    model, weights = gan(), []
    for batch in BATCHES:
        model.train_on_batch(batch)
        weights.append({r: n.get_weights() for r, n in model.networks.items()})
    return model, weights


def test_sam_on_the_generator_leaves_the_discriminators_update_alone(bare_gan):
    wrapped = gan([{"name": "sam", "roles": ["generator"], "rho": 0.5}])
    wrapped.train_on_batch(BATCHES[0])
    bare = bare_gan[1][0]
    # the discriminator is updated first, from the same noise: the same numbers
    assert_weights_equal(wrapped.discriminator.weights, bare["discriminator"])
    moved = [np.abs(ops.convert_to_numpy(a) - b).max()
             for a, b in zip(wrapped.generator.weights, bare["generator"], strict=True)]
    assert max(moved) > 1e-4


def test_sam_config_is_validated():
    with pytest.raises(ConfigError, match="rho"):
        StepModel(regressor(), step="supervised", wrappers=[{"name": "sam", "rho": 0}])
    with pytest.raises(ConfigError, match="eta"):
        StepModel(regressor(), step="supervised", wrappers=[{"name": "sam", "eta": -1}])


# ---------------------------------------------------------------- ema


@pytest.fixture(scope="module")
def ema_and_keras():
    """The wrapper (decay 0.9) and Keras' use_ema + SwapEMAWeights, trained alike."""
    ours = StepModel(regressor(), step="supervised", wrappers=[{"name": "ema", "decay": 0.9}])
    ours.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0, validation_data=(X_VAL, Y_VAL))
    h_ours = ours.fit(X, Y, **fit).history
    ref = regressor()
    ref.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9,
                                                ema_overwrite_frequency=None),
                loss="mse", metrics=["mae"])
    h_ref = ref.fit(X, Y, callbacks=[keras.callbacks.SwapEMAWeights()], **fit).history
    return ours, h_ours, ref, h_ref


def test_ema_equals_keras_use_ema_with_swap_ema_weights(ema_and_keras):
    ours, h_ours, ref, h_ref = ema_and_keras
    assert h_ours.keys() == h_ref.keys()
    for key in h_ref:  # val_loss, val_mae: validation with the averaged weights
        np.testing.assert_allclose(h_ours[key], h_ref[key], rtol=1e-5)
    # Keras' fit ends with finalize_variable_values: its weights are now the averages
    assert_weights_equal(ours.wrappers[0].averages["network"].shadows, ref.trainable_variables)
    swap = [keras.callbacks.SwapEMAWeights()]
    np.testing.assert_allclose(ours.evaluate(X_VAL, Y_VAL, verbose=0),
                               ref.evaluate(X_VAL, Y_VAL, verbose=0, callbacks=swap), rtol=1e-5)
    np.testing.assert_allclose(ours.predict(X_VAL, verbose=0),
                               ref.predict(X_VAL, verbose=0, callbacks=swap), rtol=1e-5)


def test_ema_raw_weights_still_train_and_raw_options_use_them(ema_and_keras):
    ours = ema_and_keras[0]
    net = ours.networks["network"]
    raw = StepModel(net, step="supervised",
                    wrappers=[{"name": "ema", "evaluate_with": "raw", "predict_with": "raw"}])
    raw.compile(loss="mse", metrics=["mae"])
    np.testing.assert_allclose(raw.predict(X_VAL, verbose=0), net.predict(X_VAL, verbose=0),
                               rtol=1e-6)
    averaged = ours.predict(X_VAL, verbose=0)
    assert np.abs(averaged - net.predict(X_VAL, verbose=0)).max() > 1e-3
    plain = StepModel(net, step="supervised")
    plain.compile(loss="mse", metrics=["mae"])
    np.testing.assert_allclose(raw.evaluate(X_VAL, Y_VAL, verbose=0),
                               plain.evaluate(X_VAL, Y_VAL, verbose=0), rtol=1e-6)


def test_ema_averages_are_saved_and_predict_uses_them_after_loading(ema_and_keras, tmp_path):
    ours = ema_and_keras[0]
    path = tmp_path / "ema.keras"
    ours.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["wrappers"] == [{"name": "ema", "decay": 0.9,
                                                "evaluate_with": "averaged",
                                                "predict_with": "averaged"}]
    assert_weights_equal(loaded.wrappers[0].averages["network"].shadows,
                         ours.wrappers[0].averages["network"].shadows, rtol=0)
    np.testing.assert_allclose(loaded.predict(X_VAL, verbose=0), ours.predict(X_VAL, verbose=0),
                               rtol=1e-6)
    with loaded.wrappers[0].averaged_weights():  # the bare network with the averages
        np.testing.assert_allclose(loaded.networks["network"].predict(X_VAL, verbose=0),
                                   ours.predict(X_VAL, verbose=0), rtol=1e-6)
    assert_weights_equal(loaded.networks["network"].weights, ours.networks["network"].weights)


def hand_ema(snapshots, decay):
    """Keras' convention: the first update copies the weights, then decay."""
    average = [w.copy() for w in snapshots[0]]
    for weights in snapshots[1:]:
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights, strict=True)]
    return average


def test_ema_of_a_gans_generator_only(bare_gan):
    ours = gan([{"name": "ema", "decay": 0.5, "roles": ["generator"]}])
    snapshots = []
    for batch in BATCHES:
        ours.train_on_batch(batch)
        snapshots.append(ours.generator.get_weights())
    # training is the bare step's: both networks' raw weights are the same
    bare, bare_weights = bare_gan[0], bare_gan[1][-1]
    assert_weights_equal(ours.generator.weights, bare_weights["generator"])
    assert_weights_equal(ours.discriminator.weights, bare_weights["discriminator"])
    assert set(ours.wrappers[0].averages) == {"generator"}
    average = hand_ema(snapshots, 0.5)
    assert_weights_equal(ours.wrappers[0].averages["generator"].shadows, average)
    z = RNG.normal(size=(5, 4)).astype("float32")
    expected, _ = ours.generator.stateless_call(average, [], z)
    np.testing.assert_allclose(ours.predict(z, verbose=0), ops.convert_to_numpy(expected),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(ours.predict(z, verbose=0) - bare.predict(z, verbose=0)).max() > 1e-4


@pytest.mark.parametrize("stack", ["keras-gradient-accumulation", "ema>accumulate",
                                   "accumulate>ema"])
def test_ema_averages_once_per_real_update(stack):
    ema, accumulate = {"name": "ema", "decay": 0.5}, {"name": "accumulate", "steps": 2}
    optimizer = keras.optimizers.SGD(0.1)
    wrappers = {"ema>accumulate": [ema, accumulate], "accumulate>ema": [accumulate, ema]}.get(
        stack, [ema])
    if stack == "keras-gradient-accumulation":
        optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    model = StepModel(regressor(), step="supervised", wrappers=wrappers)
    model.compile(optimizer=optimizer, loss="mse")
    snapshots = []
    for i in range(4):
        model.train_on_batch(X[8 * i:8 * i + 8], Y[8 * i:8 * i + 8])
        if i % 2 == 1:  # the weights move on every second batch only
            snapshots.append(model.networks["network"].get_weights())
    ema = next(w for w in model.wrappers if w.name == "ema")
    assert_weights_equal(ema.averages["network"].shadows, hand_ema(snapshots, 0.5))


# ---------------------------------------------------------------- replicas


@pytest.mark.tensorflow_only("tf.distribute.MirroredStrategy")
def test_sam_and_ema_on_two_replicas_equal_one_device():
    script = Path(__file__).with_name("wrappers_replicas_script.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = json.loads(proc.stdout)
    assert one["history"].keys() == {"loss", "val_loss"}
    for key in one["history"]:
        np.testing.assert_allclose(two["history"][key], one["history"][key], atol=1e-5)
    for key in ("weights", "predict"):  # weights: the networks', then the averages
        for a, b in zip(one[key], two[key], strict=True):
            np.testing.assert_allclose(b, a, atol=1e-5)
