"""stepkit: custom Keras training steps as plugins.

Example::

    from stepkit import StepModel

    model = StepModel(net, step="supervised")
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y)
"""

from __future__ import annotations

from stepkit.config import NoConfig
from stepkit.errors import (
    ConfigError,
    DataStructureError,
    DuplicateStepError,
    PluginLoadError,
    StepDefinitionError,
    StepkitError,
    UnknownStepError,
    UnknownWrapperError,
    WrapperError,
    WrapperStackError,
)
from stepkit.hookspecs import hookimpl, hookspec
from stepkit.registry import (
    StepInfo,
    get_step,
    get_wrapper,
    list_steps,
    list_wrappers,
    register_plugin,
)

__version__ = "0.1.0"

# Keras and TensorFlow load on first use of these names, so that `import stepkit`
# (and the pytest plugin, and step discovery) stay cheap.
_LAZY = {"StepModel": "stepkit.model", "load_model": "stepkit.saving",
         "Batch": "stepkit.step", "Step": "stepkit.step", "StepContext": "stepkit.step",
         "Wrapper": "stepkit.wrapper"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stepkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Batch",
    "ConfigError",
    "DataStructureError",
    "DuplicateStepError",
    "NoConfig",
    "PluginLoadError",
    "Step",
    "StepContext",
    "StepDefinitionError",
    "StepInfo",
    "StepModel",
    "StepkitError",
    "UnknownStepError",
    "UnknownWrapperError",
    "Wrapper",
    "WrapperError",
    "WrapperStackError",
    "get_step",
    "get_wrapper",
    "hookimpl",
    "hookspec",
    "list_steps",
    "list_wrappers",
    "load_model",
    "register_plugin",
]
