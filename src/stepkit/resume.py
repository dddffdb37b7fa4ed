"""Resuming inside an epoch after ``BackupAndRestore(save_freq=<steps>)``.

Keras restores the weights saved after batch ``b`` of epoch ``e`` but then
replays epoch ``e`` from its first batch, so batches ``0..b`` are applied twice
and a resumed run ends with other weights than an uninterrupted one. stepkit
reads the backup's metadata when training begins and has the model skip those
``b + 1`` batches (they still come out of the data pipeline, in the same order,
but run no step). The resumed epoch's logged means then cover only the batches
run after the restart.
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras


class ResumeWithinEpoch(keras.callbacks.Callback):
    """Added by ``StepModel.fit``: skips the batches a mid-epoch backup already ran."""

    def __init__(self, callbacks: list[Any]) -> None:
        super().__init__()
        self._callbacks = callbacks

    def on_train_begin(self, logs: Any = None) -> None:
        skip = 0
        for cb in self._callbacks:
            if not isinstance(cb, keras.callbacks.BackupAndRestore) or cb.save_freq == "epoch":
                continue
            path = cb._training_metadata_path
            if not os.path.exists(path):
                continue
            with open(path) as f:
                meta = json.load(f)
            if self.model._initial_epoch == meta.get("epoch") and meta.get("batch") is not None:
                skip = int(meta["batch"]) + 1
        self.model._set_resume_skip(skip)


def with_resume(callbacks: Any) -> Any:
    """``callbacks`` plus a :class:`ResumeWithinEpoch` that runs after them."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    callbacks = list(callbacks or [])
    if any(isinstance(cb, keras.callbacks.BackupAndRestore) for cb in callbacks):
        callbacks.append(ResumeWithinEpoch(callbacks))
    return callbacks
