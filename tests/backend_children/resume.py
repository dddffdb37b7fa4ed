"""Child of test_backend_portability's resume tests: interrupted, resumed, uninterrupted.

``python resume.py WORKDIR`` runs, on its backend and for every case of :data:`RUNS`,
three fits of :data:`EPOCHS` epochs from the same initial weights (``shuffle=False``):

* ``interrupted``: ``keras.callbacks.BackupAndRestore(save_freq=...)`` and a callback
  raising after batch :data:`STOP_BATCH` of epoch :data:`STOP_EPOCH`;
* ``resumed``: a new model fit with the same backup directory (it restores and goes on);
* ``plain``: no backup, uninterrupted (shared by both save frequencies of a step).

It writes ``WORKDIR/<backend>_<step>_<freq>.npz`` (the weights and optimizer variables of
``resumed`` and ``plain``) and ``.json`` (histories; ``iterations`` when the resumed run
started; each run's final ``iterations``), or ``error`` in the ``.json``.
"""

import json
import os
import sys
import traceback

import keras
import numpy as np
from cases import build, describe, fit, snapshot

BACKEND = keras.backend.backend()
EPOCHS, STOP_EPOCH, STOP_BATCH = 3, 1, 3  # 5 batches an epoch: stop after its 4th
#: (step, save_freq): a backup every 2 batches (the last before the stop: after batch 2
#: of epoch 1, so batch 3 runs again) or at each epoch's end.
RUNS = (("supervised", 2), ("gan", 2), ("gan", "epoch"))


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == STOP_EPOCH and batch == STOP_BATCH:
            raise RuntimeError("interrupted on purpose")


class StartIterations(keras.callbacks.Callback):
    """Each role's ``iterations`` when training begins (after BackupAndRestore restored)."""

    def on_train_begin(self, logs=None):
        self.iterations = describe(self.model)["iterations"]


def _model(name: str, initial: list) -> object:
    model = build(name)
    model.set_weights(initial)
    return model


def run(workdir: str, name: str, freq: object, arrays: dict, initial: list,
        plain: tuple) -> tuple[dict, dict]:
    backup = os.path.join(workdir, f"{BACKEND}_{name}_{freq}_backup")
    try:
        fit(_model(name, initial), name, arrays, epochs=EPOCHS, callbacks=[
            keras.callbacks.BackupAndRestore(backup, save_freq=freq), Interrupt()])
    except RuntimeError as e:
        if "interrupted on purpose" not in str(e):
            raise
    else:
        raise AssertionError("the interrupted run was not interrupted")
    model, start = _model(name, initial), StartIterations()
    history = fit(model, name, arrays, epochs=EPOCHS, callbacks=[
        keras.callbacks.BackupAndRestore(backup, save_freq=freq), start])
    plain_model, plain_history = plain
    state = {**snapshot(model, "resumed_"), **snapshot(plain_model, "plain_")}
    meta = {"history": history, "plain_history": plain_history,
            "start_iterations": start.iterations,
            "iterations": describe(model)["iterations"],
            "plain_iterations": describe(plain_model)["iterations"]}
    return state, meta


def main(workdir: str) -> None:
    arrays = dict(np.load(os.path.join(workdir, "data.npz")))
    plains = {}
    for name, freq in RUNS:  # the parent reads "<step>_<freq>"
        stem = os.path.join(workdir, f"{BACKEND}_{name}_{freq}")
        try:
            if name not in plains:
                initial = build(name).get_weights()
                model = _model(name, initial)
                plains[name] = initial, (model, fit(model, name, arrays, epochs=EPOCHS))
            initial, plain = plains[name]
            state, meta = run(workdir, name, freq, arrays, initial, plain)
        except Exception:
            state, meta = {}, {"error": traceback.format_exc()[-3000:]}
        np.savez(stem + ".npz", **state)
        with open(stem + ".json", "w") as f:
            json.dump(meta, f)


if __name__ == "__main__":
    main(sys.argv[1])
