"""The conformance checks: one function per check, each raising :class:`ConformanceError`.

Every check has the signature ``check_x(step, sample, *, networks=None,
config=None, compile=None, wrappers=None)`` and returns a dict of what it
measured. ``step``
is a registered step name, ``sample`` a :class:`~stepkit.testing.Sample` (or
``x``, ``(x, y)`` or a callable returning one), ``networks`` and ``compile``
zero-argument callables giving fresh networks and ``compile()`` arguments,
``wrappers`` the wrapper stack every model is built with.

Example::

    from stepkit.testing import checks, Sample

    checks.check_fit("supervised", Sample(x, y), networks=make_net,
                     compile={"optimizer": "adam", "loss": "mse"})
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

import stepkit
from stepkit.config import structure_config, unstructure_config
from stepkit.testing._harness import (
    Case,
    ConformanceError,
    as_check,
    check_finite,
    compare_histories,
    expected_names,
    fail,
)
from stepkit.testing.backends import resolve_backends, run_in_backend, skip_reason
from stepkit.testing.execution import (
    check_jit_compile,
    check_mixed_precision,
    check_steps_per_execution,
)
from stepkit.testing.multiworker import check_multiworker
from stepkit.testing.replicas import check_replicas
from stepkit.testing.resume import check_resume
from stepkit.testing.runner import run_check
from stepkit.testing.save_load import check_save_load

__all__ = ["ALL_CHECKS", "REPLICA_CHECKS", "ConformanceError"]


@as_check
def check_fit(case: Case) -> dict:
    """fit() in graph mode: history holds exactly the tracked names, finite, one per epoch."""
    model = case.model()
    history = case.fit(model)
    if set(history) != expected_names(model):
        fail("fit", case, f"history keys {sorted(history)} are not the step's tracked names "
                          f"plus compile metrics {sorted(expected_names(model))}.")
    if any(len(v) != case.epochs for v in history.values()):
        fail("fit", case, f"expected {case.epochs} values per key, got {history}.")
    check_finite("fit", case, history)
    return {"history": history}


@as_check
def check_fit_eager(case: Case) -> dict:
    """fit(run_eagerly=True) runs, is finite, and matches graph mode to 1e-4."""
    eager = case.fit(case.model(run_eagerly=True))
    check_finite("fit_eager", case, eager)
    graph = case.fit(case.model())
    return {"max_diff": compare_histories("fit_eager", case, eager, graph, tol=1e-4)}


@as_check
def check_evaluate(case: Case) -> dict:
    """evaluate() returns the step's tracked names (plus compile metrics), finite."""
    model = case.model()
    case.fit(model, epochs=1)
    s = case.sample
    logs = model.evaluate(s.x, s.y, batch_size=s.batch_size, verbose=0, return_dict=True)
    if set(logs) != expected_names(model):
        fail("evaluate", case, f"evaluate() returned {sorted(logs)}, expected "
                               f"{sorted(expected_names(model))}.")
    check_finite("evaluate", case, logs)
    return {"logs": logs}


@as_check
def check_predict(case: Case) -> dict:
    """predict() gives one finite output per input row, equal to model(x)."""
    model = case.model()
    case.fit(model, epochs=1)
    px = case.sample.predict_x if case.sample.predict_x is not None else case.sample.x
    out = model.predict(px, batch_size=case.sample.batch_size, verbose=0)
    n = len(keras.tree.flatten(px)[0])
    for leaf in keras.tree.flatten(out):
        if leaf.shape[0] != n or not np.all(np.isfinite(leaf)):
            fail("predict", case, f"predict() gave shape {leaf.shape} (finite: "
                                  f"{bool(np.all(np.isfinite(leaf)))}) for {n} inputs.")
    direct = keras.tree.map_structure(keras.ops.convert_to_numpy, model(px, training=False))
    for a, b in zip(keras.tree.flatten(out), keras.tree.flatten(direct), strict=True):
        if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
            fail("predict", case, "predict(x) differs from model(x, training=False).")
    return {"shapes": [tuple(o.shape) for o in keras.tree.flatten(out)]}


@as_check
def check_epoch_means(case: Case) -> dict:
    """fit/evaluate logs are batch-size-weighted means of the per-batch values.

    A second model with the same seeds replays the epoch with
    ``train_on_batch`` (then ``test_on_batch``), one batch at a time.
    """
    s = case.sample
    epoch_model, batch_model = case.model(), case.model()
    fit_logs = {k: v[0] for k, v in case.fit(epoch_model, epochs=1).items()}
    per_batch, sizes = [], []
    for xb, yb, n in s.batches():
        per_batch.append(batch_model.train_on_batch(xb, yb, return_dict=True))
        sizes.append(n)
    _compare_means("epoch_means (fit)", case, fit_logs, per_batch, sizes)

    state = keras.ops.convert_to_numpy(epoch_model._seed_generator.state)
    eval_logs = epoch_model.evaluate(s.x, s.y, batch_size=s.batch_size, verbose=0,
                                     return_dict=True)
    epoch_model._seed_generator.state.assign(state)
    per_batch = [epoch_model.test_on_batch(xb, yb, return_dict=True) for xb, yb, _ in
                 s.batches()]
    _compare_means("epoch_means (evaluate)", case, eval_logs, per_batch, sizes)
    return {"batch_sizes": sizes, "fit": fit_logs, "evaluate": eval_logs}


def _compare_means(check: str, case: Case, logs: dict, per_batch: list[dict],
                   sizes: list[int]) -> None:
    for key, value in logs.items():
        values = np.array([b[key] for b in per_batch], dtype=float)
        mean = float(np.average(values, weights=sizes))
        if not np.isclose(value, mean, rtol=1e-4, atol=1e-5):
            last = "; it equals the last batch's value" if np.isclose(value, values[-1]) else ""
            fail(check, case, f"{key!r} = {value}, but the batch-size-weighted mean of the "
                              f"per-batch values {values.tolist()} is {mean}{last}.")


@as_check
def check_config_roundtrip(case: Case) -> dict:
    """The config and wrapper specs survive get_config/from_config; the config survives JSON."""
    model = case.model()
    config = model.step.config
    again = stepkit.StepModel.from_config(model.get_config())
    if again.step.name != case.step or again.step.config != config:
        fail("config", case, f"from_config(get_config()) gave step {again.step.name!r} with "
                             f"{again.step.config!r}, expected {config!r}.")
    stack, again_stack = ([w.spec() for w in m.wrappers] for m in (model, again))
    if again_stack != stack:
        fail("config", case, f"from_config(get_config()) gave the wrappers {again_stack}, "
                             f"expected {stack}.")
    text = json.dumps(unstructure_config(config))
    back = structure_config(type(config), json.loads(text), step=case.step)
    if back != config:
        fail("config", case, f"JSON round trip {text} gave {back!r}, expected {config!r}.")
    try:
        structure_config(type(config), {"no_such_key": 1}, step=case.step)
    except stepkit.ConfigError as exc:
        if "no_such_key" not in str(exc):
            fail("config", case, f"an unknown key's error does not name it: {exc}")
    else:
        fail("config", case, "an unknown config key was accepted.")
    return {"json": text, "wrappers": stack}


ALL_CHECKS: dict[str, Callable[..., dict]] = {
    "fit": check_fit,
    "fit_eager": check_fit_eager,
    "evaluate": check_evaluate,
    "predict": check_predict,
    "epoch_means": check_epoch_means,
    "config_roundtrip": check_config_roundtrip,
    "save_load": check_save_load,
    "jit_compile": check_jit_compile,
    "steps_per_execution": check_steps_per_execution,
    "mixed_precision": check_mixed_precision,
}

# Checks that run the step in child processes: under tf.distribute (stepkit.testing.replicas,
# stepkit.testing.multiworker) and killed mid-fit then resumed (stepkit.testing.resume);
# run_conformance() includes them by default.
REPLICA_CHECKS: dict[str, Callable[..., dict]] = {"replicas": check_replicas,
                                                  "resume": check_resume,
                                                  "multiworker": check_multiworker}


def run_conformance(step: str, sample: Any, networks: Any = None, config: Any = None,
                    checks: Any = None, *, compile: Any = None, backend: str | None = None,
                    wrappers: Any = None) -> dict[str, dict]:
    """Run ``checks`` (names; default: all) on ``step``; return each check's measurements.

    ``wrappers`` stacks step wrappers over the step in every model a check builds,
    child processes included: what ``StepModel(wrappers=...)`` takes, outermost
    first (names, dicts, or :class:`stepkit.Wrapper` instances whose class is
    registered under their name; see :mod:`stepkit.testing._wrappers`).

    ``backend`` (a Keras backend name) runs them in a child interpreter on that
    backend when it is not this process' (:mod:`stepkit.testing.backends`). A
    check that cannot run on the backend is not run: its entry is
    ``{"skipped": reason}``.

    Raises:
        ConformanceError: the first check that fails, naming the backend and,
            where it is known, the likely cause (:mod:`stepkit.testing.diagnose`).
        ValueError: an unknown check name or backend.
    """
    __tracebackhide__ = True
    available = {**ALL_CHECKS, **REPLICA_CHECKS}
    names = list(available) if checks is None else list(checks)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"Unknown conformance check(s) {unknown}. Valid checks: "
                         f"{', '.join(available)}.")
    if backend is not None:
        (backend,) = resolve_backends(backend, "backend")
        if backend != keras.backend.backend():  # no child for the checks it cannot run
            skipped = {n: {"skipped": skip_reason(n, backend)} for n in names
                       if skip_reason(n, backend)}
            rest = [n for n in names if n not in skipped]
            report = run_in_backend(backend, step, sample, networks, config, rest,
                                    compile=compile, wrappers=wrappers) if rest else {}
            return {n: skipped.get(n) or report[n] for n in names}
    case = Case.make(step, sample, networks, config, compile, wrappers=wrappers)
    return {name: run_check(name, available[name].case_fn, case) for name in names}


__all__ += ["run_conformance", *[f.__name__ for f in {**ALL_CHECKS, **REPLICA_CHECKS}.values()]]
