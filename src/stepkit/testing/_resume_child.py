"""Child process of the ``resume`` check: one fit of 5 epochs, maybe stalled, maybe resumed.

Run as ``python -m stepkit.testing._resume_child WORKDIR RUN``. ``WORKDIR``
holds ``model.keras`` (the compiled, built, untrained model) and ``sample.pkl``.
``RUN`` is

* ``victim``: fit with ``BackupAndRestore(WORKDIR/backup)``; after batch 1 of
  epoch index 2 it writes ``WORKDIR/marker`` and sleeps until the parent kills it;
* ``resumed``: the same fit with the same backup directory, so it resumes;
* ``plain``: the same fit without a backup, uninterrupted.

Each finished run writes ``WORKDIR/RUN.npz`` (the weights) and ``WORKDIR/RUN.json``
(every role's optimizer ``iterations``, the seed generator state, and the
``iterations`` when training started, after any restore).
"""

import json
import os
import pickle
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import stepkit  # noqa: E402
from stepkit.testing._child import register_classes  # noqa: E402

#: The epoch index and batch after which the victim stalls (the middle of epoch 3 of 5).
STALL_EPOCH, STALL_BATCH = 2, 1


class _Stall(keras.callbacks.Callback):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker, self.epoch = marker, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == STALL_EPOCH and batch == STALL_BATCH:
            with open(self.marker, "w"):
                pass
            time.sleep(3600)  # the parent kills this process with SIGKILL


class _Start(keras.callbacks.Callback):
    """Each role's optimizer ``iterations`` when training starts, after any restore."""

    def __init__(self) -> None:
        super().__init__()
        self.iterations = None

    def on_train_begin(self, logs=None):
        self.iterations = {r: int(o.iterations.numpy())
                           for r, o in self.model.optimizers.items()}


def main(workdir: str, run: str) -> None:
    with open(os.path.join(workdir, "sample.pkl"), "rb") as f:
        sample = pickle.load(f)
    register_classes(sample["step_class"], sample["wrapper_classes"])
    model = stepkit.load_model(os.path.join(workdir, "model.keras"))
    backup = os.path.join(workdir, "backup")
    start = _Start()
    callbacks = []
    if run in ("victim", "resumed"):
        callbacks.append(keras.callbacks.BackupAndRestore(backup,
                                                          save_freq=sample["save_freq"]))
    callbacks.append(start)  # after BackupAndRestore, which restores in on_train_begin
    if run == "victim":
        callbacks.append(_Stall(os.path.join(workdir, "marker")))
    model.fit(sample["x"], sample["y"], batch_size=sample["batch_size"],
              epochs=sample["epochs"], shuffle=False, verbose=0, callbacks=callbacks)
    np.savez(os.path.join(workdir, f"{run}.npz"), *[np.asarray(w) for w in model.get_weights()])
    out = {"iterations": {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()},
           "start_iterations": start.iterations,
           "seed_state": keras.ops.convert_to_numpy(model._seed_generator.state).tolist()}
    with open(os.path.join(workdir, f"{run}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
