"""Exceptions raised by stepkit.

Every error says what was wrong, what was received and how to fix it.
"""

from __future__ import annotations


class StepkitError(Exception):
    """Base class of every error stepkit raises on purpose."""


class UnknownStepError(StepkitError, KeyError):
    """No installed step has the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message.
        return str(self.args[0])


class DuplicateStepError(StepkitError):
    """Two plugins register a step under the same name."""


class PluginLoadError(StepkitError):
    """A plugin failed to import or to register its steps (strict mode only)."""


class ConfigError(StepkitError, ValueError):
    """A step config has an unknown key or an invalid value."""


class StepDefinitionError(StepkitError, TypeError):
    """A step class does not follow the step contract."""


class DataStructureError(StepkitError, ValueError):
    """The data given to fit/evaluate does not have the structure a step needs."""


class UnknownWrapperError(StepkitError, KeyError):
    """No installed step wrapper has the requested name."""

    def __str__(self) -> str:
        return str(self.args[0])


class WrapperError(StepkitError, ValueError):
    """A wrapper spec is malformed, or a wrapper cannot wrap this step."""


class WrapperStackError(WrapperError):
    """Two wrappers cannot be stacked, or not in the order given."""


def no_gradient(step_name: str, role: str, count: int, backend: str) -> StepDefinitionError:
    """The error for a loss that does not depend on any variable of the role it updates."""
    return StepDefinitionError(
        f"Step {step_name!r}: the loss given to ctx.minimize / ctx.gradients for role "
        f"{role!r} does not depend on any of the role's {count} trainable variables (no "
        f"gradient on {backend}). Compute the forward pass inside the loss function, e.g. "
        "ctx.minimize(role, lambda: loss(net(x))), not before it: only what runs inside it is "
        "differentiated, as under TensorFlow's GradientTape or jax.grad.")
