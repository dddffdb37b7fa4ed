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
