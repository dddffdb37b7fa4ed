"""``accumulate``: N micro-batches of b samples train like one update on N*b samples.

Each comparison trains the same network twice, once wrapped on batches of
``B`` and once bare on batches of ``N * B`` (the same samples in the same
order), and compares the weights after 2 updates.
"""

import attrs
import keras
import numpy as np
import pytest
from keras import ops

import stepkit
from stepkit import StepModel
from stepkit.errors import ConfigError, WrapperError

N, B = 4, 4  # 8 micro-batches of 4 = 2 updates on 16
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N * B * 2, 5)).astype("float32")
Y_REG = (X @ RNG.normal(size=(5, 1))).astype("float32")
Y_CLS = RNG.integers(0, 3, size=(N * B * 2,))
ACCUMULATE = {"name": "accumulate", "steps": N}


def numpy(v):
    return ops.convert_to_numpy(v)


def network(out=1):
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(out)])


def train(wrapped, optimizer, loss, y, out=1, compiled=None, **fit):
    model = StepModel(network(out), step="supervised",
                      wrappers=[ACCUMULATE] if wrapped else None)
    model.compile(optimizer=optimizer(), loss=loss, **(compiled or {}))
    history = model.fit(X, y, batch_size=B if wrapped else N * B, shuffle=False, verbose=0,
                        **fit).history
    return model, history


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(numpy(u), numpy(v), rtol=rtol, atol=atol)


# The wrapper's code is the same on every backend: JAX and torch run its core
# (mse-adam, two roles, mixed precision), TensorFlow the rest, for CI time.
ELSEWHERE = pytest.mark.tensorflow_only("backend-independent; the core runs on every backend")

CASES = {
    "mse-adam": (lambda: keras.optimizers.Adam(0.01), "mse", Y_REG, 1),
    # a schedule sees the updates (2), not the micro-batches (8)
    "crossentropy-sgd-schedule": (
        lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(
            0.1, decay_steps=1, decay_rate=0.5), momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), Y_CLS, 3),
}


@pytest.mark.parametrize(("case", "compiled"), [
    ("mse-adam", {}),
    pytest.param("crossentropy-sgd-schedule", {}, marks=ELSEWHERE),
    pytest.param("mse-adam", {"jit_compile": True, "steps_per_execution": 2},
                 id="mse-adam-xla-spe2", marks=pytest.mark.tensorflow_only(
                     "XLA on CPU and steps_per_execution: TensorFlow's compiled loop")),
])
def test_supervised_equals_one_update_on_the_n_times_larger_batch(case, compiled):
    optimizer, loss, y, out = CASES[case]
    wrapped, history = train(True, optimizer, loss, y, out, compiled)
    bare, bare_history = train(False, optimizer, loss, y, out, compiled)
    assert_same_weights(wrapped.networks["network"].weights, bare.networks["network"].weights)
    assert_same_weights(wrapped.optimizer.variables, bare.optimizer.variables)
    # the weights only change every N micro-batches: the mean of their losses is the
    # large batches' mean loss
    np.testing.assert_allclose(history["loss"], bare_history["loss"], rtol=1e-5)
    assert int(numpy(wrapped.optimizer.iterations)) == 2
    # ctx.iterations (and fit's progress bar) count micro-batches
    assert int(numpy(wrapped._step_counter)) == 8


@ELSEWHERE
def test_keras_option_agrees_on_one_device_but_its_schedule_counts_micro_batches():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    for lr, agrees in ((0.1, True), (schedule, False)):
        ours, _ = train(True, lambda lr=lr: keras.optimizers.SGD(lr), "mse", Y_REG)
        model = StepModel(network(), step="supervised")
        model.compile(optimizer=keras.optimizers.SGD(lr, gradient_accumulation_steps=N),
                      loss="mse")
        model.fit(X, Y_REG, batch_size=B, shuffle=False, verbose=0)
        diff = max(float(np.max(np.abs(numpy(a) - numpy(b)))) for a, b in zip(
            ours.networks["network"].weights, model.networks["network"].weights, strict=True))
        assert (diff < 1e-6) == agrees, (lr, diff)


@attrs.frozen
class OrderConfig:
    generator_first: bool = True


class TwoRoles(stepkit.Step):
    """A GAN-like pair: the generator's loss reads the discriminator; the discriminator's
    reads only the data. Updated generator first, neither reads the other's update."""

    name = "test-accumulate-two-roles"
    roles = ("generator", "discriminator")
    tracked = ("g_loss", "d_loss")
    config_class = OrderConfig

    def build_inputs(self, batch):
        return {"generator": batch.x, "discriminator": batch.x}

    def default_optimizers(self):
        return {"generator": keras.optimizers.SGD(0.05, momentum=0.5),
                "discriminator": keras.optimizers.Adam(0.01)}

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        g, d = ctx.networks["generator"], ctx.networks["discriminator"]

        def g_loss():
            return ops.mean(ops.square(d(g(x, training=True), training=True) - y))

        def d_loss():
            return ops.mean(ops.square(d(x, training=True) - y))

        first, second = ("generator", "discriminator") if self.config.generator_first else (
            "discriminator", "generator")
        losses = {first: ctx.minimize(first, {"generator": g_loss, "discriminator": d_loss}[
            first])}
        losses[second] = ctx.minimize(second, {"generator": g_loss,
                                               "discriminator": d_loss}[second])
        n = ctx.batch_size(x)
        ctx.track("g_loss", losses["generator"], n)
        ctx.track("d_loss", losses["discriminator"], n)

    def test_step(self, ctx, data):
        pass


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TwoRoles)


stepkit.register_plugin(Plugin(), name="test-accumulate-steps")


def two_roles(wrapped, generator_first):
    keras.utils.set_random_seed(2)
    nets = {"generator": keras.Sequential([keras.Input((5,)), keras.layers.Dense(5)]),
            "discriminator": keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])}
    model = StepModel(nets, step=TwoRoles.name, config={"generator_first": generator_first},
                      wrappers=[ACCUMULATE] if wrapped else None)
    model.compile()
    model.fit(X, Y_REG, batch_size=B if wrapped else N * B, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("generator_first", [True, pytest.param(False, marks=ELSEWHERE)])
def test_each_role_equals_the_larger_batch_when_no_role_reads_another_update(generator_first):
    wrapped, bare = two_roles(True, generator_first), two_roles(False, generator_first)
    for role in ("generator", "discriminator"):
        assert int(numpy(wrapped.optimizers[role].iterations)) == 2
    assert_same_weights(wrapped.networks["discriminator"].weights,
                        bare.networks["discriminator"].weights)
    a, b = (wrapped.networks["generator"].weights, bare.networks["generator"].weights)
    if generator_first:
        assert_same_weights(a, b)
    else:
        # as in the gan step: the large batch's generator update reads the discriminator
        # it has just updated; N-1 of the N micro-batches read the one before
        diff = max(float(np.max(np.abs(numpy(u) - numpy(v)))) for u, v in zip(a, b, strict=True))
        assert diff > 1e-3


def test_mixed_precision_equals_the_larger_batch():
    keras.mixed_precision.set_global_policy("mixed_float16")

    def optimizer():  # a scale that does not overflow: no update is skipped
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01),
                                                   initial_scale=16.0)

    wrapped, _ = train(True, optimizer, "mse", Y_REG)
    bare, _ = train(False, optimizer, "mse", Y_REG)
    assert isinstance(wrapped.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(wrapped.optimizer.inner_optimizer,
                          keras.optimizers.LossScaleOptimizer)
    assert int(numpy(wrapped.optimizer.iterations)) == 2
    # float16 layers: the micro-batches round differently from the large batch
    assert_same_weights(wrapped.networks["network"].weights, bare.networks["network"].weights,
                        rtol=1e-4, atol=2e-5)


@ELSEWHERE
def test_saved_mid_update_resumes_exactly(tmp_path):
    straight, _ = train(True, lambda: keras.optimizers.Adam(0.01), "mse", Y_REG)
    model = StepModel(network(), step="supervised", wrappers=[ACCUMULATE])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(X[:6 * B], Y_REG[:6 * B], batch_size=B, shuffle=False, verbose=0)  # 1 update + 2
    path = str(tmp_path / "mid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(numpy(loaded.wrappers[0].counts["network"])) == 2
    loaded.fit(X[6 * B:], Y_REG[6 * B:], batch_size=B, shuffle=False, verbose=0)
    assert_same_weights(loaded.networks["network"].weights,
                        straight.networks["network"].weights)


def test_refuses_an_optimizer_that_accumulates_itself():
    model = StepModel(network(), step="supervised", wrappers=[ACCUMULATE])
    with pytest.raises(WrapperError, match=r"role 'network' \(SGD\) already accumulates "
                                           r"gradients \(gradient_accumulation_steps=2\)"):
        model.compile(optimizer=keras.optimizers.SGD(gradient_accumulation_steps=2),
                      loss="mse")


@pytest.mark.parametrize(("spec", "words"), [
    ({"name": "accumulate"}, "required field missing @ $.steps"),
    ({"name": "accumulate", "steps": 1}, "'steps' must be >= 2: 1"),
])
def test_config_errors(spec, words):
    with pytest.raises(ConfigError) as info:
        StepModel(network(), step="supervised", wrappers=[spec])
    assert words in str(info.value)


@pytest.mark.tensorflow_only("tf.distribute.MirroredStrategy over 2 logical CPU devices")
def test_two_replicas_equal_one_device():
    from stepkit.testing import Sample, run_conformance

    report = run_conformance(
        "supervised", Sample(X, Y_REG, batch_size=8), network, checks=["replicas"],
        compile={"optimizer": "adam", "loss": "mse"}, wrappers=[{"name": "accumulate",
                                                                 "steps": 2}])
    assert report["replicas"]["weights_max_diff"] < 1e-5


# ---------------------------------------------------------------- stacks


def stacked(wrappers, batch_size=B):
    model = StepModel(network(), step="supervised", wrappers=wrappers, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(X, Y_REG, batch_size=batch_size, shuffle=False, verbose=0)
    return model


@ELSEWHERE
@pytest.mark.parametrize("partner", [
    "sam", {"name": "ema", "decay": 0.5}, {"name": "adversarial", "epsilon": 0.1},
    {"name": "mixup", "alpha": 0.4}], ids=["sam", "ema", "adversarial", "mixup"])
def test_either_order_gives_the_same_training(partner):
    # accumulate only changes apply_gradients: SAM's gradients, EMA's averages (once per
    # real update) and the changed data are the same whichever wrapper is outside
    first, second = stacked([ACCUMULATE, partner]), stacked([partner, ACCUMULATE])
    assert int(numpy(first.optimizer.iterations)) == 2

    def by_name(model):  # the wrappers' state is created in the order of the stack
        return sorted(model.weights, key=lambda w: w.name)

    assert_same_weights(by_name(first), by_name(second))
    np.testing.assert_allclose(first.predict(X[:8], verbose=0), second.predict(X[:8], verbose=0),
                               rtol=1e-5)


@ELSEWHERE
def test_accumulated_fgsm_training_equals_the_larger_batch():
    # an example's FGSM perturbation does not depend on the rest of its batch
    fgsm = {"name": "adversarial", "method": "fgsm", "epsilon": 0.1}
    wrapped, bare = stacked([ACCUMULATE, fgsm]), stacked([fgsm], batch_size=N * B)
    assert_same_weights(wrapped.networks["network"].weights, bare.networks["network"].weights)
