"""Callables in step configs are saved by registered name, never by code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras

from stepkit.errors import ConfigError


def _is_keras_builtin_function(fn: Callable) -> bool:
    name = getattr(fn, "__name__", None)
    return any(getattr(mod, name or "", None) is fn for mod in (keras.losses, keras.metrics,
                                                                keras.activations))


def serialize_callable(fn: Callable, *, field: str = "?") -> Any:
    """Serialise a loss or other callable by its Keras-registered name.

    Raises:
        ConfigError: ``fn`` is a lambda or a function Keras cannot find again by
            name; the fix is ``keras.saving.register_keras_serializable``.
    """
    if isinstance(fn, keras.losses.Loss | keras.metrics.Metric):
        return keras.saving.serialize_keras_object(fn)
    name = keras.saving.get_registered_name(fn)
    registered = keras.saving.get_registered_object(name) is fn
    if getattr(fn, "__name__", "") == "<lambda>" or not (registered or
                                                         _is_keras_builtin_function(fn)):
        raise ConfigError(
            f"Config field {field!r} holds {fn!r}, which cannot be saved: stepkit saves "
            "callables by registered name only. Decorate it with "
            "@keras.saving.register_keras_serializable(package='...') (a named function, "
            "not a lambda), or use a Keras loss name such as 'mse'."
        )
    return keras.saving.serialize_keras_object(fn)


def deserialize_callable(data: Mapping[str, Any]) -> Callable:
    """The inverse of :func:`serialize_callable`, in Keras' safe mode."""
    try:
        return keras.saving.deserialize_keras_object(dict(data), safe_mode=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"cannot restore callable {dict(data).get('config')!r}: {exc} Import the module "
            "that registers it (keras.saving.register_keras_serializable) before loading."
        ) from None
