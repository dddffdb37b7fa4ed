"""Step configs at the edges: mappings and JSON in, attrs instances out (cattrs).

A step's config is a small frozen attrs class with validators at the fields.
Users may pass an instance or a mapping; mappings are structured here, with
unknown keys rejected (with the closest field name) and every error naming the
bad key: ``$.latent_dim`` in the message, plain words in ``ConfigError.plain``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote
from cattrs.v import format_exception

from stepkit.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _structure_bool(value: Any, _type: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected a boolean (true/false), received {value!r}")


def _is_callable_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Callable or origin is Callable:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_callable_type(a) for a in typing.get_args(tp))
    return False


def _structure_callable_union(value: Any, tp: Any) -> Any:
    """Fields such as ``loss: str | Callable`` keep names and callables as given."""
    if isinstance(value, str) or callable(value):
        return value
    if isinstance(value, Mapping) and "class_name" in value:
        from stepkit.serialization import deserialize_callable

        return deserialize_callable(value)
    raise ValueError(f"expected a name or a callable, received {value!r}")


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_func(_is_callable_type, _structure_callable_union)
    return conv


converter = make_converter()


def _kind(tp: Any) -> str:
    """A type in words, for "latent_dim must be an int"."""
    words = {int: "an int", float: "a number", bool: "true or false", str: "a string"}
    if tp in words:
        return words[tp]
    name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
    return f"of type {name}"


def _validator_problem(exc: BaseException, prefix: str) -> tuple[str, str, str]:
    """(field, plain words, cattrs-style detail) of an attrs validator's error."""
    args = exc.args
    message = str(args[0]) if args else str(exc)
    attribute = args[1] if len(args) > 1 and isinstance(args[1], attrs.Attribute) else None
    match = re.match(r"^'(\w+)' ", message)
    name = attribute.name if attribute is not None else (match.group(1) if match else "")
    path = prefix + name
    plain = message
    if attribute is not None and len(args) == 4 and isinstance(args[2], type | tuple):
        if isinstance(args[2], type):  # instance_of(type)
            plain = f"{path} must be {_kind(args[2])}, got {args[3]!r}"
        else:  # in_(options)
            plain = f"{path} must be one of {', '.join(map(repr, args[2]))}, got {args[3]!r}"
    elif (rule := re.match(r"^'\w+' must be (.+): (.+)$", message)) is not None:
        plain = f"{path} must be {rule.group(1)}, got {rule.group(2)}"  # gt, ge, lt, le
    elif match:
        plain = f"{path} {message[match.end():]}"
    return path, plain, f"{message} @ $" + (f".{path}" if path else "")


def _problems(exc: BaseException, config_class: type, value: Any,
              prefix: str = "") -> list[tuple[str, str, str]]:
    """Every problem in a cattrs error, as (field, plain words, cattrs-style detail)."""
    fields = [f.name for f in attrs.fields(config_class)] if attrs.has(config_class) else []
    given = value if isinstance(value, Mapping) else {}
    found = []
    subs = exc.exceptions if isinstance(exc, cattrs.ClassValidationError) else [exc]
    for sub in subs:
        note = next((n for n in getattr(sub, "__notes__", ())
                     if isinstance(n, AttributeValidationNote)), None)
        if isinstance(sub, cattrs.ForbiddenExtraKeysError):
            for key in sorted(sub.extra_fields):
                close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                found.append((prefix + key, f"unknown setting {prefix + key!r}{hint}",
                              f"extra fields found ({key}) @ $" + (f".{prefix[:-1]}" if prefix
                                                                  else "") + hint))
        elif note is not None and isinstance(sub, cattrs.ClassValidationError):
            found += _problems(sub, note.type, given.get(note.name), f"{prefix}{note.name}.")
        elif note is not None:  # one field could not be structured to its type
            path = prefix + note.name
            plain = f"{path} must be {_kind(note.type)}, got {given.get(note.name)!r}"
            detail = format_exception(sub, note.type)
            found.append((path, plain, f"{detail} @ $.{path}"))
        else:  # a validator or converter, run when the class is made
            found.append(_validator_problem(sub, prefix))
    return found


PRESET_KEY = "preset"


def _preset_error(message: str) -> ConfigError:
    error = ConfigError(message)
    error.problems = [(PRESET_KEY, message)]
    error.plain = message
    return error


def step_presets(step: str, config_class: type | None = None) -> Mapping[str, Mapping]:
    """The presets of the registered step ``step`` (its ``presets`` class attribute).

    Empty when no step of that name is installed, when it declares none, or when
    its config class is not ``config_class`` (a config of another step).
    """
    from stepkit.errors import UnknownStepError
    from stepkit.registry import get_step

    try:
        step_class = get_step(step)
    except UnknownStepError:
        return {}
    if config_class is not None and step_class.config_class is not config_class:
        return {}
    return getattr(step_class, "presets", None) or {}


def apply_preset(value: Mapping[str, Any], presets: Mapping[str, Mapping],
                 *, step: str = "?") -> dict[str, Any]:
    """``value`` with its ``"preset"`` key replaced by that preset's settings.

    The settings given next to ``"preset"`` win over the preset's:
    ``{"preset": "recommended", "ema_decay": 0.99}`` is the preset with another
    ``ema_decay``. A mapping without ``"preset"`` is returned as it is (a copy).

    Raises:
        ConfigError: the step has no presets, or none of that name (the message
            lists the valid names).
    """
    given = dict(value)
    if PRESET_KEY not in given:
        return given
    name = given.pop(PRESET_KEY)
    if not presets:
        raise _preset_error(
            f"Step {step!r} has no presets, so its config takes no {PRESET_KEY!r} key. "
            f"Received: {PRESET_KEY}={name!r}. Remove it and give the settings themselves.")
    if not isinstance(name, str) or name not in presets:
        raise _preset_error(
            f"Unknown preset {name!r} for step {step!r}. Valid presets: "
            f"{', '.join(presets)} (`stepkit info {step}` shows their settings).")
    return {**presets[name], **given}


def structure_config(config_class: type, value: Any, *, step: str = "?",
                     presets: Mapping[str, Mapping] | None = None) -> Any:
    """Turn ``value`` (None, an instance or a mapping) into a ``config_class`` instance.

    A mapping may name one of the step's presets with the key ``"preset"``
    (:func:`apply_preset`); ``presets`` defaults to the registered step's
    (:func:`step_presets`).

    Raises:
        ConfigError: ``value`` has an unknown key, a value of the wrong type or a
            value a validator rejects, or names an unknown preset; the message names
            the step and the key path. The error's ``problems`` attribute lists
            ``(field, message)`` pairs in plain words (``("latent_dim", "latent_dim
            must be an int, got 'abc'")``), and its ``plain`` attribute is the whole
            message in those words.
    """
    if value is None:
        value = {}
    if (isinstance(value, Mapping) and PRESET_KEY in value and attrs.has(config_class)
            and PRESET_KEY not in attrs.fields_dict(config_class)):
        if presets is None:
            presets = step_presets(step, config_class)
        value = apply_preset(value, presets, step=step)
    if isinstance(value, config_class):
        return value
    if attrs.has(type(value)):
        raise ConfigError(
            f"Step {step!r} expects a config of type {config_class.__name__} or a mapping. "
            f"Received an instance of {type(value).__name__}."
        )
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"Step {step!r} expects its config as a mapping or a {config_class.__name__}. "
            f"Received: config={value!r}."
        )
    try:
        return converter.structure(dict(value), config_class)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        problems = _problems(exc, config_class, value)
        fields = ", ".join(f.name for f in attrs.fields(config_class)) or "(none)"

        def message(parts: list[str]) -> str:
            text = "; ".join(parts)
            end = "" if text.endswith(("?", ".")) else "."
            return (f"Invalid config for step {step!r}: {text}{end} Fields of "
                    f"{config_class.__name__}: {fields}.")

        error = ConfigError(message([p[2] for p in problems]))
        error.problems = [(p[0], p[1]) for p in problems]
        error.plain = message([p[1] for p in problems])
        raise error from None


def unstructure_config(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of ``config``; callables become their registered names."""
    from stepkit.serialization import serialize_callable

    data = converter.unstructure(config)
    return {k: serialize_callable(v, field=k) if callable(v) else v for k, v in data.items()}


@attrs.frozen
class NoConfig:
    """The config of a step without settings."""
