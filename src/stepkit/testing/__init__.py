"""The stepkit conformance kit: generic checks any registered step should pass.

The full reference is ``docs/testing.md``. In a step package's tests, three
lines run every check as its own pytest test::

    from stepkit.testing import conformance_tests

    globals().update(conformance_tests("wgan-gp", sample=make_sample))

``make_sample`` returns a :class:`Sample` (or ``x`` or ``(x, y)``; any of them
may be a structure of arrays); pass ``networks=`` (a callable giving fresh
networks), ``config=`` and ``compile=`` (a dict or a callable giving
``compile()`` arguments) where the step needs them, and ``xfail=`` for known
failures. The checks include three that run in child processes: ``replicas``,
the step under ``MirroredStrategy`` over 2 logical CPU devices
(:mod:`stepkit.testing.replicas`); ``resume``, a fit killed with SIGKILL
mid-epoch and resumed with ``BackupAndRestore`` against an uninterrupted one
(:mod:`stepkit.testing.resume`); and ``multiworker``, 2 workers under
``MultiWorkerMirroredStrategy`` started by ``stepkit.launch``
(:mod:`stepkit.testing.multiworker`). ``backends="all"`` runs every check on
TensorFlow, JAX and torch, each backend other than this process' in a child
process (:mod:`stepkit.testing.backends`); checks a backend cannot run are
skipped with the reason, and a failure on a backend names its likely cause
(:mod:`stepkit.testing.diagnose`). ``wrappers=`` checks the step under a
stack of step wrappers, in every model and child process. The
pytest plugin also offers the ``stepkit_conformance`` fixture, which is
:func:`run_conformance`, and ``pytest --stepkit-step NAME``, which checks an
installed step on a generic sample of its data kind
(:mod:`stepkit.testing.generic`), on the backends ``--stepkit-backend`` names,
under the wrappers ``--stepkit-wrap`` stacks.
Importing this package does not import
TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepkit.testing._harness import ConformanceError, Sample

__all__ = ["BACKENDS", "CHECK_NAMES", "ConformanceError", "Sample", "conformance_tests",
           "run_conformance"]

#: The Keras backends the kit checks on (``backends="all"``).
BACKENDS = ("tensorflow", "jax", "torch")

# The names of stepkit.testing.checks.ALL_CHECKS and REPLICA_CHECKS, kept here so that collecting
# tests does not import TensorFlow.
CHECK_NAMES = ("fit", "fit_eager", "evaluate", "predict", "epoch_means", "config_roundtrip",
               "save_load", "jit_compile", "steps_per_execution", "mixed_precision", "replicas",
               "resume", "multiworker")


def __getattr__(name: str) -> Any:
    if name in ("ConformanceError", "Sample"):
        from stepkit.testing import _harness

        return getattr(_harness, name)
    raise AttributeError(f"module 'stepkit.testing' has no attribute {name!r}")


def run_conformance(step: str, sample: Any, networks: Any = None, config: Any = None,
                    checks: Any = None, *, compile: Any = None, backend: str | None = None,
                    wrappers: Any = None) -> dict[str, dict]:
    """Run the conformance checks on ``step``; see :mod:`stepkit.testing.checks`.

    ``backend`` runs them on that Keras backend, in a child process when it is not
    this process' one. A check that cannot run there reports ``{"skipped": reason}``.
    ``wrappers`` checks the step under that wrapper stack (what
    ``StepModel(wrappers=...)`` takes, outermost first): every model of every
    check, child processes included, is built with it, and a failure's message
    names the stack (``step 'gan' wrapped in ema > sam``).

    Example::

        report = run_conformance("vae", Sample(x[:40]), checks=["fit", "save_load"])
        report = run_conformance("vae", Sample(x[:40]), checks=["fit"], backend="jax")
        report = run_conformance("vae", Sample(x[:40]), checks=["resume"],
                                 wrappers=[{"name": "lookahead", "k": 2}])
    """
    from stepkit.testing.checks import run_conformance as run

    __tracebackhide__ = True  # pytest shows the check's message, not the kit's frames
    return run(step, sample, networks, config, checks, compile=compile, backend=backend,
               wrappers=wrappers)


def conformance_tests(step: str, sample: Any, networks: Any = None, config: Any = None, *,
                      compile: Any = None, checks: Any = None, skip: Any = (),
                      xfail: Any = None, backends: Any = None,
                      wrappers: Any = None) -> dict[str, Any]:
    """pytest test functions ``test_conformance_<check>``, one per check, per backend.

    Put them in a test module with ``globals().update(conformance_tests(...))``.
    ``sample`` may be a callable, so data is made only when a test runs.
    ``checks`` picks the checks (default: all of :data:`CHECK_NAMES`) and
    ``skip`` leaves some out. ``backends`` names the Keras backends to check on:
    a name, several, or ``"all"`` (tensorflow, jax, torch); default: this
    process' one. Each test is parametrized by backend, so its id shows it
    (``test_conformance_fit[jax]``); a backend other than the process' runs in
    a child process, and a check that cannot run on a backend is skipped with
    the reason. ``xfail`` maps check names to why they are known to fail: a
    reason string (the check may fail with any exception, a crash included),
    or ``(reason, exception)`` where ``exception`` is an exception class or a
    tuple of them (``ConformanceError`` for a broken contract, say) and any
    other exception fails the test. Those tests are marked
    ``pytest.mark.xfail(strict=True)``, so a fix makes them fail until the mark
    is removed. A key ``"check[backend]"`` in ``skip`` or ``xfail`` applies to
    that backend only.

    ``wrappers`` checks the step under a wrapper stack, as :func:`run_conformance`
    does; the tests are then named after it, ``test_conformance_<check>_wrapped_
    <names>`` (``test_conformance_resume_wrapped_lookahead_ema[tensorflow]``), so
    one module can hold the bare step's tests and a wrapped one's.

    Example::

        globals().update(conformance_tests(
            "vae", sample=make_sample, skip=["jit_compile"], backends="all",
            xfail={"multiworker": "hangs on 2 workers, issue 7",
                   "save_load[torch]": ("custom layer not registered", TypeError)}))
        globals().update(conformance_tests(
            "vae", sample=make_sample, checks=["save_load", "resume"], wrappers=["lookahead"]))
    """
    import pytest

    from stepkit.testing._wrappers import as_specs, stack_label, stack_slug
    from stepkit.testing.backends import resolve_backends

    chosen = resolve_backends(backends)
    stack = as_specs(wrappers)
    suffix = f"_wrapped_{stack_slug(stack)}" if stack else ""
    what = f"step {step!r}" + (f" wrapped in {stack_label(stack)}" if stack else "")
    marks = {_key(k, "xfail"): _xfail_mark(k, v) for k, v in dict(xfail or {}).items()}
    skipped = {_key(k, "skip") for k in ([skip] if isinstance(skip, str) else skip)}
    names = [n for n in (CHECK_NAMES if checks is None else checks) if (n, None) not in skipped]
    unknown = [n for n in [*names, *(k for k, _ in skipped), *(k for k, _ in marks)]
               if n not in CHECK_NAMES]
    if unknown:
        raise ValueError(f"Unknown conformance check(s) {unknown}. Valid checks: "
                         f"{', '.join(CHECK_NAMES)}.")

    def make(name: str) -> Any:
        params = [pytest.param(b, id=b, marks=[m for m in [marks.get((name, b)) or
                                                           marks.get((name, None))] if m])
                  for b in chosen if (name, b) not in skipped]

        def test(keras_backend: str) -> None:
            _run_test(step, sample, networks, config, name, compile, keras_backend, stack)

        test.__name__ = f"test_conformance_{name}{suffix}"
        test.__qualname__ = test.__name__
        test.__doc__ = f"stepkit conformance check {name!r} on {what}."
        return pytest.mark.parametrize("keras_backend", params)(test) if params else None

    tests = {f"test_conformance_{n}{suffix}": make(n) for n in names}
    return {k: t for k, t in tests.items() if t is not None}


def _key(key: Any, option: str) -> tuple[str, str | None]:
    """``"fit"`` -> ``("fit", None)``; ``"fit[jax]"`` -> ``("fit", "jax")``."""
    from stepkit.testing.backends import SUPPORTED

    name, _, rest = str(key).partition("[")
    backend = rest[:-1] if rest.endswith("]") else None
    if rest and backend not in SUPPORTED:
        raise ValueError(f"`{option}` key {key!r}: write a check name, or 'check[backend]' with "
                         f"a backend among {', '.join(SUPPORTED)}.")
    return name, backend


def _run_test(step: str, sample: Any, networks: Any, config: Any, name: str, compile: Any,
              backend: str, wrappers: Any = ()) -> None:
    import pytest

    from stepkit.testing.backends import skip_reason

    __tracebackhide__ = True
    reason = skip_reason(name, backend)
    if reason:  # known without starting a child process
        pytest.skip(reason)
    report = run_conformance(step, sample, networks, config, [name], compile=compile,
                             backend=backend, wrappers=list(wrappers) or None)
    if set(report[name]) == {"skipped"}:
        pytest.skip(report[name]["skipped"])


def _xfail_mark(name: str, value: Any) -> Any:
    """``pytest.mark.xfail(strict=True, ...)`` from ``"reason"`` or ``(reason, exception)``."""
    import pytest

    reason, raises = (value, None) if isinstance(value, str) else (None, None)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        reason, raises = value
        types = raises if isinstance(raises, tuple) else (raises,)
        if not types or not all(isinstance(t, type) and issubclass(t, BaseException)
                                for t in types):
            reason = None
    if reason is None:
        raise TypeError(
            f"xfail[{name!r}] must be a reason string, or a tuple (reason, exception) whose "
            "exception is an exception class or a tuple of them, e.g. "
            f"xfail={{{name!r}: ('crashes on dict inputs', IndexError)}}. Received: {value!r}.")
    return pytest.mark.xfail(raises=raises, reason=reason, strict=True)
