"""``adversarial`` and ``mixup``: the wrappers that change what a step trains on.

Each is compared with the same training written by hand: the attack with the
backend's own input gradient (``tf.GradientTape``, ``jax.grad``,
``torch.autograd.grad``), MixUp with the paper's mixed one-hot targets, and on
TensorFlow both as a hand-written ``keras.Model.train_step``. Random draws are
reproduced from the model's seed as ``ctx.uniform`` / ``ctx.normal`` make
them: the i-th draw of a model with ``seed=s`` uses the seed pair ``(s, i)``.
"""

import keras
import numpy as np
import pytest
import scipy.stats
from keras import ops

from stepkit import StepModel, backend
from stepkit.errors import ConfigError, DataStructureError, WrapperError, WrapperStackError
from stepkit.wrappers.adversarial import AdversarialConfig, adversarial_examples
from stepkit.wrappers.mixup import beta_sample, mix, mixup_parameters

BACKEND = keras.backend.backend()
SEED = 7
RNG = np.random.default_rng(0)
X = RNG.uniform(size=(24, 16)).astype("float32")  # inputs in [0, 1]
Y = RNG.integers(0, 3, size=(24,))
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def numpy(v):
    return ops.convert_to_numpy(v)


def network():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(3)])


def trained(x, y, wrappers=None, loss=CE, batch_size=None, **fit):
    model = StepModel(network(), step="supervised", wrappers=wrappers, seed=SEED)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss=loss,
                  metrics=["accuracy" if loss is CE else "categorical_accuracy"])
    history = model.fit(x, y, batch_size=batch_size or len(x), shuffle=False, verbose=0,
                        **fit).history
    return model, history


def assert_same_training(a, b):
    (model_a, hist_a), (model_b, hist_b) = a, b
    for u, v in zip(model_a.networks["network"].weights, model_b.networks["network"].weights,
                    strict=True):  # BatchNormalization's moving statistics included
        np.testing.assert_allclose(numpy(u), numpy(v), rtol=1e-5, atol=1e-6)
    assert hist_a.keys() == hist_b.keys()
    for key, values in hist_a.items():
        np.testing.assert_allclose(values, hist_b[key], rtol=1e-5, err_msg=key)


class Draws:
    """``ctx.normal`` / ``ctx.uniform`` of a model with ``seed=SEED``, in order."""

    def __init__(self):
        self.count = 0

    def _seed(self):
        self.count += 1
        return np.array([SEED, self.count - 1], "int32")

    def normal(self, shape):
        return backend.stateless_normal(shape, self._seed())

    def uniform(self, shape, minval=0.0, maxval=1.0):
        return backend.stateless_uniform(shape, self._seed(), "float32", minval, maxval)


# ---------------------------------------------------------------- adversarial


def input_gradient(f, x):
    """d f(x) / dx with the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = f(x)
        return tape.gradient(value, x)
    if BACKEND == "jax":
        import jax

        return jax.grad(f)(x)
    import torch

    x = ops.convert_to_tensor(x).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x), x)
    return grad


def hand_attack(net, x, y, config, start=None):
    """PGD (FGSM: one step) in NumPy around the backend's input gradient."""
    low = np.maximum(x - config.epsilon, -np.inf if config.clip_min is None else config.clip_min)
    high = np.minimum(x + config.epsilon, np.inf if config.clip_max is None else config.clip_max)
    adv = x if start is None else np.clip(x + numpy(start), low, high)
    for _ in range(config.attack_steps):
        grad = numpy(input_gradient(lambda a: CE(y, net(a, training=False)), adv))
        adv = np.clip(adv + np.float32(config.attack_step_size) * np.sign(grad), low, high)
    return adv.astype("float32")


# JAX and torch run the core of each wrapper, TensorFlow everything, for CI time.
ELSEWHERE = pytest.mark.tensorflow_only("backend-independent; the core runs on every backend")
PGD = {"method": "pgd", "epsilon": 0.1, "steps": 3, "clip_min": 0.0, "clip_max": 1.0}
FGSM = {"method": "fgsm", "epsilon": 0.1}


@pytest.mark.parametrize("spec", [FGSM, PGD], ids=["fgsm", "pgd"])
def test_examples_equal_a_hand_written_attack(spec):
    config = AdversarialConfig(**spec)
    net = network()
    start = RNG.uniform(-0.1, 0.1, size=X.shape).astype("float32")
    ours = adversarial_examples(
        ops.convert_to_tensor(X), lambda a: CE(Y, net(a, training=False)), config,
        backend.input_gradients, lambda shape, minval, maxval: ops.convert_to_tensor(start))
    expected = hand_attack(net, X, Y, config, start if config.attack_random_start else None)
    np.testing.assert_allclose(numpy(ours), expected, atol=1e-6)
    assert np.max(np.abs(expected - X)) == pytest.approx(0.1, abs=1e-6)
    if config.clip_min is not None:
        assert numpy(ours).min() >= 0.0 and numpy(ours).max() <= 1.0


@pytest.mark.parametrize(("spec", "train_on"), [
    pytest.param(FGSM, "adversarial", id="fgsm", marks=ELSEWHERE),
    pytest.param(PGD, "both", id="pgd-both")])
def test_one_step_equals_training_on_hand_made_examples(spec, train_on):
    config = AdversarialConfig(**spec, train_on=train_on)
    start = Draws().uniform(X.shape, -config.epsilon, config.epsilon)
    adv = hand_attack(network(), X, Y, config, start if config.attack_random_start else None)
    x, y = (np.concatenate([X, adv]), np.concatenate([Y, Y])) if train_on == "both" else (adv, Y)
    wrapped = trained(X, Y, [{"name": "adversarial", **spec, "train_on": train_on}])
    assert_same_training(wrapped, trained(x, y))


@ELSEWHERE
def test_the_attack_leaves_per_output_loss_trackers_alone():
    y_reg = RNG.normal(size=(len(X), 1)).astype("float32")
    targets = {"cls": Y, "reg": y_reg}

    def two_outputs():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((16,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        return keras.Model(inputs, {"cls": keras.layers.Dense(3, name="cls")(hidden),
                                    "reg": keras.layers.Dense(1, name="reg")(hidden)})

    def history(x, wrappers=None):
        model = StepModel(two_outputs(), step="supervised", wrappers=wrappers, seed=SEED)
        model.compile(optimizer="sgd", loss={"cls": CE, "reg": "mse"})
        return model.fit(x, targets, batch_size=len(x), verbose=0).history

    net = two_outputs()
    mse = keras.losses.MeanSquaredError()

    def loss(a):
        out = net(a, training=False)
        return CE(Y, out["cls"]) + mse(y_reg, out["reg"])

    adv = (X + 0.1 * np.sign(numpy(input_gradient(loss, X)))).astype("float32")
    wrapped, bare = history(X, [{"name": "adversarial", **FGSM}]), history(adv)
    assert sorted(wrapped) == ["cls_loss", "loss", "reg_loss"]  # Keras' per-output trackers
    for key, values in wrapped.items():
        np.testing.assert_allclose(values, bare[key], rtol=1e-5, err_msg=key)


@pytest.mark.tensorflow_only("a hand-written keras.Model.train_step with tf.GradientTape")
def test_pgd_training_equals_a_hand_written_train_step():
    import tensorflow as tf

    config = AdversarialConfig(**PGD)

    class HandWritten(keras.Model):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.seeds = keras.random.SeedGenerator(SEED)

        def call(self, x, training=False):
            return self.net(x, training=training)

        def attack(self, x, y):
            low, high = tf.maximum(x - config.epsilon, 0.0), tf.minimum(x + config.epsilon, 1.0)
            start = backend.stateless_uniform(tf.shape(x), ops.cast(self.seeds.next(), "int32"),
                                              "float32", -config.epsilon, config.epsilon)
            adv = tf.clip_by_value(x + start, low, high)
            for _ in range(config.attack_steps):
                with tf.GradientTape() as tape:
                    tape.watch(adv)
                    loss = self.compute_loss(y=y, y_pred=self(adv, training=False))
                adv = tf.clip_by_value(adv + config.attack_step_size * tf.sign(
                    tape.gradient(loss, adv)), low, high)
            return tf.stop_gradient(adv)

        def train_step(self, data):
            x, y = data
            adv = self.attack(x, y)
            with tf.GradientTape() as tape:
                y_pred = self(adv, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables),
                                 self.trainable_variables)
            return self.compute_metrics(adv, y, y_pred)

    hand = HandWritten(network())
    hand.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss=CE)
    hand.fit(X, Y, batch_size=12, epochs=2, shuffle=False, verbose=0)
    ours, _ = trained(X, Y, [{"name": "adversarial", **PGD}], batch_size=12, epochs=2)
    for u, v in zip(ours.networks["network"].weights, hand.net.weights, strict=True):
        np.testing.assert_allclose(numpy(u), numpy(v), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- mixup


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.2), (1.0, 1.0), (4.0, 4.0), (0.5, 3.0)])
def test_beta_sampler_draws_the_beta_distribution(a, b):
    seeds = keras.random.SeedGenerator(3)
    draws = numpy(beta_sample(lambda s: keras.random.normal(s, seed=seeds),
                              lambda s: keras.random.uniform(s, seed=seeds), (20000,), a, b))
    assert np.isfinite(draws).all() and draws.min() >= 0.0 and draws.max() <= 1.0
    # the empirical CDF within the Dvoretzky-Kiefer-Wolfowitz band (p = 0.001) of the
    # exact one, on a grid that leaves out the float32 rounding within 6e-8 of 1
    grid = np.concatenate([np.logspace(-12, -1, 12), np.linspace(0.1, 0.9, 9),
                           1 - np.logspace(-1, -6, 6)])
    empirical = (draws[None, :] <= grid[:, None]).mean(axis=1)
    band = np.sqrt(np.log(2 / 1e-3) / (2 * len(draws)))
    assert np.max(np.abs(empirical - scipy.stats.beta(a, b).cdf(grid))) < band


def mixed_targets(x, y, draws, alpha=0.2, adv=None):
    lam, perm = (numpy(v) for v in mixup_parameters(draws.normal, draws.uniform, len(x), alpha))
    assert sorted(perm.tolist()) == list(range(len(x)))
    onehot = np.eye(3, dtype="float32")[y]
    x_mix = numpy(mix(ops.convert_to_tensor(x if adv is None else adv), lam, perm))
    return x_mix, lam * onehot + (1 - lam) * onehot[perm]


def test_mixup_equals_training_on_mixed_one_hot_targets():
    x_mix, y_mix = mixed_targets(X, Y, Draws())
    wrapped = trained(X, Y, [{"name": "mixup", "alpha": 0.2}])
    bare = trained(x_mix, y_mix, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    for u, v in zip(wrapped[0].networks["network"].weights, bare[0].networks["network"].weights,
                    strict=True):
        np.testing.assert_allclose(numpy(u), numpy(v), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wrapped[1]["loss"], bare[1]["loss"], rtol=1e-5)


@ELSEWHERE
def test_adversarial_then_mixup_mixes_the_adversarial_examples():
    adv = hand_attack(network(), X, Y, AdversarialConfig(**FGSM))
    x_mix, y_mix = mixed_targets(X, Y, Draws(), adv=adv)  # FGSM draws nothing
    wrapped = trained(X, Y, [{"name": "adversarial", **FGSM}, "mixup"])
    bare = trained(x_mix, y_mix, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    for u, v in zip(wrapped[0].networks["network"].weights, bare[0].networks["network"].weights,
                    strict=True):
        np.testing.assert_allclose(numpy(u), numpy(v), rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow_only("a hand-written keras.Model.train_step with tf.GradientTape")
def test_mixup_equals_a_hand_written_train_step_with_sample_weights():
    import tensorflow as tf

    weights = RNG.uniform(0.5, 2.0, size=(len(X),)).astype("float32")

    class HandWritten(keras.Model):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.seeds = keras.random.SeedGenerator(SEED)

        def call(self, x, training=False):
            return self.net(x, training=training)

        def draw(self, kind, shape):
            fn = backend.stateless_normal if kind == "normal" else backend.stateless_uniform
            return fn(shape, ops.cast(self.seeds.next(), "int32"))

        def train_step(self, data):
            x, y, sw = data
            lam, perm = mixup_parameters(lambda s: self.draw("normal", s),
                                         lambda s: self.draw("uniform", s), tf.shape(x)[0], 0.2)
            x_mix = lam * x + (1 - lam) * tf.gather(x, perm)
            with tf.GradientTape() as tape:
                y_pred = self(x_mix, training=True)
                loss = lam * self.compute_loss(y=y, y_pred=y_pred, sample_weight=sw) + (
                    1 - lam) * self.compute_loss(y=tf.gather(y, perm), y_pred=y_pred,
                                                 sample_weight=tf.gather(sw, perm))
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables),
                                 self.trainable_variables)
            return {"loss": loss}

    hand = HandWritten(network())
    hand.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss=CE)
    hand.fit(X, Y, sample_weight=weights, batch_size=12, epochs=2, shuffle=False, verbose=0)
    ours, _ = trained(X, Y, ["mixup"], batch_size=12, epochs=2, sample_weight=weights)
    for u, v in zip(ours.networks["network"].weights, hand.net.weights, strict=True):
        np.testing.assert_allclose(numpy(u), numpy(v), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(("step", "wrapper", "words"), [
    ("gan", "adversarial", "cannot wrap step 'gan': it generates data"),
    ("gan", "mixup", "cannot wrap step 'gan': it mixes the loss given to compile()"),
    ("custom-loss", "mixup", "'custom-loss' has loss_kind 'none'"),
])
def test_refuses_steps_it_cannot_wrap(step, wrapper, words):
    with pytest.raises(WrapperError, match=words):
        StepModel(step=step, wrappers=[wrapper])


@ELSEWHERE
def test_adversarial_trains_custom_loss_on_its_config_loss():
    model = StepModel(network(), step="custom-loss", config={"loss": CE},
                      wrappers=[{"name": "adversarial", **FGSM}])
    model.compile(optimizer="sgd")
    assert np.isfinite(model.fit(X, Y, batch_size=12, verbose=0).history["loss"]).all()


@pytest.mark.parametrize(("wrapper", "x", "y", "words"), [
    ("adversarial", X, None, "needs labels"),
    ("mixup", X, None, "needs labels"),
    ("adversarial", (X > 0.5).astype("int32"), Y, "perturbs float inputs; x has dtype int32"),
    ("mixup", (X > 0.5).astype("int32"), Y, "mixes float inputs"),
])
def test_refuses_data_it_cannot_use(wrapper, x, y, words):
    model = StepModel(network(), step="supervised", wrappers=[wrapper])
    with pytest.raises(DataStructureError, match=words):
        model.build_from_data(x if y is None else (x, y))


def test_mixup_outside_adversarial_is_refused_naming_both():
    with pytest.raises(WrapperStackError, match=r"Wrappers 'mixup' and 'adversarial' in the "
                                                r"order \['mixup', 'adversarial'\].*Put "
                                                r"'adversarial' first"):
        StepModel(network(), step="supervised", wrappers=["mixup", "adversarial"])


@pytest.mark.parametrize(("spec", "words"), [
    ({"method": "fgsm", "steps": 3}, "'steps' must be None or 1 with method='fgsm'"),
    ({"clip_min": 1.0, "clip_max": 0.0}, "'clip_min' must be below clip_max=0.0"),
    ({"method": "bim"}, "method"),
    ({"train_on": "clean"}, "train_on"),
])
def test_adversarial_config_errors(spec, words):
    with pytest.raises(ConfigError, match=words):
        StepModel(network(), step="supervised", wrappers=[{"name": "adversarial", **spec}])
