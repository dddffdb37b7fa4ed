"""What a step author relies on: several updates of one role per step, regularisation
the framework adds, the default build from ``build_inputs``, and clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import stepkit
from stepkit import Step, StepDefinitionError, StepModel

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype("float32")
Y = (X @ RNG.normal(size=(4, 1))).astype("float32")


class TwoUpdates(Step):
    """Two SGD updates of one role per batch (as n_dis updates inside one batch)."""

    name = "two-updates"
    roles = ("network",)

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        net = ctx.networks["network"]
        for _ in range(2):
            loss = ctx.minimize("network", lambda: ops.mean(
                ops.square(ops.cast(net(x, training=True), "float32") - y)))
        ctx.track("loss", loss, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        pred = ctx.networks["network"](x)
        ctx.track("loss", ops.mean(ops.square(pred - y)), ctx.batch_size(x))


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TwoUpdates)




def net():
    keras.utils.set_random_seed(5)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])


class HandWritten(keras.Model):
    """The same algorithm as a Keras train_step: two tape/apply rounds per batch."""

    def train_step(self, data):
        x, y = data
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = ops.mean(ops.square(self(x, training=True) - y))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return {"loss": loss}


def hand_written_weights():
    ref_net = net()
    ref = HandWritten(ref_net.inputs, ref_net.outputs)
    ref.compile(optimizer=keras.optimizers.SGD(0.05))
    ref.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return ref.get_weights(), int(ref.optimizer.iterations)


@pytest.mark.parametrize("compile_kwargs", [
    {}, {"jit_compile": True}, {"steps_per_execution": 3}, {"run_eagerly": True}],
    ids=["graph", "xla", "steps_per_execution", "eager"])
@pytest.mark.tensorflow_only("the hand-written step uses tf.GradientTape")
def test_several_updates_of_one_role_per_step_equal_a_hand_written_step(compile_kwargs):
    expected, iterations = hand_written_weights()
    assert iterations == 12  # 2 epochs x 3 batches x 2 updates
    network = net()
    model = StepModel(network, step="two-updates")
    model.compile(optimizer=keras.optimizers.SGD(0.05), **compile_kwargs)
    model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 12
    assert int(model._step_counter) == 6
    for a, b in zip(expected, network.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


@pytest.mark.tensorflow_only(
    "counts the updates LossScaleOptimizer applies, and which float16 step overflows "
    "depends on the backend's CPU kernels (on torch one of the 12 does); mixed precision "
    "equals keras.Model.fit on every backend in test_backend_fidelity.py")
def test_several_updates_of_one_role_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = StepModel(net(), step="two-updates")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    assert int(model.optimizer.iterations) == 12
    assert history["loss"][1] < history["loss"][0]


# ---------------------------------------------------------------- regularisation

class ZeroLoss(Step):
    name = "zero-loss"
    roles = ("network",)

    def train_step(self, ctx, data):
        x, _, _ = ctx.unpack(data)
        net = ctx.networks["network"]
        loss = ctx.minimize("network", lambda: 0.0 * ops.mean(net(x, training=True)))
        ctx.track("loss", loss, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, _, _ = ctx.unpack(data)
        ctx.track("loss", ctx.regularization_loss("network"), ctx.batch_size(x))


class ZeroLossPlugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(ZeroLoss)




def test_the_framework_adds_the_role_regularisation_like_keras():
    # A zero data loss: only the L2 penalty moves the kernel, by lr * 2 * l2 * w.
    def regularised():
        keras.utils.set_random_seed(5)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(
            1, kernel_regularizer=keras.regularizers.L2(0.5), use_bias=False)])

    network = regularised()
    w0 = network.get_weights()[0].copy()
    model = StepModel(network, step="zero-loss")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(X[:16], epochs=1, batch_size=16, verbose=0).history
    np.testing.assert_allclose(network.get_weights()[0], w0 * (1 - 0.1 * 2 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(history["loss"], [0.5 * np.sum(w0 ** 2)], rtol=1e-6)
    # keras.Model with a zero loss does the same update
    ref = regularised()
    ref.compile(optimizer=keras.optimizers.SGD(0.1), loss=lambda y, p: 0.0 * p)
    ref.fit(X[:16], np.zeros((16, 1)), batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(network.get_weights()[0], ref.get_weights()[0], rtol=1e-6)


def test_regularization_false_opts_out():
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        1, kernel_regularizer=keras.regularizers.L2(0.5))])
    model = StepModel(network, step="zero-loss")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.build_from_data(X[:4])
    ctx = model._ctx
    x = ops.convert_to_tensor(X[:4])
    grads, loss = ctx.gradients(
        "network", lambda: 0.0 * ops.mean(network(x)), regularization=False)
    assert float(loss) == 0.0
    assert all(float(ops.max(ops.abs(g))) == 0.0 for g in grads)
    grads, loss = ctx.gradients("network", lambda: 0.0 * ops.mean(network(x)))
    assert float(loss) > 0.0
    assert float(ops.max(ops.abs(grads[0]))) > 0.0


# ---------------------------------------------------------------- building

class TwoNets(Step):
    """A step whose second network takes latent vectors: it must say so."""

    name = "two-nets"
    roles = ("encoder", "decoder")

    def train_step(self, ctx, data):
        x, _, _ = ctx.unpack(data)

        def loss_fn():
            return ops.mean(ops.square(ctx.networks["decoder"](ctx.networks["encoder"](x)) - x))

        ctx.track("loss", ctx.minimize("encoder", loss_fn), ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, _, _ = ctx.unpack(data)
        ctx.track("loss", ops.mean(x), ctx.batch_size(x))


class TwoNetsDeclared(TwoNets):
    name = "two-nets-declared"

    def build_inputs(self, batch):
        return {"encoder": batch.x, "decoder": keras.KerasTensor((None, 2))}


class TwoNetsPlugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TwoNets)
        register(TwoNetsDeclared)


class ForwardOutsideTheLoss(Step):
    """A mistake: the network runs before ctx.minimize, so its loss has no gradient."""

    name = "forward-outside-the-loss"
    roles = ("network",)

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        pred = ctx.networks["network"](x, training=True)
        loss = ctx.minimize("network", lambda: ops.mean(ops.square(pred - y)))
        ctx.track("loss", loss, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        ctx.track("loss", ops.mean(ops.square(ctx.networks["network"](x) - y)),
                  ctx.batch_size(x))


class ForwardOutsidePlugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(ForwardOutsideTheLoss)


PLUGINS = {"test-step-authoring": Plugin(), "test-zero-loss": ZeroLossPlugin(),
           "test-two-nets": TwoNetsPlugin(), "test-forward-outside": ForwardOutsidePlugin()}


@pytest.fixture(autouse=True)
def _registered():
    # Per test, not at import: other test modules reset the global registry.
    for name, plugin in PLUGINS.items():
        stepkit.register_plugin(plugin, name=name)


def two_nets():
    return {"encoder": keras.layers.Dense(2), "decoder": keras.layers.Dense(4)}


def test_a_forward_pass_outside_the_loss_function_is_named_not_trained_on():
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model = StepModel(network, step="forward-outside-the-loss")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [np.array(w) for w in network.get_weights()]
    if keras.backend.backend() == "jax":
        # jax.grad of a loss that does not depend on the weights is zero: nothing moves
        # (documented in docs/write-your-own-step.md), as in a hand-written JAX step.
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
        for w, b in zip(network.get_weights(), before, strict=True):
            np.testing.assert_array_equal(w, b)
        return
    with pytest.raises(StepDefinitionError) as info:  # TensorFlow's tape, torch's autograd
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    for words in ("'forward-outside-the-loss'", "role 'network'", "2 trainable variables",
                  f"no gradient on {keras.backend.backend()}", "inside the loss function"):
        assert words in str(info.value)


def test_a_role_left_unbuilt_names_build_inputs():
    model = StepModel(two_nets(), step="two-nets")
    model.compile(optimizer="sgd")
    with pytest.raises(StepDefinitionError, match=r"\['decoder'\] were not built.*build_inputs"):
        model.fit(X, epochs=1, verbose=0)


def test_build_inputs_builds_every_role():
    model = StepModel(two_nets(), step="two-nets-declared")
    model.compile(optimizer="sgd")
    model.fit(X, epochs=1, batch_size=16, verbose=0)
    assert model.networks["decoder"].kernel.shape == (2, 4)


def test_a_step_declares_the_batch_size_stepkit_fit_uses(tmp_path):
    import subprocess
    import sys

    from stepkit.steps.gan import GAN

    assert GAN.default_batch_size == 16 and Step.default_batch_size is None
    proc = subprocess.run(
        [sys.executable, "-m", "stepkit.cli", "fit", "--step", "gan", "--epochs", "1",
         "--limit", "32", "--out", str(tmp_path / "run"), "--verbose", "0"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "batch size 16" in proc.stdout, proc.stdout
