"""The conformance kit on wrapped steps: ``wrappers=`` and ``pytest --stepkit-wrap``.

The stack under test is the built-in ``ema`` (averaged weights as saved state)
over ``lookahead`` (an installed plugin: slow weights and a counter) over
``kit-warmup`` (registered by hand below: a counter), so ``save_load``,
``resume`` and ``replicas`` rebuild all three in child processes.
``kit-warmup-unsaved`` is the same warmup with its counter in a Python
attribute: the kit must catch it. ``sam`` gets the in-process checks.
"""

import attrs
import keras
import numpy as np
import pytest
from keras import ops

import stepkit
from stepkit.testing import Sample, conformance_tests, run_conformance

COMPILE = {"optimizer": "sgd", "loss": "mse"}
# outermost first
STACK = ["ema", {"name": "lookahead", "k": 2}, {"name": "kit-warmup", "steps": 4}]
BACKEND = keras.backend.backend()


@attrs.frozen
class WarmupConfig:
    steps: int = attrs.field(default=4, validator=[attrs.validators.instance_of(int),
                                                   attrs.validators.ge(1)])


class Warmup(stepkit.Wrapper):
    """Linear warmup (Goyal et al. 2017): update t (from 0) uses min(1, (t + 1) / steps) x grads.

    State: per role, the number of updates the optimizer applied (not those a
    LossScaleOptimizer skipped), made with ``add_state``, so it is saved.
    """

    name = "kit-warmup"
    config_class = WarmupConfig

    def build_state(self, ctx):
        self.count = {r: self.add_state(ctx, f"{r}_count", (), "int64") for r in self.roles}

    def gradients(self, ctx, role, loss_fn, regularization, inner):
        grads, out = inner(role, loss_fn, regularization)
        t = ops.cast(self.count[role], "float32")
        scale = ops.minimum(1.0, (t + 1.0) / self.config.steps)
        return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads], out

    def apply_gradients(self, ctx, role, grads, inner):
        iterations = ctx.optimizers[role].iterations
        before = ops.copy(iterations)
        inner(role, grads)
        self.count[role].assign_add(ops.cast(iterations - before, "int64"))


class UnsavedWarmup(Warmup):
    """The same warmup, its counter a variable held in a Python attribute: not saved."""

    name = "kit-warmup-unsaved"

    def build_state(self, ctx):
        self.count = {r: keras.Variable(0, dtype="int64", trainable=False) for r in self.roles}


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_wrappers(self, register):
        register(Warmup)
        register(UnsavedWarmup)


stepkit.register_plugin(Plugin(), "kit-test-wrappers")


def make_net():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                             keras.layers.Dense(1)])


def make_sample():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")  # 16 + 16 + 8: a partial last batch
    return Sample(x, (x @ rng.normal(size=(5, 1))).astype("float32"), batch_size=16)


CHECKS = ["fit", "save_load", "resume", "replicas", "steps_per_execution", "jit_compile",
          "mixed_precision"]
globals().update(conformance_tests(
    "supervised", make_sample, make_net, compile=COMPILE, wrappers=STACK, checks=CHECKS))
globals().update(conformance_tests(
    "supervised", make_sample, make_net, compile=COMPILE, wrappers=[{"name": "sam", "rho": 0.05}],
    checks=["fit", "replicas", "steps_per_execution", "mixed_precision"]))


def test_the_tests_are_named_after_the_stack():
    tests = conformance_tests("supervised", make_sample, make_net, compile=COMPILE,
                              wrappers=STACK, checks=["fit", "resume"])
    assert sorted(tests) == ["test_conformance_fit_wrapped_ema_lookahead_kit_warmup",
                             "test_conformance_resume_wrapped_ema_lookahead_kit_warmup"]
    assert tests["test_conformance_fit_wrapped_ema_lookahead_kit_warmup"].__doc__ == (
        "stepkit conformance check 'fit' on step 'supervised' wrapped in ema > lookahead > "
        "kit-warmup.")


def test_mixed_precision_passes_with_a_counter_of_applied_updates():
    report = run_conformance("supervised", make_sample, make_net, checks=["mixed_precision"],
                             compile=COMPILE, wrappers=[{"name": "kit-warmup", "steps": 4}])
    # on TensorFlow the first mixed_float16 update is skipped (loss scale too large): 2 steps
    np.testing.assert_allclose(report["mixed_precision"]["ratios"]["network"], 1.0, rtol=0.01)


def test_a_registered_wrapper_instance_is_taken_through_its_spec():
    report = run_conformance("supervised", make_sample, make_net, checks=["config_roundtrip"],
                             compile=COMPILE, wrappers=[Warmup(WarmupConfig(steps=3))])
    assert report["config_roundtrip"]["wrappers"] == [{"name": "kit-warmup", "steps": 3}]


def test_an_unregistered_wrapper_instance_is_refused_with_the_fix():
    class Local(Warmup):
        name = "kit-local"

    with pytest.raises(TypeError, match=r"takes a Wrapper instance through its spec\(\) "
                                        r"\(\{'name': 'kit-local', 'steps': 4\}\), which needs "
                                        r".*Local to be the wrapper registered under the name "
                                        r"'kit-local' \(found none\)\. Register its plugin"):
        run_conformance("supervised", make_sample, make_net, checks=["fit"], compile=COMPILE,
                        wrappers=[Local()])
    with pytest.raises(TypeError, match=r"Received the item 3 in \['ema', 3\]"):
        conformance_tests("supervised", make_sample, wrappers=["ema", 3])


# ---------------------------------------------------------------- pytest --stepkit-wrap
# In-process pytest runs (pytester): this process has the wrappers registered and Keras
# imported already; the save_load check's child imports kit-warmup-unsaved from this module.

pytest_plugins = ["pytester"]


@pytest.mark.tensorflow_only(reason=(
    "on JAX kit-warmup-unsaved's counter never advances (the stateless step drops "
    "assignments to variables the model does not own), so saving has nothing to lose"))
def test_option_checks_a_step_under_the_stack_and_catches_state_not_saved(pytester):
    # kit-warmup-unsaved keeps its counter outside add_state: fit passes, but the loaded
    # model restarts the warmup, so save_load sees its next epoch differ.
    result = pytester.runpytest_inprocess(
        "-v", "-p", "no:cacheprovider", "--stepkit-step", "gan",
        "--stepkit-checks", "fit,save_load", "--stepkit-wrap", "lookahead:k=2,roles=discriminator",
        "--stepkit-wrap", "kit-warmup-unsaved:steps=4")
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    assert f"stepkit[lookahead>kit-warmup-unsaved>gan]::fit[{BACKEND}] PASSED" in out, out[-3000:]
    assert f"stepkit[lookahead>kit-warmup-unsaved>gan]::save_load[{BACKEND}] FAILED" in out
    assert (f"[save_load] step 'gan' wrapped in lookahead > kit-warmup-unsaved on {BACKEND}: in "
            "a fresh interpreter, after one more epoch, the loaded model's weights differ from "
            "the original model's: weight 0 'generator/") in out, out[-3000:]
    assert "a variable not made with ctx.add_state or Wrapper.add_state" in out
    assert (f"gan wrapped in lookahead > kit-warmup-unsaved on {BACKEND}: 2 check(s) run on the "
            "generic sample images 8x8x1.") in out


def test_option_refuses_a_stack_the_step_cannot_take(pytester):
    result = pytester.runpytest_inprocess("--stepkit-step", "gan", "--stepkit-wrap",
                                          "lookahaed:k=2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    assert ("--stepkit-wrap on step 'gan': Unknown wrapper 'lookahaed'. Did you mean "
            "'lookahead'?") in result.stderr.str(), result.stderr.str()[-2000:]
    # without --stepkit-step it would check nothing wrapped: an error, not a silent pass
    result = pytester.runpytest_inprocess("--stepkit-wrap", "ema")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--stepkit-wrap applies to the steps of --stepkit-step only" in result.stderr.str()
