"""Shared by the conformance kit's child processes."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import stepkit


def _import(class_path: str) -> type:
    module, _, qualname = class_path.partition(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls


def register_class_path(class_path: str) -> None:
    """Import a hand-registered step or wrapper class (``module:qualname``); register it here.

    Nothing is registered when a class of that name is registered already (this
    process is the one that registered it).
    """
    cls = _import(class_path)
    is_wrapper = issubclass(cls, stepkit.Wrapper)
    known = stepkit.list_wrappers() if is_wrapper else stepkit.list_steps()
    if cls.name in {info.name for info in known}:
        return

    class Plugin:
        if is_wrapper:
            @stepkit.hookimpl
            def stepkit_register_wrappers(self, register):
                register(cls)
        else:
            @stepkit.hookimpl
            def stepkit_register_steps(self, register):
                register(cls)

    stepkit.register_plugin(Plugin(), name=f"conformance-child:{class_path}")


def register_classes(step_class: str | None, wrapper_classes: Iterable[str] = ()) -> None:
    """Register the case's hand-registered step and wrappers (``None`` / empty: installed)."""
    for path in [*([step_class] if step_class else []), *wrapper_classes]:
        register_class_path(path)
