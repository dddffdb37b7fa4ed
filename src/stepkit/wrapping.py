"""Running a step through its stack of wrappers (see :mod:`stepkit.wrapper`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stepkit.context import StepContext, StepHost
from stepkit.wrapper import Wrapper


class WrappedContext(StepContext):
    """A :class:`StepContext` whose gradients, updates and compiled loss go through wrappers.

    The step calls ``ctx.gradients`` / ``ctx.apply_gradients`` / ``ctx.minimize``
    / ``ctx.compute_loss`` as always; each call enters the outermost wrapper
    that applies to the role, which calls ``inner`` to reach the next one and
    finally the framework's own :class:`StepContext` method.
    """

    def __init__(self, host: StepHost, wrappers: Sequence[Wrapper]) -> None:
        super().__init__(host)
        self.wrappers = tuple(wrappers)

    def _next(self, start: int, role: str | None) -> int:
        i = start
        while i < len(self.wrappers) and role is not None and role not in self.wrappers[i].roles:
            i += 1
        return i

    def gradients(self, role: str, loss_fn: Callable[[], Any],
                  regularization: bool = True) -> tuple[list[Any], Any]:
        return self._gradients_from(0, role, loss_fn, regularization)

    def _gradients_from(self, start: int, role: str, loss_fn: Callable[[], Any],
                        regularization: bool = True) -> tuple[list[Any], Any]:
        i = self._next(start, role)
        if i == len(self.wrappers):
            return StepContext.gradients(self, role, loss_fn, regularization)

        def inner(r: str, f: Callable[[], Any], reg: bool = True) -> tuple[list[Any], Any]:
            return self._gradients_from(i + 1, r, f, reg)

        return self.wrappers[i].gradients(self, role, loss_fn, regularization, inner)

    def apply_gradients(self, role: str, grads: Sequence[Any]) -> None:
        self._apply_from(0, role, grads)

    def _apply_from(self, start: int, role: str, grads: Sequence[Any]) -> None:
        i = self._next(start, role)
        if i == len(self.wrappers):
            StepContext.apply_gradients(self, role, grads)
            return
        self.wrappers[i].apply_gradients(
            self, role, grads, lambda r, g: self._apply_from(i + 1, r, g))

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None,
                     training: bool = True) -> Any:
        def run(i: int, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
            if i == len(self.wrappers):
                return StepContext.compute_loss(self, x, y, y_pred, sample_weight, training)
            return self.wrappers[i].compute_loss(
                self, x, y, y_pred, sample_weight, lambda *a: run(i + 1, *a))

        return run(0, x, y, y_pred, sample_weight)


def run_step(ctx: StepContext, method: str, data: Any) -> Any:
    """``step.train_step`` / ``test_step`` on ``data``, through the wrappers' hooks."""
    wrappers = getattr(ctx, "wrappers", ())

    def run(i: int, d: Any) -> Any:
        if i == len(wrappers):
            return getattr(ctx.step, method)(ctx, d)
        return getattr(wrappers[i], method)(ctx, d, lambda d2: run(i + 1, d2))

    return run(0, data)


def run_call(ctx: StepContext, inputs: Any, training: bool) -> Any:
    """``step.call`` (``model(inputs)``, ``predict``) through the wrappers' ``call`` hooks."""
    wrappers = getattr(ctx, "wrappers", ())

    def run(i: int, x: Any, t: bool) -> Any:
        if i == len(wrappers):
            return ctx.step.call(ctx, x, training=t)
        return wrappers[i].call(ctx, x, t, lambda x2, t2: run(i + 1, x2, t2))

    return run(0, inputs, training)
