"""Learning-rate callbacks with several optimizers.

Keras' ``LearningRateScheduler`` and ``ReduceLROnPlateau`` change
``model.optimizer``, which in a :class:`stepkit.StepModel` is the first role's
optimizer. The rule: every other role's learning rate is multiplied by the same
factor, so the ratios between roles set at ``compile()`` are kept (a GAN's
4e-4 / 1e-4 stays 4:1), and where Keras logs ``learning_rate`` each role's
rate is logged too, as ``<role>_learning_rate``. Optimizers whose learning
rate is a ``LearningRateSchedule`` follow their schedule and are left alone.
"""

from __future__ import annotations

from typing import Any

import keras


def _rate(optimizer: Any) -> float | None:
    """The optimizer's current learning rate; None when it follows a schedule.

    ``optimizer.learning_rate`` of a scheduled optimizer is the schedule's current
    value, so the schedule is read from ``_learning_rate`` (private Keras API, pinned
    in tests/test_keras_private_api.py) of the optimizer a ``LossScaleOptimizer`` wraps.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class RoleLearningRates(keras.callbacks.Callback):
    """Added by ``StepModel.fit`` for steps with several optimizers (runs last)."""

    def on_train_begin(self, logs: Any = None) -> None:
        self._first = _rate(self.model.optimizer)

    def _follow(self) -> None:
        now = _rate(self.model.optimizer)
        if now is None or self._first is None or now == self._first:
            return
        factor = now / self._first if self._first else 0.0
        for _role, opt in self.model.optimizers.items():
            if opt is self.model.optimizer:
                continue
            rate = _rate(opt)
            if rate is not None:
                opt.learning_rate = rate * factor
        self._first = now

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._follow()
        # What Keras logs as `learning_rate` is the rate this epoch ran with.
        self._epoch_rates = {role: _rate(opt) for role, opt in self.model.optimizers.items()}

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._follow()
        if logs is not None and "learning_rate" in logs:
            for role, rate in self._epoch_rates.items():
                if rate is not None:
                    logs[f"{role}_learning_rate"] = rate


def with_role_learning_rates(callbacks: Any, model: Any) -> Any:
    """``callbacks`` plus a :class:`RoleLearningRates` when the model has several optimizers."""
    if isinstance(callbacks, keras.callbacks.CallbackList) or len(model.optimizers) < 2:
        return callbacks
    return [*list(callbacks or []), RoleLearningRates()]
