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
