"""Naming the call when a step uses another backend's API directly.

A step that calls ``tf.reduce_mean`` or ``tf.GradientTape`` works on TensorFlow
and fails on JAX or torch deep inside TensorFlow, with a message about tensor
types. :func:`foreign_call` finds, in the exception's traceback, the first call
from code outside Keras and the backend packages into a package of another
backend, so that the error can name the line of the step that made it.
"""

from __future__ import annotations

import traceback
from typing import Any

BACKEND_PACKAGES = ("tensorflow", "jax", "jaxlib", "torch")
_LIBRARIES = (*BACKEND_PACKAGES, "keras", "tf_keras", "numpy", "optree", "stepkit.backend")


def _module(frame: Any) -> str:
    return frame.f_globals.get("__name__", "") or ""


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def foreign_call(exc: BaseException, backend: str) -> str | None:
    """``"file:line: code (calls <package>)"`` of the call into another backend, or None."""
    current = ("jax", "jaxlib") if backend == "jax" else (backend,)
    foreign = tuple(p for p in BACKEND_PACKAGES if p not in current)
    frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
    lines = [line for _, line in traceback.walk_tb(exc.__traceback__)]
    for i in range(1, len(frames)):
        module = _module(frames[i])
        caller = _module(frames[i - 1])
        if _in(module, foreign) and not _in(caller, _LIBRARIES):
            code = frames[i - 1].f_code
            summary = traceback.FrameSummary(code.co_filename, lines[i - 1], code.co_name)
            package = module.split(".")[0]
            return (f"{code.co_filename}:{lines[i - 1]}: {(summary.line or '').strip()} "
                    f"(calls {package})")
    return None


def foreign_api_error(step: Any, exc: BaseException, backend: str) -> Exception | None:
    """The :class:`stepkit.StepDefinitionError` to raise for ``exc``, or None if not foreign."""
    from stepkit.errors import StepDefinitionError

    where = foreign_call(exc, backend)
    if where is None:
        return None
    return StepDefinitionError(
        f"Step {step.name!r} ({type(step).__module__}) calls another backend's API while "
        f"Keras runs on {backend!r}: {where}. It failed with {type(exc).__name__}: "
        f"{str(exc)[:300].rstrip('.')}. A step runs on every backend only through keras.ops "
        "and the StepContext (ctx.minimize, ctx.gradients, ctx.normal, ctx.cond...): replace "
        "that call with its keras.ops equivalent."
    )
