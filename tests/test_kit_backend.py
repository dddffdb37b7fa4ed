"""The conformance kit on several Keras backends: ``backends=``, ``--stepkit-backend``, causes.

Each backend other than the test process' runs in a child process. The steps are
tiny (one Dense layer, 40 rows of 5 features) and the checks few, because every
child process starts Keras anew (about 10 s on 2 CPU cores).
"""

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import stepkit
from stepkit.testing import BACKENDS, ConformanceError, Sample, conformance_tests, run_conformance
from stepkit.testing.backends import SKIPS, skip_reason
from stepkit.testing.diagnose import explain, from_source, from_text

HERE = Path(__file__).parent


class CheapStep(stepkit.Step):
    """Regression with input noise from ctx.normal; one Dense layer by default."""

    name = "kit-cheap"
    tracked = ("mse",)
    data_kind = "vectors"

    def default_networks(self, batch, missing):
        return {"network": keras.Sequential([keras.layers.Dense(1)])}

    def _mse(self, ctx, x, y, training):
        noisy = x + 0.1 * ctx.normal(ops.shape(x))
        return ops.mean((ctx.networks["network"](noisy, training=training) - y) ** 2)

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        mse = ctx.minimize("network", lambda: self._mse(ctx, x, y, True))
        ctx.track("mse", mse, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        ctx.track("mse", self._mse(ctx, x, y, False), ctx.batch_size(x))


class TfMeanStep(CheapStep):
    """Deliberately bad: its loss is TensorFlow's ``tf.reduce_mean``, not ``keras.ops.mean``."""

    name = "kit-tf-mean"

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        net = ctx.networks["network"]
        mse = ctx.minimize("network", lambda: tf.reduce_mean((net(x, training=True) - y) ** 2))
        ctx.track("mse", mse, ctx.batch_size(x))


def _line_of(cls, text):
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if text in line)


TF_LINE = _line_of(TfMeanStep, "tf.reduce_mean(")


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(CheapStep)
        register(TfMeanStep)


def register():
    if TfMeanStep.name not in {info.name for info in stepkit.list_steps()}:
        stepkit.register_plugin(Plugin(), name="kit-backend-steps")


def _sample():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    return Sample(x, (x @ rng.normal(size=(5, 1))).astype("float32"), batch_size=16)


# ------------------------------------------------ conformance_tests(backends=...): no child


def _params(test):
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    return mark.args[1]


def test_tests_are_parametrized_by_backend_with_per_backend_skip_and_xfail():
    tests = conformance_tests("kit-cheap", _sample, checks=["fit", "multiworker"],
                              backends="all", skip=["fit[jax]"],
                              xfail={"fit[torch]": "known on torch"})
    fit, multiworker = tests["test_conformance_fit"], tests["test_conformance_multiworker"]
    assert [p.id for p in _params(fit)] == ["tensorflow", "torch"]  # fit[jax] left out
    assert [[m.kwargs for m in p.marks] for p in _params(fit)] == [
        [], [{"raises": None, "reason": "known on torch", "strict": True}]]
    assert [p.id for p in _params(multiworker)] == ["tensorflow", "jax", "torch"]
    # A check the backend cannot run is skipped with the reason, before any child starts.
    with pytest.raises(pytest.skip.Exception, match=r"multiworker is not run on torch: Keras' "
                                                    r"fit\(\) has no multi-device path"):
        multiworker(keras_backend="torch")


def test_the_default_backend_is_this_process_one():
    (test,) = conformance_tests("kit-cheap", _sample, checks=["fit"]).values()
    assert [p.id for p in _params(test)] == [keras.backend.backend()]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backends": "mxnet"}, r"`backends`: unknown Keras backend\(s\) \['mxnet'\].*jax, torch"),
    ({"xfail": {"fit[mxnet]": "x"}}, r"`xfail` key 'fit\[mxnet\]': .*'check\[backend\]'"),
    ({"skip": ["fitt[jax]"]}, r"Unknown conformance check\(s\) \['fitt'\]"),
])
def test_unknown_backends_and_keys_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conformance_tests("kit-cheap", _sample, **kwargs)


def test_every_skip_names_the_backend_and_why():
    assert skip_reason("fit", "torch") is None and skip_reason("multiworker", "tensorflow") is None
    assert {b for _, b in SKIPS} == {"jax", "torch"}
    for (check, backend), why in SKIPS.items():
        assert skip_reason(check, backend) == f"{check} is not run on {backend}: {why}"


def test_run_conformance_reports_what_a_backend_cannot_run_without_a_child():
    report = run_conformance("kit-cheap", _sample, checks=["multiworker", "jit_compile"],
                             backend="torch")
    assert report == {"multiworker": {"skipped": skip_reason("multiworker", "torch")},
                      "jit_compile": {"skipped": skip_reason("jit_compile", "torch")}}


class _Local:
    @staticmethod
    def step_class():
        class LocalStep(CheapStep):  # defined in a function: no child can import it
            name = "kit-local"

        return LocalStep


def test_a_step_class_no_child_can_import_fails_before_a_child_starts():
    step_class = _Local.step_class()

    class LocalPlugin:
        @stepkit.hookimpl
        def stepkit_register_steps(self, register):
            register(step_class)

    if step_class.name not in {info.name for info in stepkit.list_steps()}:
        stepkit.register_plugin(LocalPlugin(), name="kit-local")
    other = next(b for b in BACKENDS if b != keras.backend.backend())
    with pytest.raises(ConformanceError, match=rf"^\[fit\] step 'kit-local' on {other}: the "
                                               r"step was registered by hand from .*<locals>"):
        run_conformance("kit-local", _sample, checks=["fit"], backend=other)


# ------------------------------------------------ the likely cause, from real errors


def test_the_cause_comes_from_the_traceback_alone():
    # A real JAX trace of a real TensorFlow call, with no StepModel in between.
    import jax

    def loss(x):
        return tf.reduce_mean(x * 2.0)

    with pytest.raises(Exception) as err:  # noqa: B017 - whatever TensorFlow raises on a tracer
        jax.jit(loss)(np.ones(3, "float32"))
    line = _line_of(loss, "tf.reduce_mean(")
    cause = explain(err.value, "jax")
    assert f"test_kit_backend.py:{line} (`tf.reduce_mean` in `return tf.reduce_mean(x * 2.0)`)" \
        in cause
    assert cause.startswith("the step calls TensorFlow directly at ")
    assert "use keras.ops / ctx.* instead; keras.ops.mean for tf.reduce_mean." in cause


def test_the_cause_comes_from_a_quoted_traceback_or_the_step_source():
    text = f'Traceback:\n  File "{__file__}", line {TF_LINE}, in <lambda>\nTypeError: no'
    call = from_text(text, "torch")
    assert (call.line, call.api, call.backend) == (TF_LINE, "tf.reduce_mean", "tensorflow")
    assert from_text(text, "tensorflow") is None
    assert [(c.line, c.api) for c in from_source(TfMeanStep, "jax")] == [
        (TF_LINE, "tf.reduce_mean")]
    assert from_source(CheapStep, "jax") == []
    cause = explain(None, "jax", TfMeanStep, text="history differs")
    assert cause.startswith("the step's code calls TensorFlow directly at ")
    assert f"test_kit_backend.py:{TF_LINE} (`tf.reduce_mean`), which cannot run on Keras' jax " \
        "backend: use keras.ops / ctx.* instead" in cause


# ------------------------------------------------ one pytest run: children on jax and torch

CONFTEST = """
import sys
sys.path.insert(0, {tests!r})
import test_kit_backend
test_kit_backend.register()
"""

MODULE = """
from stepkit.testing import conformance_tests
from test_kit_backend import _sample

globals().update(conformance_tests("kit-tf-mean", _sample, checks=["fit"],
                                   compile={{"optimizer": "sgd"}}, backends="all"))
"""


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory):
    """The bad step's fit on all 3 backends, and kit-cheap's replicas and multiworker on jax."""
    tmp = tmp_path_factory.mktemp("kit-backend")
    (tmp / "conftest.py").write_text(textwrap.dedent(CONFTEST.format(tests=str(HERE))))
    (tmp / "test_generated.py").write_text(textwrap.dedent(MODULE.format()))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "--stepkit-step", "kit-cheap", "--stepkit-backend", "jax",
         "--stepkit-checks", "replicas,multiworker"],
        cwd=tmp, capture_output=True, text=True, env=env, timeout=900)


def _failure(out, test_id):
    """The failure section of ``test_id`` in pytest's output."""
    start = out.index(f"_ {test_id} _")
    end = out.find("\n____", start + 1)
    return out[start:end if end > 0 else None]


def test_ids_name_the_backend_and_only_the_bad_step_fails_off_tensorflow(kit_run):
    out = kit_run.stdout
    assert kit_run.returncode == 1, out[-3000:] + kit_run.stderr[-3000:]
    assert "2 failed, 2 passed, 1 skipped" in out, out[-3000:]
    assert "PASSED test_generated.py::test_conformance_fit[tensorflow]" in out
    assert "FAILED test_generated.py::test_conformance_fit[jax]" in out
    assert "FAILED test_generated.py::test_conformance_fit[torch]" in out
    assert re.search(r"^PASSED \S*stepkit\[kit-cheap\]::replicas\[jax\]$", out, re.M), out


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_step_calling_tensorflow_fails_off_tensorflow_naming_the_call(kit_run, backend):
    failure = _failure(kit_run.stdout, f"test_conformance_fit[{backend}]")
    assert f"ConformanceError: [fit] step 'kit-tf-mean' on {backend}: the step calls " \
           "TensorFlow directly at " in failure, failure
    assert f"test_kit_backend.py:{TF_LINE} (`tf.reduce_mean` in `mse = ctx.minimize(" in failure
    assert f"which cannot run on Keras' {backend} backend: use keras.ops / ctx.* instead; " \
           "keras.ops.mean for tf.reduce_mean." in failure


def test_jax_checks_replicas_with_data_parallel_and_skips_multiworker(kit_run):
    out = kit_run.stdout
    assert "multiworker is not run on jax: MultiWorkerMirroredStrategy is tf.distribute" in out
    assert ("kit-cheap on jax: 1 check(s) run on the generic sample (x, y) vectors. Not run on "
            "jax: multiworker (pytest -rs says why).") in out
