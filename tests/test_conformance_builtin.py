"""The conformance kit on stepkit's built-in steps (supervised, custom-loss, gan)."""

import keras
import numpy as np
import pytest
from keras import ops
from sklearn.datasets import load_digits

import stepkit
from stepkit.testing import CHECK_NAMES, Sample
from stepkit.testing.backends import skip_reason

BACKEND = keras.backend.backend()
TENSORFLOW_ONLY = pytest.mark.skipif(BACKEND != "tensorflow", reason=(
    "the step divides by tf.distribute's replica count, which only the TensorFlow backend's "
    "MirroredStrategy makes 2; on JAX, DataParallel traces the step once (1 replica)"))


def _conform(stepkit_conformance, *args, **kwargs):
    """``stepkit_conformance(...)``; skips the test, with the reason, where the check cannot run."""
    report = stepkit_conformance(*args, **kwargs)
    for check, entry in report.items():
        if set(entry) == {"skipped"}:
            assert entry["skipped"] == skip_reason(check, BACKEND)
            pytest.skip(entry["skipped"])
    return report


def _regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")  # 40 = 16 + 16 + 8: a partial last batch
    return Sample(x, (x @ rng.normal(size=(5, 1))).astype("float32"), batch_size=16)


def _mlp():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(1)])


def _digits_8x8():
    images = (load_digits().images[:40] / 16.0).astype("float32")[..., None]
    z = np.random.default_rng(1).normal(size=(8, 8)).astype("float32")
    return Sample(images, predict_x=z, batch_size=16)


CASES = {
    "supervised": dict(sample=_regression, networks=_mlp,
                       compile={"optimizer": "adam", "loss": "mse", "metrics": ["mae"]}),
    "custom-loss": dict(sample=_regression, networks=_mlp, config={"loss": "mae"},
                        compile={"optimizer": "adam", "metrics": ["mse"]}),
    "gan": dict(sample=_digits_8x8, config={"latent_dim": 8}),
}


def _torch_on_cpu():
    import torch

    return not torch.cuda.is_available()


# Keras itself, not stepkit: the gan's generator has a Conv2DTranspose.
KERAS_TORCH_CPU_FLOAT16 = pytest.mark.xfail(
    BACKEND == "torch" and _torch_on_cpu(), raises=RuntimeError, strict=True,
    reason="Keras' torch backend cannot run a float16 Conv2DTranspose backward pass on CPU "
           "(slow_conv2d: grad_weight must be contiguous)")


@pytest.mark.parametrize(("step", "check"), [
    pytest.param(step, check, marks=[KERAS_TORCH_CPU_FLOAT16] * (
        (step, check) == ("gan", "mixed_precision")))
    for step in CASES for check in CHECK_NAMES
    if (step, check) != ("gan", "jit_compile")  # test_gan_reproduces_default_run_under_xla
])
def test_builtin_step_conforms(stepkit_conformance, step, check):
    case = CASES[step]
    report = _conform(stepkit_conformance, step, case["sample"], case.get("networks"),
                      case.get("config"), [check], compile=case.get("compile"))
    assert set(report) == {check}
    if check == "replicas":
        replicas = report["replicas"]
        assert replicas["uses_noise"] is (step == "gan")
        if BACKEND == "jax":  # DataParallel: one trace over the global batch, noise included
            assert replicas["distribution"] == "DataParallel" and replicas["replicas"] == 2
            assert replicas["max_diff"] <= 1e-5 and replicas["weights_max_diff"] <= 1e-5
            assert replicas["iterations"] == dict.fromkeys(
                ["generator", "discriminator"] if step == "gan" else ["network"], 6)
        elif step == "gan":  # noisy: unscaled values, within 35% of one device's
            assert replicas["checked"] == ["d_loss", "g_loss"]
            assert replicas["iterations"] == {"generator": 6, "discriminator": 6}
        else:  # deterministic: the same numbers
            assert replicas["max_diff"] <= 1e-5 and replicas["weights_max_diff"] <= 1e-5
            assert replicas["iterations"] == {"network": 6}
    if check == "resume":  # killed after batch 1 of epoch 3 (3 batches an epoch), backup at 8
        resume = report["resume"]
        roles = ["generator", "discriminator"] if step == "gan" else ["network"]
        assert resume["uses_noise"] is (step == "gan")
        assert resume["resumed_from_iterations"] == dict.fromkeys(roles, 8)
        assert resume["iterations"] == dict.fromkeys(roles, 15)
        assert resume["weights_max_diff"] <= 1e-6
    if check == "multiworker":  # 2 workers: identical weights; deterministic steps as 1 process
        mw = report["multiworker"]
        roles = ["generator", "discriminator"] if step == "gan" else ["network"]
        assert mw["uses_noise"] is (step == "gan")
        assert mw["iterations"] == dict.fromkeys(roles, 6)
        if step != "gan":
            assert mw["max_diff"] <= 1e-5 and mw["weights_max_diff"] <= 1e-5


def test_gan_is_reproducible_across_steps_per_execution(stepkit_conformance):
    # The gan draws noise, yet a seeded model draws the same noise when steps are grouped.
    report = _conform(stepkit_conformance, "gan", _digits_8x8, config={"latent_dim": 8},
                      checks=["steps_per_execution"])
    assert report["steps_per_execution"]["max_diff"] <= 1e-5


def test_noise_is_detected_and_deterministic_steps_match_under_xla(stepkit_conformance):
    case = CASES["supervised"]
    sup = _conform(stepkit_conformance, "supervised", case["sample"], case["networks"],
                   checks=["jit_compile"], compile=case["compile"])["jit_compile"]
    assert sup["uses_noise"] is False and sup["max_diff"] <= 1e-5


def test_gan_reproduces_default_run_under_xla(stepkit_conformance):
    # With the same draws, XLA only changes float rounding: measured 6e-8 with the fix.
    gan = _conform(stepkit_conformance, "gan", _digits_8x8, config={"latent_dim": 8},
                   checks=["jit_compile"])["jit_compile"]
    assert gan["uses_noise"] is True and gan["max_diff"] <= 1e-4


def test_unknown_check_is_an_error(stepkit_conformance):
    with pytest.raises(ValueError, match=r"Unknown conformance check\(s\) \['fitt'\].*fit_eager"):
        stepkit_conformance("supervised", _regression, checks=["fitt"])


class _UnweightedMSE:
    """A plugin whose step tracks its loss with weight 1 per batch: a contract breach."""

    @staticmethod
    def step_class():
        from keras import ops

        import stepkit

        class Unweighted(stepkit.Step):
            name = "conformance-unweighted-mse"
            tracked = ("mse",)

            def train_step(self, ctx, data):
                x, y, _ = ctx.unpack(data)
                net = ctx.networks["network"]
                mse = ctx.minimize("network", lambda: ops.mean((net(x, training=True) - y) ** 2))
                ctx.track("mse", mse, 1)  # should be ctx.batch_size(x)

            def test_step(self, ctx, data):
                x, y, _ = ctx.unpack(data)
                ctx.track("mse", ops.mean((ctx.networks["network"](x) - y) ** 2), 1)

        return Unweighted


def test_kit_catches_epoch_means_not_weighted_by_batch_size(stepkit_conformance):
    from stepkit.testing import ConformanceError

    step_class = _UnweightedMSE.step_class()
    _register(step_class)
    stepkit_conformance(step_class.name, _regression, _mlp, checks=["fit"],
                        compile={"optimizer": "sgd"})
    with pytest.raises(ConformanceError, match=r"\[epoch_means \(fit\)\].*'mse'.*weighted mean"):
        stepkit_conformance(step_class.name, _regression, _mlp, checks=["epoch_means"],
                            compile={"optimizer": "sgd"})


_IMPORT_PROBE = (
    "import sys, stepkit.testing.pytest_plugin, stepkit.testing; "
    "print(sorted(m for m in sys.modules if m in ('tensorflow', 'keras', "
    "'stepkit.testing.checks', 'stepkit.testing._harness')))"
)


def _imported_by_plugin():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_pytest_plugin_does_not_load_the_checks_at_import():
    assert "stepkit.testing" not in _imported_by_plugin()


def test_pytest_plugin_does_not_import_tensorflow():
    assert _imported_by_plugin() == "[]"


class ScaledTwiceMSE(stepkit.Step):
    """Divides its loss by the replica count itself (as in a tf.distribute custom loop).

    stepkit already scales for replicas, so under 2 replicas this step's gradients
    and its tracked ``mse`` are halved: a contract breach that one device hides.
    It draws input noise, so the kit takes its noisy path. Module level, so that
    the replicas check's child process can import it.
    """

    name = "conformance-scaled-twice"
    tracked = ("mse",)

    def _mse(self, ctx, x, y, training):
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        noisy = x + 0.01 * ctx.normal(ops.shape(x))
        return ops.mean((ctx.networks["network"](noisy, training=training) - y) ** 2) / replicas

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        mse = ctx.minimize("network", lambda: self._mse(ctx, x, y, True))
        ctx.track("mse", mse, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        ctx.track("mse", self._mse(ctx, x, y, False), ctx.batch_size(x))


def _register(step_class):
    if step_class.name in {info.name for info in stepkit.list_steps()}:
        return

    class Plugin:
        @stepkit.hookimpl
        def stepkit_register_steps(self, register):
            register(step_class)

    stepkit.register_plugin(Plugin(), name=f"conformance-{step_class.name}")


@TENSORFLOW_ONLY
def test_kit_catches_a_loss_scaled_for_replicas_twice(stepkit_conformance):
    from stepkit.testing import ConformanceError

    _register(ScaledTwiceMSE)
    with pytest.raises(ConformanceError, match=r"\[replicas\].*'mse' at the first epoch .* "
                                               r"more than 35% apart \(about half"):
        stepkit_conformance(ScaledTwiceMSE.name, _regression, _mlp, checks=["replicas"],
                            compile={"optimizer": "sgd"})


def test_a_child_process_check_names_a_step_class_the_child_cannot_import(stepkit_conformance):
    from stepkit.testing import ConformanceError

    step_class = _UnweightedMSE.step_class()  # defined inside a function
    _register(step_class)
    with pytest.raises(ConformanceError, match=r"\[resume\].*registered by hand from "
                                               r".*<locals>.*module level"):
        stepkit_conformance(step_class.name, _regression, _mlp, checks=["resume"],
                            compile={"optimizer": "sgd"})


class UnseededNoiseMSE(stepkit.Step):
    """Draws input noise from ``keras.random`` without the model's seed generator.

    Its noise stream is not a model variable, so a backup cannot restore it: a run
    resumed in a new process draws other noise than an uninterrupted one. Module
    level, so that the resume check's child processes can import it.
    """

    name = "conformance-unseeded-noise"
    tracked = ("mse",)

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        net = ctx.networks["network"]
        noisy = x + 0.1 * keras.random.normal(ops.shape(x))  # should be ctx.normal
        mse = ctx.minimize("network", lambda: ops.mean((net(noisy, training=True) - y) ** 2))
        ctx.track("mse", mse, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        ctx.track("mse", ops.mean((ctx.networks["network"](x) - y) ** 2), ctx.batch_size(x))


def test_kit_catches_noise_that_a_resumed_run_cannot_restore(stepkit_conformance):
    from stepkit.testing import ConformanceError

    _register(UnseededNoiseMSE)
    match = (r"\[resume\].*weight \d+ .* after resuming differs.*keras\.random"
             if BACKEND != "jax" else  # JAX refuses unseeded draws in a traced step
             r"(?s)\[resume\] step 'conformance-unseeded-noise' on jax: .*only use seeded random "
             r"ops.*\nLikely cause on jax: the step draws unseeded random numbers .*ctx\.normal")
    with pytest.raises(ConformanceError, match=match):
        stepkit_conformance(UnseededNoiseMSE.name, _regression, _mlp, checks=["resume"],
                            compile={"optimizer": "sgd"})
