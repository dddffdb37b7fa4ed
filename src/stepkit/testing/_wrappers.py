"""The wrapper stack of a conformance case: specs that every check and child process rebuilds.

Every check builds fresh models, and the child-process checks rebuild the model
from a ``.keras`` file (which stores the wrapper specs) or from a pickled
payload, so the kit holds wrappers as specs, never as live objects:

* a name (``"ema"``) or a dict (``{"name": "sam", "rho": 0.05, "roles": [...]}``),
  as :class:`stepkit.StepModel` takes them, with JSON-ready values;
* a :class:`stepkit.Wrapper` instance, used through its ``spec()``; its class
  must be the one registered under its ``name`` (so the spec recreates it), and
  its ``config`` must hold all its settings.

A wrapper registered by hand (:func:`stepkit.register_plugin`) is imported in
child processes by its class's module and qualified name, so it must be
defined at module level, like a hand-registered step. Importing this module
does not import Keras.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["as_specs", "rebuildable", "stack_label", "stack_slug", "wrapper_class_paths"]


def _is_wrapper(value: Any) -> bool:
    from stepkit.wrapper import Wrapper

    return isinstance(value, Wrapper)


def as_specs(wrappers: Any) -> tuple[Any, ...]:
    """``wrappers=`` as a tuple of specs, outermost first; ``()`` for None.

    One spec alone (a name, dict or instance) is a stack of one. Dicts are
    copied, so the caller's later edits do not change the case.

    Raises:
        TypeError: an item is not a name, a dict with a string ``"name"`` or a
            :class:`stepkit.Wrapper` instance.
    """
    if wrappers is None:
        return ()
    if isinstance(wrappers, str | Mapping) or _is_wrapper(wrappers) or not isinstance(
            wrappers, list | tuple):
        wrappers = [wrappers]
    out = []
    for item in wrappers:
        if isinstance(item, str) or _is_wrapper(item):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            out.append(copy.deepcopy(dict(item)))
        else:
            raise TypeError(
                "`wrappers` takes what StepModel(wrappers=...) takes, outermost first: names "
                "('ema'), dicts ({'name': 'ema', 'decay': 0.999, 'roles': [...]}) or "
                f"stepkit.Wrapper instances. Received the item {item!r} in {wrappers!r}.")
    return tuple(out)


def _name(spec: Any) -> str:
    return spec if isinstance(spec, str) else spec["name"] if isinstance(spec, Mapping) \
        else spec.name


def stack_label(specs: Any) -> str:
    """The stack as users write it, outermost first: ``"lookahead > ema"`` (``""`` for none)."""
    return " > ".join(_name(s) for s in specs)


def stack_slug(specs: Any) -> str:
    """The stack in a Python name: ``"lookahead_ema"`` (test names of ``conformance_tests``)."""
    return "_".join(re.sub(r"\W", "_", _name(s)) for s in specs)


def rebuildable(specs: Any) -> tuple[Any, ...]:
    """The specs with every :class:`stepkit.Wrapper` instance replaced by its ``spec()``.

    Raises:
        TypeError: an instance's class is not the wrapper registered under its name.
    """
    import stepkit

    out = []
    for spec in specs:
        if _is_wrapper(spec):
            registered = next((i.step_class for i in stepkit.list_wrappers()
                               if i.name == spec.name), None)
            if registered is not type(spec):
                raise TypeError(
                    f"The conformance kit builds a fresh model for every check and rebuilds "
                    f"it in child processes, so it takes a Wrapper instance through its "
                    f"spec() ({spec.spec()!r}), which needs {type(spec).__qualname__} to be "
                    f"the wrapper registered under the name {spec.name!r} (found "
                    f"{getattr(registered, '__qualname__', 'none')}). Register its plugin "
                    "with stepkit.register_plugin, or pass the spec (a name or a dict).")
            spec = spec.spec()
        out.append(spec)
    return tuple(out)


def wrapper_class_paths(specs: Any) -> list[str]:
    """``module:qualname`` of each wrapper of the stack registered by hand, for a child.

    Installed wrappers are found by the child through their entry points.

    Raises:
        ValueError: such a class is defined where a child process cannot import it.
    """
    import stepkit

    infos = {i.name: i for i in stepkit.list_wrappers()}
    paths = []
    for name in dict.fromkeys(_name(s) for s in specs):
        info = infos.get(name)
        if info is None or info.distribution is not None:
            continue  # installed (the child finds it), or unknown (StepModel says so)
        cls = info.step_class
        if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
            raise ValueError(
                f"wrapper {name!r} was registered by hand from {cls.__module__}."
                f"{cls.__qualname__}, which a child process cannot import. Define the wrapper "
                "class at module level, or install its plugin.")
        paths.append(f"{cls.__module__}:{cls.__qualname__}")
    return paths
