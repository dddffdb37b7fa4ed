"""Running one check on this process' backend: skips, and failures that name the cause.

Example::

    from stepkit.testing.runner import run_check
    from stepkit.testing.checks import check_fit

    run_check("fit", check_fit.case_fn, case)   # {"history": ...} or {"skipped": why}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

import stepkit
from stepkit.testing._harness import Case, ConformanceError
from stepkit.testing.backends import CheckSkipped, skip_reason
from stepkit.testing.diagnose import explain, keras_limitation

__all__ = ["run_check"]


def _step_class(step: str) -> type | None:
    try:
        return stepkit.get_step(step)
    except Exception:  # noqa: BLE001 - no class to scan; the check's own error stands
        return None


def run_check(name: str, check: Callable[[Case], dict], case: Case) -> dict[str, Any]:
    """``check(case)``, or ``{"skipped": reason}`` where it cannot run on this backend.

    A ConformanceError gets the likely cause appended when one is found. Any other
    exception becomes a ConformanceError when the step broke the contract in a way
    :func:`~stepkit.testing.diagnose.explain` recognises (another backend's API, a
    Python branch on a traced value); otherwise it is raised as it is, with a note
    naming the check, the step, the backend and any known Keras limitation.
    """
    backend = keras.backend.backend()
    reason = skip_reason(name, backend)
    if reason:
        return {"skipped": reason}
    try:
        return check(case)
    except CheckSkipped as exc:
        return {"skipped": str(exc)}
    except ConformanceError as exc:
        cause = explain(None, backend, _step_class(case.step), text=str(exc)) or (
            keras_limitation(None, backend, str(exc)))
        if cause is None:
            raise
        raise ConformanceError(f"{exc}\nLikely cause on {backend}: {cause}") from exc
    except Exception as exc:
        cause = explain(exc, backend, _step_class(case.step))
        if cause is None:
            limit = keras_limitation(exc, backend)
            exc.add_note(f"stepkit conformance: check {name!r} of {case.label} failed on "
                         f"Keras' {backend} backend." + (f" Likely cause: {limit}" if limit
                                                         else ""))
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ConformanceError(f"[{name}] {case.label} on {backend}: {cause}\nIt failed "
                               f"with {type(exc).__name__}: {first}") from exc
