"""The :class:`stepkit.StepModel` as its :class:`stepkit.StepContext` sees it."""

from __future__ import annotations

from typing import Any


class ModelHost:
    """The model as its :class:`StepContext` sees it (:class:`stepkit.context.StepHost`)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    step = property(lambda self: self.model.step)
    networks = property(lambda self: self.model.networks)
    optimizers = property(lambda self: self.model.optimizers)
    iterations = property(lambda self: self.model._step_counter)
    step_loss = property(lambda self: self.model._step_loss)
    compiled_loss = property(lambda self: self.model._compile_loss)
    compiled_metrics = property(lambda self: self.model._compile_metrics)
    network_losses = property(lambda self: self.model.losses)
    step_state = property(lambda self: self.model._step_state)

    def variables_for(self, role: str) -> list[Any]:
        return self.model._variables_for(role)

    def optimizer_for(self, role: str) -> Any:
        return self.model._optimizer_for(role)

    def tracker_for(self, name: str) -> Any:
        return self.model._tracker_for(name)

    def next_seed(self) -> Any:
        return self.model._seed_generator.next()

    def add_step_state(self, name: str, shape: Any, dtype: str, initializer: Any) -> Any:
        return self.model._add_step_state(name, shape, dtype, initializer)
