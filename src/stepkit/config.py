"""Step configs at the edges: mappings and JSON in, attrs instances out (cattrs).

A step's config is a small frozen attrs class with validators at the fields.
Users may pass an instance or a mapping; mappings are structured here, with
unknown keys rejected and every error pointing at the bad key (``$.latent_dim``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
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


def _format(exc: BaseException, type_: Any) -> str:
    if type_ is None and isinstance(exc, (ValueError, TypeError)):
        return str(exc)  # an attrs validator's message names the field, rule and value
    return format_exception(exc, type_)


def structure_config(config_class: type, value: Any, *, step: str = "?") -> Any:
    """Turn ``value`` (None, an instance or a mapping) into a ``config_class`` instance.

    Raises:
        ConfigError: ``value`` has an unknown key, a value of the wrong type or a
            value a validator rejects; the message names the step and the key path.
    """
    if value is None:
        value = {}
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
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path="$", format_exception=_format))
        fields = ", ".join(f.name for f in attrs.fields(config_class))
        raise ConfigError(
            f"Invalid config for step {step!r}: {problems}. Fields of "
            f"{config_class.__name__}: {fields or '(none)'}."
        ) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"Invalid config for step {step!r}: {exc}.") from None


def unstructure_config(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of ``config``; callables become their registered names."""
    from stepkit.serialization import serialize_callable

    data = converter.unstructure(config)
    return {k: serialize_callable(v, field=k) if callable(v) else v for k, v in data.items()}


@attrs.frozen
class NoConfig:
    """The config of a step without settings."""
