"""Compiling a :class:`stepkit.StepModel`: one optimizer per role, each loss-scaled as needed.

Keras' ``compile()`` takes one optimizer and wraps it in a ``LossScaleOptimizer``
when the model's policy is ``mixed_float16``. A step trains several roles: each
gets its own optimizer (omitted ones come from the step's defaults), and each is
a ``LossScaleOptimizer`` exactly once whenever the global policy or the role's
own network computes in float16, whether or not the user wrapped it already.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras.src.saving import serialization_lib

from stepkit import losses
from stepkit.errors import StepDefinitionError


def _dtype_policies(layer: Any) -> list[Any]:
    """The dtype policies of ``layer`` and of every layer inside it."""
    found = [layer.dtype_policy]
    for sub in getattr(layer, "layers", None) or ():
        found.extend(_dtype_policies(sub))
    return found


class CompileMixin:
    """``compile`` and the per-role optimizers of :class:`stepkit.StepModel`."""

    def compile(self, optimizer: Any = None, loss: Any = None, loss_weights: Any = None,
                metrics: Any = None, weighted_metrics: Any = None, run_eagerly: bool = False,
                steps_per_execution: int = 1, jit_compile: Any = "auto",
                auto_scale_loss: bool = True) -> None:
        """Like ``keras.Model.compile``; ``optimizer`` may be a dict from role to optimizer.

        Omitted optimizers and loss come from the step's defaults.
        """
        step = self.step
        optimizers = self._resolve_optimizers(optimizer)
        keras_loss = None
        self._step_loss = None
        if step.loss_kind == "keras":
            keras_loss = loss if loss is not None else step.default_loss()
        elif step.loss_kind == "step":
            self._step_loss = losses.get(loss if loss is not None else step.default_loss())
        elif loss is not None:
            raise ValueError(
                f"Step {step.name!r} takes no `loss` in compile(): the step computes its own "
                f"losses (see `stepkit info {step.name}` for what its config can change). "
                f"Received: loss={loss!r}. Remove loss= from compile()."
            )
        if (metrics or weighted_metrics) and not step.uses_compile_metrics:
            raise ValueError(
                f"Step {step.name!r} does not use compile metrics (it reports "
                f"{', '.join(step.tracked)}). Received: metrics={metrics!r}, "
                f"weighted_metrics={weighted_metrics!r}."
            )
        roles = step.trained_roles()
        # Loss scaling is decided per role below, not by Keras for the first role only.
        super().compile(optimizer=optimizers[roles[0]], loss=keras_loss,
                        loss_weights=loss_weights, metrics=metrics,
                        weighted_metrics=weighted_metrics, run_eagerly=run_eagerly,
                        steps_per_execution=steps_per_execution, jit_compile=jit_compile,
                        auto_scale_loss=False)
        self._role_optimizers = {
            role: self._with_loss_scaling(role, optimizers[role], auto_scale_loss)
            for role in roles}
        for wrapper in reversed(self._wrappers):  # the innermost wrapper sees it first
            for role in wrapper.roles:
                self._role_optimizers[role] = wrapper.configure_optimizer(
                    role, self._role_optimizers[role])
        self.optimizer = self._role_optimizers[roles[0]]
        if "loss" not in step.tracked:
            self._loss_tracker = None
        self._compile_config = serialization_lib.SerializableDict(
            optimizer=optimizers, loss=loss, loss_weights=loss_weights, metrics=metrics,
            weighted_metrics=weighted_metrics, run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution, jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss)
        if self.built:
            self._build_optimizers()

    def _with_loss_scaling(self, role: str, optimizer: Any, auto_scale_loss: bool) -> Any:
        # Every role's optimizer is a LossScaleOptimizer exactly once when its network
        # computes in float16 (the global policy, or the network's own policy).
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or not auto_scale_loss:
            return optimizer
        net = self._networks.get(role)
        policies = [self.dtype_policy, *([] if net is None else _dtype_policies(net))]
        if any(p.compute_dtype == "float16" for p in policies):
            return keras.optimizers.LossScaleOptimizer(optimizer,
                                                      name=f"{role}_loss_scale_optimizer")
        return optimizer

    def _resolve_optimizers(self, optimizer: Any) -> dict[str, Any]:
        roles = self.step.trained_roles()
        if optimizer is None:
            spec = dict(self.step.default_optimizers())
        elif isinstance(optimizer, Mapping):
            unknown = [r for r in optimizer if r not in roles]
            if unknown:
                raise ValueError(
                    f"The optimizer dict for step {self.step.name!r} names unknown role(s) "
                    f"{unknown}. Its optimizer roles: {', '.join(roles)} (roles left out get "
                    f"the step's default). Received keys: {list(optimizer)}."
                )
            defaults = self.step.default_optimizers()
            spec = {r: optimizer[r] if r in optimizer else defaults.get(r) for r in roles}
        elif len(roles) == 1:
            spec = {roles[0]: optimizer}
        elif isinstance(optimizer, str):
            spec = {role: optimizer for role in roles}  # a fresh optimizer per role
        else:
            raise ValueError(
                f"Step {self.step.name!r} trains {len(roles)} roles ({', '.join(roles)}), each "
                "with its own optimizer: pass optimizer={"
                + ", ".join(f"{r!r}: ..." for r in roles)
                + "} (roles left out get the step's default) or an optimizer name. "
                f"Received: optimizer={optimizer!r}."
            )
        missing = [r for r in roles if spec.get(r) is None]
        if missing:
            raise StepDefinitionError(
                f"Step {self.step.name!r}: default_optimizers() has no optimizer for role(s) "
                f"{missing}; pass compile(optimizer={{...}}) naming them."
            )
        resolved = {role: keras.optimizers.get(spec[role]) for role in roles}
        ids = [id(o) for o in resolved.values()]
        if len(set(ids)) != len(ids):
            raise ValueError(
                "The same optimizer instance was given for several roles; each role needs its "
                "own optimizer (its own slots and iterations). Pass separate instances."
            )
        return resolved

    def get_compile_config(self) -> dict[str, Any]:
        if self.compiled and hasattr(self, "_compile_config"):
            return self._compile_config.serialize()
        return {}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        config = serialization_lib.deserialize_keras_object(config)
        self.compile(**config)

    def _build_optimizers(self) -> None:
        for role, opt in self._role_optimizers.items():
            variables = self._variables_for(role)
            if not opt.built and variables:  # a frozen role's optimizer builds when it trains
                opt.build(variables)

    def _optimizer_for(self, role: str) -> Any:
        opts = getattr(self, "_role_optimizers", None)
        if not opts:
            raise RuntimeError("The model is not compiled: call compile() before training.")
        if role not in opts:
            raise StepDefinitionError(
                f"Step {self.step.name!r} asked for optimizer {role!r}; its optimizer roles are "
                f"{list(opts)}."
            )
        return opts[role]
