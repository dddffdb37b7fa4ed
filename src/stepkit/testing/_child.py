"""Shared by the conformance kit's child processes."""

from __future__ import annotations

import importlib

import stepkit


def register_class_path(class_path: str) -> None:
    """Import a hand-registered step class (``module:qualname``) and register it here too."""
    module, _, qualname = class_path.partition(":")
    step_class = importlib.import_module(module)
    for part in qualname.split("."):
        step_class = getattr(step_class, part)
    if step_class.name in {info.name for info in stepkit.list_steps()}:
        return  # registered already: this process is the one that registered it

    class Plugin:
        @stepkit.hookimpl
        def stepkit_register_steps(self, register):
            register(step_class)

    stepkit.register_plugin(Plugin(), name=f"conformance-child:{class_path}")
