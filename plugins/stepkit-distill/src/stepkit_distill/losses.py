"""The distillation terms as per-sample values, and their (weighted) batch means.

Each function computes what ``keras.distillation`` computes for the same
setting, in the same order of operations, so that unweighted results are equal
to the bit; a sample weight multiplies the per-sample values before the mean,
as ``compile(loss=...)`` does with ``reduction="sum_over_batch_size"``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["batch_mean", "feature_loss", "logits_loss"]

_SOFTMAX_DIVERGENCES = ("kl", "reverse_kl", "cross_entropy")


def batch_mean(per_sample: Any, sample_weight: Any = None) -> Any:
    """Mean of ``per_sample`` values over the batch, weighted by ``sample_weight``.

    Values of rank > 1 (a sequence, a feature map) are first averaged per sample.
    """
    if len(per_sample.shape) > 1:
        per_sample = ops.mean(per_sample, axis=tuple(range(1, len(per_sample.shape))))
    if sample_weight is None:
        return ops.mean(per_sample)
    weight = ops.cast(ops.reshape(sample_weight, (-1,)), per_sample.dtype)
    return ops.mean(per_sample * weight)


def logits_loss(teacher: Any, student: Any, temperature: float, divergence: str,
                sample_weight: Any = None) -> Any:
    """One logits term: ``divergence`` between teacher and student logits at ``temperature``.

    ``kl``, ``reverse_kl`` and ``cross_entropy`` compare ``softmax(logits / T)`` and
    are multiplied by ``T ** 2`` (Hinton et al. 2015: the gradients then keep their
    size as T changes); ``mse`` compares ``logits / T`` directly.
    Several outputs (lists, dicts) each get the term, and the terms are summed.
    """
    pairs = zip(keras.tree.flatten(teacher), keras.tree.flatten(student), strict=True)
    terms = [_one_logits_loss(t, s, temperature, divergence, sample_weight) for t, s in pairs]
    return terms[0] if len(terms) == 1 else ops.sum(ops.stack(terms))


def _one_logits_loss(teacher: Any, student: Any, temperature: float, divergence: str,
                     sample_weight: Any) -> Any:
    t = ops.divide(ops.cast(teacher, "float32"), temperature)
    s = ops.divide(ops.cast(student, "float32"), temperature)
    if divergence == "mse":
        return batch_mean(keras.losses.mean_squared_error(t, s), sample_weight)
    p_teacher = ops.softmax(t, axis=-1)
    if divergence == "kl":
        per_sample = keras.losses.kl_divergence(p_teacher, ops.softmax(s, axis=-1))
    elif divergence == "reverse_kl":
        per_sample = keras.losses.kl_divergence(ops.softmax(s, axis=-1), p_teacher)
    elif divergence == "cross_entropy":
        per_sample = keras.losses.categorical_crossentropy(p_teacher, s, from_logits=True)
    else:
        raise ValueError(f"Unknown divergence {divergence!r}; valid: "
                         f"{(*_SOFTMAX_DIVERGENCES, 'mse')}.")
    return batch_mean(per_sample, sample_weight) * (temperature ** 2)


_FEATURE_FUNCTIONS = {
    "mse": keras.losses.mean_squared_error,
    "mae": keras.losses.mean_absolute_error,
    "cosine": keras.losses.cosine_similarity,
}


def feature_loss(teacher: Any, student: Any, loss: str, sample_weight: Any = None) -> Any:
    """One feature term: ``loss`` between ``teacher`` and ``student`` features (last axis)."""
    fn = _FEATURE_FUNCTIONS[loss]
    per_position = fn(ops.cast(teacher, "float32"), ops.cast(student, "float32"))
    return batch_mean(per_position, sample_weight)
