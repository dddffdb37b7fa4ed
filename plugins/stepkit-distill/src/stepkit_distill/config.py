"""Settings of the ``distill`` step: small attrs classes, plain values only.

``DistillConfig`` holds the student-loss weight ``alpha`` and two lists of
distillation terms: ``logits`` (:class:`LogitsDistillation`, a divergence
between the softened outputs) and ``features`` (:class:`FeatureDistillation`,
a distance between intermediate layers picked by name). Every value is a
number, a string or a bool, so the config is saved with the model as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from attrs import validators as v

__all__ = ["DIVERGENCES", "FEATURE_LOSSES", "DistillConfig", "FeatureDistillation",
           "LogitsDistillation"]

# name -> what it computes (for error messages and `stepkit info`).
DIVERGENCES = {
    "kl": "KL(teacher || student) of the softened outputs, times T^2 (Hinton et al. 2015)",
    "reverse_kl": "KL(student || teacher) of the softened outputs, times T^2",
    "cross_entropy": "cross-entropy of the student's softened output against the teacher's, "
                     "times T^2 (KL plus the teacher's entropy, so the same gradients)",
    "mse": "mean squared error between logits / T (logit matching, no T^2)",
}
FEATURE_LOSSES = {
    "mse": "mean squared error",
    "mae": "mean absolute error",
    "cosine": "negative cosine similarity along the last axis",
}


def _choice(choices: Mapping[str, str]) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None and attribute.default is None:
            return
        if value not in choices:
            raise ValueError(
                f"'{attribute.name}' must be one of {tuple(choices)} ("
                + "; ".join(f"{k} = {d}" for k, d in choices.items())
                + f"). Received {value!r}.")
    check.options = tuple(choices)  # `stepkit info` shows "one of [...]"
    return check


def _weight() -> Any:
    return attrs.field(default=1.0, converter=float, validator=v.ge(0.0))


def _layer() -> Any:
    return attrs.field(default=None, validator=v.optional(v.instance_of(str)))


@attrs.frozen
class LogitsDistillation:
    """One logits term: a divergence between the teacher's and the student's outputs.

    Attributes:
        temperature: divides both networks' logits before the softmax; None
            takes the config's ``temperature``.
        divergence: one of ``DIVERGENCES`` (``kl``, ``reverse_kl``,
            ``cross_entropy``, ``mse``); None takes the config's ``divergence``.
        weight: the term's weight in the distillation loss.

    Example::

        LogitsDistillation(temperature=3.0, divergence="kl", weight=1.0)
    """

    temperature: float | None = attrs.field(
        default=None, converter=attrs.converters.optional(float), validator=v.optional(v.gt(0.0)))
    divergence: str | None = attrs.field(default=None, validator=_choice(DIVERGENCES))
    weight: float = _weight()


@attrs.frozen
class FeatureDistillation:
    """One feature term: a distance between a teacher layer's and a student layer's outputs.

    Attributes:
        teacher_layer: name of the teacher's layer (``teacher.get_layer(name)``);
            None is the teacher's output.
        student_layer: name of the student's layer; None is the student's output.
        loss: one of ``FEATURE_LOSSES`` (``mse``, ``mae``, ``cosine``).
        projection: learn a linear map (kernel and bias, trained with the
            student, saved with the model) from the student's feature width to
            the teacher's, applied to the last axis before the loss.
        weight: the term's weight in the distillation loss.

    Example::

        FeatureDistillation(teacher_layer="t_hidden", student_layer="s_hidden",
                            loss="mse", projection=True, weight=0.5)
    """

    teacher_layer: str | None = _layer()
    student_layer: str | None = _layer()
    loss: str = attrs.field(default="mse", validator=_choice(FEATURE_LOSSES))
    projection: bool = attrs.field(default=False, validator=v.instance_of(bool))
    weight: float = _weight()


def _terms(cls: type) -> Any:
    """An attrs converter: a list of ``cls`` instances or mappings -> a tuple of instances.

    Mistakes name the item and the setting: ``'features' item 0: 'loss' must be ...``.
    """
    names = [f.name for f in attrs.fields(cls)]

    def convert(value: Any) -> tuple:
        if isinstance(value, cls):
            value = (value,)
        if isinstance(value, str | Mapping) or not hasattr(value, "__iter__"):
            raise ValueError(
                f"'{_FIELD_OF[cls]}' takes a list of {cls.__name__} settings (each a mapping "
                f"with keys among {names}). Received {value!r}.")
        items = []
        for i, item in enumerate(value):
            where = f"'{_FIELD_OF[cls]}' item {i}"
            if isinstance(item, cls):
                items.append(item)
                continue
            if not isinstance(item, Mapping):
                raise ValueError(f"{where} must be a mapping with keys among {names}. "
                                 f"Received {item!r}.")
            unknown = sorted(set(item) - set(names))
            if unknown:
                raise ValueError(f"{where} has unknown setting(s) {unknown}. Settings of "
                                 f"{cls.__name__}: {names}.")
            try:
                items.append(cls(**item))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e.args[0] if e.args else e}") from None
        return tuple(items)

    convert.__name__ = f"list_of_{cls.__name__}"
    return convert


_FIELD_OF = {LogitsDistillation: "logits", FeatureDistillation: "features"}


@attrs.frozen
class DistillConfig:
    """Settings of the ``distill`` step (defaults of the keras.io example).

    The student learns ``alpha * student_loss + (1 - alpha) * distillation_loss``,
    where ``distillation_loss`` is the weighted sum of the ``logits`` and
    ``features`` terms. The student's own regularisation losses are added at
    full strength; the teacher's never count.

    Attributes:
        alpha: weight of the student loss (``keras.distillation.Distiller``'s
            ``student_loss_weight``); ``1 - alpha`` weighs the distillation loss.
        temperature: temperature of the logits terms that set none.
        divergence: divergence of the logits terms that set none (``kl``,
            ``reverse_kl``, ``cross_entropy``, ``mse``).
        logits: the logits terms (:class:`LogitsDistillation` or mappings);
            by default one ``kl`` term of weight 1; empty for features only.
        features: the feature terms (:class:`FeatureDistillation` or mappings).

    Example::

        StepModel(nets, step="distill", config={"alpha": 0.1, "temperature": 10.0})
        StepModel(nets, step="distill", config={
            "alpha": 0.5, "temperature": 3.0,
            "features": [{"teacher_layer": "t_hidden", "student_layer": "s_hidden",
                          "projection": True, "weight": 0.5}]})
    """

    alpha: float = attrs.field(default=0.1, converter=float,
                               validator=[v.ge(0.0), v.le(1.0)])
    temperature: float = attrs.field(default=10.0, converter=float, validator=v.gt(0.0))
    divergence: str = attrs.field(default="kl", validator=_choice(DIVERGENCES))
    logits: Any = attrs.field(default=(LogitsDistillation(),),
                                converter=_terms(LogitsDistillation))
    features: Any = attrs.field(default=(), converter=_terms(FeatureDistillation))

    def __attrs_post_init__(self) -> None:
        if not self.logits and not self.features and self.alpha < 1.0:
            raise ValueError(
                "'logits' is empty and so is 'features', so there is nothing to distil. "
                f"Received: alpha={self.alpha}, logits=[], features=[]. Keep a logits or a "
                "feature term, or set alpha=1.0 to train on the labels alone.")

    def logits_terms(self) -> list[tuple[float, float, str]]:
        """``(weight, temperature, divergence)`` of each logits term, defaults filled in."""
        return [(t.weight, self.temperature if t.temperature is None else t.temperature,
                 self.divergence if t.divergence is None else t.divergence)
                for t in self.logits]
