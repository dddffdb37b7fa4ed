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
)
from stepkit.hookspecs import hookimpl, hookspec
from stepkit.model import StepModel
from stepkit.registry import StepInfo, get_step, list_steps, register_plugin
from stepkit.saving import load_model
from stepkit.step import Batch, Step, StepContext

__version__ = "0.1.0"

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
    "get_step",
    "hookimpl",
    "hookspec",
    "list_steps",
    "load_model",
    "register_plugin",
]
