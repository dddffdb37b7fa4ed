"""Every loss form Keras accepts, reduced the way ``keras.Model.compile(loss=...)`` does.

``keras.losses.get("binary_crossentropy")`` is a bare function returning per-sample
values and taking no ``sample_weight``; a ``keras.losses.Loss`` may have
``reduction=None`` (per-sample values), ``"sum"`` (the batch sum) or a mean. Keras'
``compile()`` wraps each of them and reduces what is left: per-sample values are
weighted by ``sample_weight`` and averaged over every element
(``"sum_over_batch_size"``), scalars are taken as they are. :func:`plain_loss`
does the same and returns the *plain* per-replica value a step hands to
``ctx.minimize`` (not divided by the number of replicas).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from stepkit import backend

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def get(identifier: Any) -> Callable[..., Any]:
    """A loss function ``(y_true, y_pred, sample_weight=None) -> plain scalar``.

    Args:
        identifier: a Keras loss name (``"mse"``, ``"binary_crossentropy"``), a
            ``keras.losses.Loss`` with any ``reduction``, or a callable
            ``(y_true, y_pred) -> per-sample losses or a scalar``.

    Raises:
        ValueError: ``identifier`` is not a loss Keras knows.
    """
    if isinstance(identifier, str):
        try:
            fn = keras.losses.get(identifier)
        except ValueError:
            fn = None
        if fn is None:
            raise ValueError(
                f"Unknown loss {identifier!r}. Use a Keras loss name (e.g. 'mse', "
                "'binary_crossentropy', 'sparse_categorical_crossentropy'), a "
                "keras.losses.Loss or a callable (y_true, y_pred) -> loss."
            )
        identifier = fn
    if not callable(identifier):
        raise ValueError(
            "A loss must be a Keras loss name, a keras.losses.Loss or a callable "
            f"(y_true, y_pred) -> loss. Received: {identifier!r}."
        )

    def loss(y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return plain_loss(identifier, y_true, y_pred, sample_weight)

    loss.__wrapped__ = identifier  # type: ignore[attr-defined]
    return loss


def plain_loss(fn: Any, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
    """``fn`` on one batch, reduced like ``compile(loss=fn)``, as a plain per-replica value."""
    if isinstance(fn, keras.losses.Loss):
        value = fn(y_true, y_pred, sample_weight=sample_weight)
        if fn.reduction in _MEAN_REDUCTIONS:
            return unscale(value)  # Keras already averaged it and divided by replicas
        return _mean(value, None)  # weighted per-sample values, or a sum (a scalar)
    return _mean(ops.convert_to_tensor(fn(y_true, y_pred)), sample_weight, fn)


def _mean(values: Any, sample_weight: Any, fn: Any = None) -> Any:
    if len(values.shape) == 0:
        if sample_weight is not None:
            raise ValueError(
                f"The loss {getattr(fn, '__name__', fn)!r} returns a scalar, so sample weights "
                "cannot be applied to it. Return per-sample losses, or drop sample_weight."
            )
        return values
    if sample_weight is not None:
        values = values * _match_rank(ops.cast(sample_weight, values.dtype), values)
    return ops.divide_no_nan(ops.sum(values), ops.cast(ops.size(values), values.dtype))


def _match_rank(weight: Any, values: Any) -> Any:
    # As Keras' losses do: (batch, 1) weights for (batch,) values, and the reverse.
    if len(weight.shape) == len(values.shape) + 1 and weight.shape[-1] == 1:
        return ops.squeeze(weight, -1)
    while len(weight.shape) < len(values.shape):
        weight = ops.expand_dims(weight, -1)
    return weight


def scale(loss: Any) -> Any:
    """A plain per-replica loss divided by the number of replicas (gradients are summed)."""
    n = backend.num_replicas()
    return loss if n == 1 else ops.multiply(loss, ops.cast(1.0 / n, loss.dtype))


def unscale(loss: Any) -> Any:
    """The plain per-replica value of a loss Keras already divided by the replicas."""
    n = backend.num_replicas()
    return loss if n == 1 else ops.multiply(loss, ops.cast(n, loss.dtype))
