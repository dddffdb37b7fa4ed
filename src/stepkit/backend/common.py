"""What the JAX and torch trainers share: Keras runs their epoch loop in Python.

Keras' TensorFlow trainer runs ``steps_per_execution`` batches inside one
``tf.function``, so a resumed run skips batches with a ``tf.cond`` in the
step. The JAX and torch trainers call a compiled step once per batch from
Python, so skipping is done there, before any step is traced: the batch is
read from the iterator (keeping the data order) and no step runs.
"""

from __future__ import annotations

import contextlib
from typing import Any


class PythonLoopTrainer:
    """Mixin of :class:`stepkit.StepModel` for backends whose batch loop is Python."""

    def _build_scope(self) -> Any:
        # keras.distribution (JAX) places variables by their path when they are created,
        # from the distribution set globally or by `distribution.scope()`: nothing to enter.
        return contextlib.nullcontext()

    def _multi_worker(self) -> bool:
        return False

    def _symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # The TF trainer calls _maybe_symbolic_build; the JAX and torch trainers call
        # _symbolic_build directly. stepkit builds in one place for all three.
        self._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _set_resume_skip(self, batches: int) -> None:
        object.__setattr__(self, "_skip_batches", max(int(batches), 0))

    def make_train_function(self, force: bool = False) -> Any:
        result = super().make_train_function(force=force)
        inner = self.train_function
        if getattr(inner, "_stepkit_skipping", False):
            return result

        def train_function(*args: Any) -> Any:
            skip = self.__dict__.get("_skip_batches", 0)
            if skip <= 0:
                return inner(*args)
            logs: dict[str, Any] = {}
            if len(args) == 2:  # JAX: (state, iterator); read the batches, run no step
                state, iterator = args
                for _ in range(min(skip, self.steps_per_execution)):
                    next(iterator)
                    skip -= 1
                object.__setattr__(self, "_skip_batches", skip)
                return logs, state
            object.__setattr__(self, "_skip_batches", skip - len(args[0]))  # torch: [batch]
            return logs

        train_function._stepkit_skipping = True
        self.train_function = train_function
        return result
