"""Keras' own test modules, run against ``StepModel(model, step="supervised")``.

``StepModel(net, step="supervised")`` is meant to behave exactly like
``keras.Model.fit/evaluate/predict`` on ``net``. This module takes Keras' shipped
tests of that contract (trainer, model, functional, callbacks, tf.data adapter,
tf.distribute and SavedModel tests) from the installed wheel, rewrites a copy of
them in a temporary directory so that every Keras model a test compiles, fits,
evaluates or predicts goes through a StepModel (``keras_suite.rewrite``, nothing
of Keras is kept in this repository), runs them with pytest in one subprocess under
this process's Keras backend (``KERAS_BACKEND``: run this module once per backend)
and checks, module by module, that every in-scope test passes. Keras' tests skip
themselves where they do not apply; whatever runs with a plain keras.Model on the
backend must also pass through StepModel. Tests that are not about fit()'s contract
through a wrapper, and per backend the ones left out of its run for time, are
listed, each with its reason, in ``keras_suite/scope.py``.

By hand, from ``tests/``: ``python -m keras_suite [MODULE...]`` prints each
failure; ``python -m keras_suite --baseline`` runs the same rewritten modules
without wrapping (Keras' own result on this machine), ``--all`` also runs the tests
left out for time. ``pytest -rP`` shows the counts of each module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import pytest
from keras_suite import runner
from keras_suite.rewrite import rewrite_source
from keras_suite.scope import keys_for, matches

BACKEND = keras.backend.backend()

MODULES = runner.MODULES


def _write_line(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(line)


@pytest.fixture(scope="module")
def suite_run(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> runner.Run:
    """One subprocess runs every selected Keras module (the backend is imported once)."""
    selected = {item.callspec.params["module"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_keras_module"
                and hasattr(item, "callspec")}
    modules = tuple(m for m in MODULES if m in selected)
    workdir = tmp_path_factory.mktemp("keras_suite")
    runner.prepare(workdir, modules)
    run = runner.run(modules, workdir)
    c = run.counts()
    _write_line(request.config,
                f"Keras suite through StepModel on {BACKEND} ({len(modules)} modules, "
                f"{run.wall_s:.0f} s): {c['passed']} passed, {c['failed']} failed, "
                f"{c['out_of_scope']} out of scope, {c['left_out']} left out for time, "
                f"{c['skipped']} skipped by Keras itself, {c['no_package']} skipped for want "
                f"of an optional package; {c['reach_stepmodel']} ran through a StepModel "
                f"({c['reach_and_pass']} of them pass).")
    return run


@pytest.mark.parametrize("module", MODULES)
def test_keras_module(module: str, suite_run: runner.Run) -> None:
    run = suite_run.for_module(module)
    assert run.results, (
        f"No result for {module} (pytest exit code {run.returncode}):\n{run.output[-4000:]}")
    counts = run.counts()
    print(f"{module}: {counts}")

    # The lists in scope.py name tests that exist...
    ids = list(run.results)
    stale = [k for k in keys_for(BACKEND) if k.split("::", 1)[0] == module
             and not any(matches(k, i) for i in ids)]
    assert not stale, (
        f"keras_suite/scope.py names tests that {module} no longer has: {stale}")
    # ...and every network with its own train/test step or compute_loss is on it.
    unlisted = [f"{r.nodeid} ({', '.join(r.overrides)})" for r in run.results.values()
                if r.overrides and r.outcome != "out_of_scope"]
    assert not unlisted, (
        "These tests wrap a network whose class overrides a step method; add them to "
        "OUT_OF_SCOPE in tests/keras_suite/scope.py:\n" + "\n".join(unlisted))

    failed = run.by_outcome("failed")
    lines = [f"{r.nodeid}: {(r.message.strip().splitlines() or [''])[0][:240]}"
             for r in failed]
    assert not failed, (
        f"{len(failed)} in-scope Keras test(s) of {module} fail through StepModel on "
        f"{BACKEND} ({counts}); rerun one with `cd tests && KERAS_BACKEND={BACKEND} "
        f"python -m keras_suite {module} -- -k NAME` (`--baseline` runs it on a plain "
        "keras.Model):\n"
        + "\n".join(lines))


def test_rewrite_routes_trainer_calls_only() -> None:
    source = (
        "import numpy as np\n"
        "import jax\n"
        "from keras.src import metrics\n"
        "def test_x(self):\n"
        "    model = make()\n"
        "    model.compile(loss='mse')\n"
        "    history = model.fit(x, y)\n"
        "    model(x)\n"
        "    model.get_weights()\n"
        "    other.jit_compile = True\n"
        "    self.assertEqual(model.optimizer.iterations, 1)\n"
        "    getattr(model, 'evaluate')(x, y)\n"
        "    cb.set_model(model)\n"
        "    metrics.Mean()\n"
        "    super().fit(x)\n"
    )
    text, routed = rewrite_source(source)
    ast.parse(text)
    assert "from keras_suite.runtime import _stepkit_route" in text
    assert "_stepkit_route(model, True).compile(loss='mse')" in text
    assert "history = _stepkit_route(model, True).fit(x, y)" in text
    assert "_stepkit_route(model).optimizer.iterations" in text
    assert "_stepkit_route(other, True).jit_compile = True" in text
    assert "getattr(_stepkit_route(model, False, 'evaluate'), 'evaluate')" in text
    assert "cb.set_model(_stepkit_route(model, True))" in text
    # the network itself, modules and a class's own methods are left alone
    for kept in ("    model(x)", "    model.get_weights()", "    metrics.Mean()",
                 "    super().fit(x)"):
        assert kept in text.splitlines()
    assert "except ImportError:\n    jax = None" in text
    assert routed == 6


def test_modules_exist_in_installed_keras() -> None:
    missing = [m for m in MODULES if not Path(runner.KERAS_SRC, m).is_file()]
    assert not missing, f"Keras no longer ships {missing}: update keras_suite.runner.MODULES"
