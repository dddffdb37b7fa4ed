"""``ema``: an exponential moving average of each role's weights (Polyak averaging).

After every optimizer update of a role, ``shadow = decay * shadow + (1 - decay)
* weight`` for each variable the role's optimizer trains (Polyak & Juditsky
1992; the exponential form of Keras' optimizer option ``use_ema``, whose
conventions are kept: the first update of the optimizer sets the shadow to the
weights, and non-trainable weights such as batch-norm statistics are used as
they are). ``evaluate`` and ``predict`` / ``model(x)`` use the averaged
weights by default; the shadows are weights of the model, so saving, loading
and ``BackupAndRestore`` keep them.

What the wrapper adds to ``use_ema`` + ``keras.callbacks.SwapEMAWeights``
(which give the same numbers for one role): any role or several (a GAN's
generator only), ``predict`` and sampling from the averages without swapping
weights, saved averages that predict uses after loading, and the same code on
every backend and under replicas (nothing is swapped during ``fit``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import attrs
from attrs import validators as v
from keras import ops

from stepkit.averaging import Averages
from stepkit.wrapper import Wrapper

__all__ = ["EMA", "EMAConfig"]

USES = ("averaged", "raw")


@attrs.frozen
class EMAConfig:
    """Settings of the ``ema`` wrapper.

    Attributes:
        decay: the EMA decay in [0, 1] (Keras' ``ema_momentum``); 0.999 averages
            over about the last 1000 updates.
        evaluate_with: the weights ``evaluate`` (and ``fit``'s validation) uses:
            ``"averaged"`` (default) or ``"raw"``.
        predict_with: the weights ``predict``, ``model(x)`` and sampling use:
            ``"averaged"`` (default) or ``"raw"``.
    """

    decay: float = attrs.field(default=0.999, converter=float,
                               validator=[v.ge(0.0), v.le(1.0)])
    evaluate_with: str = attrs.field(default="averaged", validator=v.in_(USES))
    predict_with: str = attrs.field(default="averaged", validator=v.in_(USES))


class EMA(Wrapper):
    """Exponential moving average of the weights of the wrapped step's roles.

    The average moves only when the role's optimizer really updated the
    weights, that is when its ``iterations`` moved: a ``LossScaleOptimizer``
    skips non-finite steps, Keras' ``gradient_accumulation_steps=N`` and the
    ``accumulate`` wrapper update every N-th time. So ``ema`` stacks with
    ``accumulate`` in either order and averages once per real update.

    State: one shadow per variable of each role, named ``ema__<role>_<i>``.

    Example::

        StepModel(net, step="supervised", wrappers=[{"name": "ema", "decay": 0.99}])
        StepModel(step="gan", wrappers=[{"name": "ema", "roles": ["generator"]}])
        with model.wrappers[0].averaged_weights():   # e.g. save the averaged network
            model.networks["generator"].save("generator.keras")
    """

    name = "ema"
    description = "Exponential moving average of the weights (Polyak); evaluate/predict with it."
    config_class = EMAConfig

    def __init__(self, config: Any = None, roles: Sequence[str] | None = None) -> None:
        super().__init__(config, roles)
        self.averages: dict[str, Averages] = {}
        self._running = False  # inside our train/test step: model(x) is the step's own

    def build_state(self, ctx: Any) -> None:
        self.averages = {role: Averages(ctx.variables(role), partial(self.add_state, ctx), role)
                         for role in self.roles}

    def apply_gradients(self, ctx: Any, role: str, grads: Sequence[Any],
                        inner: Callable[[str, Sequence[Any]], None]) -> None:
        optimizer = ctx.optimizers[role]
        before = ops.copy(ops.convert_to_tensor(optimizer.iterations))
        inner(role, grads)
        # Keras' `iterations` counts real updates (with gradient_accumulation_steps too)
        moved = ops.not_equal(ops.convert_to_tensor(optimizer.iterations), before)
        first = ops.logical_and(moved, ops.equal(before, 0))
        self.averages[role].update(ops.where(moved, self.config.decay, 1.0), first_step=first)

    def _others(self, ctx: Any) -> list[Any]:
        return [*ctx.model.variables, *ctx.model.metrics_variables]

    def _merged(self) -> Averages:
        return Averages.combine(list(self.averages.values()))

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        self._running = True
        try:
            yield
        finally:
            self._running = False

    def train_step(self, ctx: Any, data: Any, inner: Callable[[Any], None]) -> None:
        with self._step():
            inner(data)

    def test_step(self, ctx: Any, data: Any, inner: Callable[[Any], None]) -> None:
        with self._step():
            if self.config.evaluate_with == "raw":
                inner(data)
            else:
                self._merged().run_averaged(lambda: inner(data), self._others(ctx))

    def call(self, ctx: Any, inputs: Any, training: bool,
             inner: Callable[[Any, bool], Any]) -> Any:
        if training or self._running or self.config.predict_with == "raw":
            return inner(inputs, training)
        with self._merged().scope(self._others(ctx)):
            return inner(inputs, training)

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Eagerly (outside ``fit``) put the averages into the networks, then restore them.

        For saving or exporting a bare network with its averaged weights. Not
        for use inside a training step.
        """
        merged = self._merged()
        raw = [ops.convert_to_numpy(var) for var in merged.variables]
        for var, shadow in zip(merged.variables, merged.shadows, strict=True):
            var.assign(shadow)
        try:
            yield
        finally:
            for var, value in zip(merged.variables, raw, strict=True):
                var.assign(value)
