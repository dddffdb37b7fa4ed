"""Finding steps: the pluggy plugin manager and the ``stepkit`` entry-point group.

Environment variables (read when the registry is first used):

``STEPKIT_DISABLE_PLUGIN_AUTOLOAD``
    Set to ``1`` to load no third-party entry points; stepkit's own steps and
    plugins registered with :func:`register_plugin` still work.
``STEPKIT_PLUGINS``
    Comma-separated entry-point or distribution names: only these third-party
    plugins are loaded.
``STEPKIT_STRICT_PLUGINS``
    Set to ``1`` to make a plugin that fails to load an error instead of a
    warning.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import os
import threading
import warnings
from collections.abc import Iterable

import attrs
import pluggy

from stepkit import hookspecs
from stepkit.errors import (
    DuplicateStepError,
    PluginLoadError,
    UnknownStepError,
    UnknownWrapperError,
)

ENTRY_POINT_GROUP = "stepkit"
BUILTIN_DISTRIBUTION = "stepkit"
# stepkit's own plugins: its steps and its wrappers (entry points "builtin", "wrappers").
BUILTIN_MODULES = ("stepkit.steps", "stepkit.wrappers")

ENV_DISABLE_AUTOLOAD = "STEPKIT_DISABLE_PLUGIN_AUTOLOAD"
ENV_ONLY = "STEPKIT_PLUGINS"
ENV_STRICT = "STEPKIT_STRICT_PLUGINS"


@attrs.frozen
class StepInfo:
    """Where a registered step comes from.

    Attributes:
        name: the step's name.
        step_class: the :class:`~stepkit.Step` subclass (for a wrapper: its
            :class:`~stepkit.Wrapper` subclass).
        plugin: the entry point that loaded it (the one named after the step
            when several name its module), or the name given to
            :func:`register_plugin`.
        distribution: the installed distribution, or None for a plugin
            registered by hand.
        version: the distribution's version.
        entry_points: every ``stepkit`` entry point that names the step's plugin
            (two steps in one module may each have their own); empty for a plugin
            registered by hand.

    Example::

        info = stepkit.registry.registry().info("gan")
        info.source        # 'stepkit 0.1.0'
    """

    name: str
    step_class: type
    plugin: str
    distribution: str | None
    version: str | None
    entry_points: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        if self.distribution is None:
            return f"plugin {self.plugin!r}"
        return f"{self.distribution} {self.version}"


@attrs.frozen
class BrokenPlugin:
    """A plugin that could not be imported or failed to register its steps."""

    plugin: str
    distribution: str | None
    version: str | None
    error: str
    entry_points: tuple[str, ...] = ()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _is_builtin(ep: metadata.EntryPoint) -> bool:
    """Whether ``ep`` is stepkit's own entry point (installed, or from a source tree)."""
    dist, _ = _dist_of(ep)
    if dist is None:
        return ep.value in BUILTIN_MODULES
    return _normalise(dist) == BUILTIN_DISTRIBUTION


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


class StepRegistry:
    """Registered steps, loaded lazily from entry points.

    ``get(name)`` imports only the entry points named ``name`` when they provide
    it (the usual convention: an entry point is named after the step it ships),
    and falls back to loading every plugin. ``steps()`` loads every plugin.
    """

    def __init__(self, *, autoload: bool | None = None, only: Iterable[str] | None = None,
                 strict: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.autoload = (not _flag(ENV_DISABLE_AUTOLOAD)) if autoload is None else autoload
        if only is None and os.environ.get(ENV_ONLY, "").strip():
            only = [n for n in os.environ[ENV_ONLY].split(",") if n.strip()]
        self.only = None if only is None else {_normalise(n.strip()) for n in only}
        self.strict = _flag(ENV_STRICT) if strict is None else strict
        self._steps: dict[str, StepInfo] = {}
        self._conflicts: dict[str, list[StepInfo]] = {}
        self._wrappers: dict[str, StepInfo] = {}
        self._wrapper_conflicts: dict[str, list[StepInfo]] = {}
        self._broken: list[BrokenPlugin] = []
        # pluggy name of each loaded plugin -> the entry points naming it, and its steps
        self._names: dict[str, tuple[str, ...]] = {}
        self._provides: dict[str, list[str]] = {}
        self._pending = self._entry_points()
        self._all_loaded = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------ loading

    def _entry_points(self) -> list[metadata.EntryPoint]:
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        seen, chosen, has_builtin = set(), [], False
        for ep in eps:
            dist, _ = _dist_of(ep)
            key = (ep.name, ep.value, dist)
            if key in seen:
                continue
            seen.add(key)
            builtin = _is_builtin(ep)
            has_builtin = has_builtin or builtin
            if builtin or self._wanted(ep.name, dist):
                chosen.append(ep)
        if not has_builtin:  # running from a source tree that is not installed
            chosen[:0] = [metadata.EntryPoint("builtin", "stepkit.steps", ENTRY_POINT_GROUP),
                          metadata.EntryPoint("wrappers", "stepkit.wrappers", ENTRY_POINT_GROUP)]
        return chosen

    def _wanted(self, name: str, dist: str | None) -> bool:
        if not self.autoload:
            return False
        if self.only is None:
            return True
        return _normalise(name) in self.only or (dist is not None and _normalise(dist) in self.only)

    def _load(self, ep: metadata.EntryPoint) -> None:
        # Every pending entry point naming the same object (two steps of one module,
        # one entry point each) is loaded with it: one import, one registration.
        group = [e for e in self._pending if e.value == ep.value]
        if not group:  # already loaded with another entry point of its group
            return
        for e in group:
            self._pending.remove(e)
        names = tuple(e.name for e in group)
        dist, version = _dist_of(group[0])
        if dist is None and ep.value in BUILTIN_MODULES:
            dist, version = BUILTIN_DISTRIBUTION, _own_version()
        try:
            plugin = ep.load()
            if self.pm.is_registered(plugin):  # another spelling of a loaded entry point
                self._alias(plugin, names)
                return
            self.pm.register(plugin, name=f"{group[0].name}:{ep.value}")
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - any import error makes a broken plugin
            self._broken_plugin(names, dist, version, exc)
            return
        self._collect(plugin, names, dist, version)

    def _alias(self, plugin: object, names: tuple[str, ...]) -> None:
        """Record more entry points naming an already registered ``plugin``."""
        key = self.pm.get_name(plugin)
        if key not in self._names:
            return
        self._names[key] = tuple(dict.fromkeys(self._names[key] + names))
        for step in self._provides.get(key, []):
            info = self._steps.get(step)
            if info is not None and info.entry_points:
                self._steps[step] = self._info(info.step_class, self._names[key],
                                               info.distribution, info.version)

    def _collect(self, plugin: object, names: tuple[str, ...], dist: str | None,
                 version: str | None) -> None:
        found: list[type] = []
        wrappers: list[type] = []
        hooks = ((self.pm.hook.stepkit_register_steps, found),
                 (self.pm.hook.stepkit_register_wrappers, wrappers))
        try:
            for hook, into in hooks:
                for impl in hook.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=into.append)
            for step_class in found:
                _validate(step_class, names[0])
            for wrapper_class in wrappers:
                _validate_wrapper(wrapper_class, names[0])
        except Exception as exc:  # noqa: BLE001
            self._broken_plugin(names, dist, version, exc)
            return
        key = self.pm.get_name(plugin)
        self._names[key] = names
        self._provides[key] = [c.name for c in found]
        for step_class in found:
            self._add(self._info(step_class, names, dist, version))
        for wrapper_class in wrappers:
            self._add(self._info(wrapper_class, names, dist, version), self._wrappers,
                      self._wrapper_conflicts)

    @staticmethod
    def _info(step_class: type, names: tuple[str, ...], dist: str | None,
              version: str | None) -> StepInfo:
        # The entry point named after the step, else the first one (or the given name).
        plugin = step_class.name if step_class.name in names else names[0]
        entry_points = names if dist is not None else ()
        return StepInfo(step_class.name, step_class, plugin, dist, version, entry_points)

    def _broken_plugin(self, names: tuple[str, ...], dist, version, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        name = names[0]
        self._broken.append(BrokenPlugin(name, dist, version, error,
                                         names if dist is not None else ()))
        where = f"plugin {name!r}" + (f" from {dist} {version}" if dist else "")
        message = (
            f"stepkit: {where} failed to load and was skipped ({error}). Its steps are "
            f"unavailable; the other steps still work. Set {ENV_STRICT}=1 to make this an "
            f"error, or {ENV_ONLY}=... to load only named plugins."
        )
        if self.strict:
            raise PluginLoadError(message) from exc
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _add(self, info: StepInfo, into: dict | None = None, conflicts: dict | None = None,
             ) -> None:
        into = self._steps if into is None else into
        conflicts = self._conflicts if conflicts is None else conflicts
        existing = into.get(info.name)
        if existing is not None and existing.step_class is not info.step_class:
            conflicts.setdefault(info.name, [existing]).append(info)
            return
        into[info.name] = info

    def load_all(self) -> None:
        with self._lock:
            for ep in list(self._pending):
                self._load(ep)
            self._all_loaded = True

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (a module or instance with hookimpls) by hand."""
        with self._lock:
            if self.pm.is_registered(plugin):  # e.g. a notebook cell run twice
                return
            name = name or getattr(plugin, "__name__", None) or repr(plugin)
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
            self._collect(plugin, (name,), None, None)

    # ------------------------------------------------------------ queries

    def get(self, name: str) -> type:
        with self._lock:
            if name not in self._steps and name not in self._conflicts:
                # stepkit's own steps first (its entry point is named "builtin"), then
                # the entry points named after the step; everything else only if needed.
                own = [e for e in self._pending if _is_builtin(e)]
                named = [e for e in self._pending if e.name == name and not _is_builtin(e)]
                for ep in own + named:
                    self._load(ep)
            if name not in self._steps and not self._all_loaded:
                self.load_all()
            if name in self._conflicts:
                raise DuplicateStepError(_conflict_message(name, self._conflicts[name]))
            if name in self._steps:
                return self._steps[name].step_class
            raise UnknownStepError(self._unknown_message(name))

    def get_wrapper(self, name: str) -> type:
        """The wrapper class registered under ``name`` (loads every plugin if needed)."""
        with self._lock:
            if name not in self._wrappers:
                for ep in [e for e in self._pending if _is_builtin(e)]:
                    self._load(ep)
            if name not in self._wrappers and not self._all_loaded:
                self.load_all()
            if name in self._wrapper_conflicts:
                raise DuplicateStepError(
                    _conflict_message(name, self._wrapper_conflicts[name], "Wrapper"))
            if name in self._wrappers:
                return self._wrappers[name].step_class
            names = sorted(self._wrappers)
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownWrapperError(
                f"Unknown wrapper {name!r}.{hint} Available wrappers: "
                f"{', '.join(names) or '(none)'}. Install the package that provides it, or "
                "run `stepkit list`.")

    def wrappers(self) -> list[StepInfo]:
        self.load_all()
        return sorted(self._wrappers.values(), key=lambda i: i.name)

    def wrapper_conflicts(self) -> dict[str, list[StepInfo]]:
        self.load_all()
        return dict(self._wrapper_conflicts)

    def info(self, name: str) -> StepInfo:
        self.get(name)
        return self._steps[name]

    def steps(self) -> list[StepInfo]:
        self.load_all()
        return sorted(self._steps.values(), key=lambda i: i.name)

    def conflicts(self) -> dict[str, list[StepInfo]]:
        self.load_all()
        return dict(self._conflicts)

    def broken(self) -> list[BrokenPlugin]:
        self.load_all()
        return list(self._broken)

    def _unknown_message(self, name: object) -> str:
        names = sorted(self._steps)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        broken = ""
        if self._broken:
            broken = " Broken plugins (see `stepkit list`): " + ", ".join(
                b.plugin for b in self._broken) + "."
        return (
            f"Unknown step {name!r}.{hint} Available steps: {', '.join(names) or '(none)'}."
            f"{broken} Install the package that provides it, or run `stepkit list`."
        )


def _conflict_message(name: str, infos: list[StepInfo], kind: str = "Step") -> str:
    sources = " and ".join(f"{i.source} (plugin {i.plugin!r})" for i in infos)
    return (
        f"{kind} name {name!r} is registered by more than one plugin: {sources}. "
        f"Uninstall one of them, or limit loading with {ENV_ONLY}=<plugin>."
    )


def _validate(step_class: type, plugin: str) -> None:
    from stepkit.step import Step

    if not (isinstance(step_class, type) and issubclass(step_class, Step)):
        raise TypeError(
            f"Plugin {plugin!r} registered {step_class!r}, which is not a subclass of "
            "stepkit.Step. Register step classes, not instances or functions."
        )
    step_class.check_definition()


def _validate_wrapper(wrapper_class: type, plugin: str) -> None:
    from stepkit.wrapper import Wrapper

    if not (isinstance(wrapper_class, type) and issubclass(wrapper_class, Wrapper)):
        raise TypeError(
            f"Plugin {plugin!r} registered wrapper {wrapper_class!r}, which is not a subclass "
            "of stepkit.Wrapper. Register wrapper classes, not instances or functions."
        )
    wrapper_class.check_definition()


def _own_version() -> str | None:
    try:
        return metadata.version(BUILTIN_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


_REGISTRY: StepRegistry | None = None
_REGISTRY_LOCK = threading.Lock()
# Plugins registered by hand (register_plugin) outlive reset_registry().
_BY_HAND: list[tuple[object, str | None]] = []


def registry() -> StepRegistry:
    """The process-wide registry, created on first use."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = StepRegistry()
            for plugin, name in _BY_HAND:
                _REGISTRY.register_plugin(plugin, name)
        return _REGISTRY


def reset_registry() -> None:
    """Forget loaded plugins; the next query reads the environment again.

    Plugins registered by hand with :func:`register_plugin` are registered again.
    """
    global _REGISTRY
    with _REGISTRY_LOCK:
        _REGISTRY = None


def get_step(name: str) -> type:
    """Return the step class registered under ``name``.

    Raises:
        UnknownStepError: no installed step has that name; the message lists the
            available steps and the closest match.
        DuplicateStepError: two plugins register that name.
    """
    if not isinstance(name, str):
        raise TypeError(f"A step name must be a string. Received: step={name!r}.")
    return registry().get(name)


def get_wrapper(name: str) -> type:
    """Return the wrapper class registered under ``name``.

    Raises:
        UnknownWrapperError: no installed wrapper has that name (the message lists them).
        DuplicateStepError: two plugins register that wrapper name.
    """
    if not isinstance(name, str):
        raise TypeError(f"A wrapper name must be a string. Received: {name!r}.")
    return registry().get_wrapper(name)


def list_wrappers() -> list[StepInfo]:
    """Every available wrapper, sorted by name, with the plugin that provides it."""
    return registry().wrappers()


def list_steps() -> list[StepInfo]:
    """Every available step, sorted by name, with the plugin that provides it."""
    return registry().steps()


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin by hand (for steps defined in a script or notebook)."""
    registry().register_plugin(plugin, name)
    if not any(p is plugin for p, _ in _BY_HAND):
        _BY_HAND.append((plugin, name))
