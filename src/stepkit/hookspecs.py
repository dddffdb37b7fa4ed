"""The hooks a stepkit plugin can implement.

A plugin is any module (or object) registered with stepkit's plugin manager,
usually through the ``stepkit`` entry-point group of an installed distribution::

    [project.entry-points.stepkit]
    my-step = "my_package.plugin"

and implements hooks with :data:`stepkit.hookimpl`.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "stepkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- steps


@hookspec
def stepkit_register_steps(register: Callable[[type], None]) -> None:
    """Register the step classes this plugin provides.

    Call ``register(StepClass)`` once for each step. The step's ``name`` is the
    name users pass to ``StepModel(step=...)``; it must be unique among the
    installed plugins.

    Example::

        @stepkit.hookimpl
        def stepkit_register_steps(register):
            register(MyStep)
    """


# ---------------------------------------------------------------- wrappers


@hookspec
def stepkit_register_wrappers(register: Callable[[type], None]) -> None:
    """Register the step wrapper classes this plugin provides.

    Call ``register(WrapperClass)`` once for each :class:`stepkit.Wrapper`
    subclass. Its ``name`` is what users pass to ``StepModel(wrappers=[...])``
    and ``stepkit fit --wrap``; it must be unique among installed wrappers
    (steps have their own names).

    Example::

        @stepkit.hookimpl
        def stepkit_register_wrappers(register):
            register(MyWrapper)
    """
