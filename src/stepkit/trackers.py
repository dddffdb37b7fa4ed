"""The epoch means a step reports with ``ctx.track``, with the direction of each.

Keras' ``EarlyStopping``, ``ModelCheckpoint`` and ``ReduceLROnPlateau`` in
``mode="auto"`` know whether to minimise or maximise a monitored value only for
``loss`` and compile metrics: they read a metric's direction from the metric
lists the model holds. The trackers of a step are held in such a list, so
``EarlyStopping(monitor="val_d_loss")`` works without ``mode=``.

``keras.src.trainers.compile_utils.MetricsList`` is private Keras API; the
tests pin that ``EarlyStopping`` reads directions through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras.src.trainers.compile_utils import MetricsList
from keras.src.trainers.trainer import Trainer

from stepkit.errors import StepDefinitionError

DIRECTIONS = ("up", "down")


def direction(name: str, declared: Mapping[str, str]) -> str | None:
    """``"up"``, ``"down"`` or None (unknown) for tracked value ``name``.

    A step declares directions in ``Step.directions``; a name ending in
    ``loss`` is minimised unless declared otherwise.
    """
    if name in declared:
        return declared[name]
    return "down" if name.endswith("loss") else None


class StepTrackers(MetricsList):
    """The batch-size-weighted means of a step's tracked values (one ``Mean`` each)."""

    def __init__(self, names: Sequence[str], directions: Mapping[str, str]) -> None:
        means = []
        for n in names:
            mean = keras.metrics.Mean(name=n)
            d = direction(n, directions)
            if d is not None:
                mean._direction = d
            means.append(mean)
        super().__init__(means, name="step_trackers")
        self._by_name = {m.name: m for m in means}

    def __getitem__(self, name: str) -> Any:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Update one tracked value at a time: ctx.track(name, value, batch_size).")

    def result(self) -> dict[str, Any]:
        return {m.name: m.result() for m in self.metrics}


def _metric_label(metric: Any) -> str:
    return f"{type(metric).__name__}(name={metric.name!r})"


class MetricsMixin:
    """Logged names of :class:`stepkit.StepModel`: Keras' rules, plus the networks' metrics."""

    def _check_metric_names(self) -> None:
        # Keras makes compile metric names unique (output-name prefixes, `weighted_`,
        # `_1`) and lets its own per-output loss trackers share a name; stepkit does not
        # second-guess that. What it refuses is a value the step tracks being shadowed
        # by another value under the same log key (a compile metric named "d_loss").
        owned = {id(self._step_trackers)}
        if "loss" in self.step.tracked and self._loss_tracker is not None:
            owned.add(id(self._loss_tracker))
        owner: dict[str, Any] = {}
        for m in self.metrics:
            if m is self._compile_metrics and m.built:
                keys = list(m.result())
            elif m is self._step_trackers:
                keys = [t.name for t in m.metrics]
            else:
                keys = [m.name]
            for key in keys:
                prev = owner.setdefault(key, m)
                if prev is not m and (id(prev) in owned or id(m) in owned):
                    raise ValueError(
                        f"Two different values would be logged as {key!r} for step "
                        f"{self.step.name!r} (one shadows the other): "
                        f"{_metric_label(prev)} and {_metric_label(m)}. The step "
                        f"tracks {list(self.step.tracked)}; rename the compile metric "
                        "(e.g. keras.metrics.MeanSquaredError(name=...))."
                    )

    @property
    def metrics(self) -> list[Any]:
        """Keras' metrics, plus the metrics the networks hold themselves.

        ``keras.Model`` skips the metrics of nested models; a network's own
        trackers (created in a subclassed network) are reported as Keras
        reports them for that network alone.
        """
        found = list(super().metrics)
        known = {id(m) for m in found}
        for net in self.__dict__.get("_networks", {}).values():
            if not isinstance(net, Trainer):
                continue  # Keras lists a plain layer's metrics; it skips a nested trainer's
            compiled = {id(getattr(net, a, None)) for a in
                        ("_loss_tracker", "_compile_metrics", "_compile_loss")}
            for m in net.metrics:
                if id(m) not in known and id(m) not in compiled:
                    found.append(m)
                    known.add(id(m))
        return found

    def _tracker_for(self, name: str) -> Any:
        if name == "loss" and "loss" in self.step.tracked:
            return self._loss_tracker
        if self._step_trackers is not None and name in self._step_trackers:
            return self._step_trackers[name]
        raise StepDefinitionError(
            f"Step {self.step.name!r} tracked {name!r}, which is not in its `tracked` names "
            f"{list(self.step.tracked)}. Add it to `tracked`."
        )
