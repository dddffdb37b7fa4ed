"""Exponential moving averages of variables (Polyak averaging), on every Keras backend.

An :class:`Averages` keeps one *shadow* variable per averaged variable and
updates it with ``shadow = decay * shadow + (1 - decay) * variable``, the
"Polyak averaging" of Polyak & Juditsky (1992, "Acceleration of stochastic
approximation by averaging") in the exponential form of Keras' optimizer option
``use_ema`` (``keras/src/optimizers/base_optimizer.py``). Code can then run
with the averaged weights without touching the raw ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
from keras import ops


def _copy_of(variable: Any) -> Callable[..., Any]:
    """An initializer giving ``variable``'s value at creation (any backend, any strategy)."""
    def initializer(shape: Any, dtype: Any = None) -> Any:
        return ops.cast(ops.copy(ops.convert_to_tensor(variable)), dtype or variable.dtype)

    return initializer


class Averages:
    """Shadow variables holding the exponential moving average of ``variables``.

    Args:
        variables: the variables to average (e.g. ``ctx.variables("generator")``).
        add_state: ``add_state(name, shape, dtype, initializer) -> variable``,
            which creates a saved, non-trainable variable (``Wrapper.add_state``
            bound to a context, ``StepContext.add_state``).
        prefix: prefix of the shadows' state names (``"<prefix>_<index>"``).

    Each shadow has its variable's shape and dtype and starts at its value.

    Example::

        avg = Averages(ctx.variables("generator"), partial(self.add_state, ctx), "generator")
        avg.update(0.999)                 # after each optimizer update
        with avg.scope(ctx.model.variables):
            images = generator(z)         # computed with the averaged weights
    """

    def __init__(self, variables: Sequence[Any], add_state: Callable[..., Any],
                 prefix: str = "average") -> None:
        self.variables = list(variables)
        self.shadows = [add_state(f"{prefix}_{i}", tuple(v.shape), v.dtype, _copy_of(v))
                        for i, v in enumerate(self.variables)]

    @classmethod
    def combine(cls, parts: Sequence[Averages]) -> Averages:
        """One :class:`Averages` over the variables and shadows of ``parts`` (no new state)."""
        out = cls.__new__(cls)
        out.variables = [v for p in parts for v in p.variables]
        out.shadows = [s for p in parts for s in p.shadows]
        return out

    def update(self, decay: Any, first_step: Any = None) -> None:
        """``shadow = decay * shadow + (1 - decay) * variable`` for every variable.

        Args:
            decay: a float or scalar tensor in [0, 1].
            first_step: optional boolean scalar; where true the shadow is set to
                the variable (decay 0), Keras' ``use_ema`` convention for the
                optimizer's first iteration.
        """
        if first_step is not None:  # once per update, not once per variable
            decay = ops.where(first_step, 0.0, ops.cast(decay, "float32"))
        by_dtype: dict[str, Any] = {}
        for var, shadow in zip(self.variables, self.shadows, strict=True):
            if shadow.dtype not in by_dtype:
                by_dtype[shadow.dtype] = ops.cast(decay, shadow.dtype)
            d = by_dtype[shadow.dtype]
            value = var.value if var.dtype == shadow.dtype else ops.cast(var.value, shadow.dtype)
            shadow.assign(d * shadow.value + (1 - d) * value)

    def _mapping(self, others: Sequence[Any]) -> list[tuple[Any, Any]]:
        pairs = [(v, s.value) for v, s in zip(self.variables, self.shadows, strict=True)]
        seen = {id(v) for v in self.variables}
        for o in others:
            if id(o) not in seen:
                seen.add(id(o))
                pairs.append((o, o.value))
        return pairs

    @contextlib.contextmanager
    def scope(self, others: Sequence[Any] = ()) -> Iterator[keras.StatelessScope]:
        """A ``keras.StatelessScope`` in which the variables read as their averages.

        For inference (``predict``, sampling): updates made inside are dropped.
        ``others`` are the other variables the code reads (``ctx.model.variables``):
        they keep their current values, which matters when the code already runs
        in a stateless scope (JAX's compiled steps), whose mapping a nested scope
        does not inherit.
        """
        with keras.StatelessScope(state_mapping=self._mapping(others)) as scope:
            yield scope

    def run_averaged(self, fn: Callable[[], Any], others: Sequence[Any]) -> Any:
        """``fn()`` with the variables read as their averages; other updates are kept.

        For evaluation: metric and tracker updates made by ``fn`` on ``others``
        (pass ``ctx.model.variables``) are written back after the scope, so
        nothing is swapped and the raw weights are never assigned (which also
        holds in a ``MirroredStrategy`` replica).
        """
        mapping = self._mapping(others)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            start = {id(v): scope.get_current_value(v) for v, _ in mapping}
            out = fn()
        averaged = {id(v) for v in self.variables}
        for var, _ in mapping:
            new = scope.get_current_value(var)
            if id(var) not in averaged and new is not start[id(var)]:
                var.assign(new)
        return out
