"""One worker of a multi-worker run (started by stepkit.launch in test_multiworker.py).

Usage: multiworker_script.py KIND OUT_DIR EPOCHS KILL_AT
KILL_AT is "-" or "EPOCH:BATCH": worker 1 SIGKILLs itself there (a lost worker).
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stepkit import StepModel  # noqa: E402

kind, out_dir, epochs, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
index = int(os.environ.get("STEPKIT_WORKER_INDEX", "0"))
if "TF_CONFIG" in os.environ:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()

rng = np.random.default_rng(0)
if kind == "gan":
    x, y = rng.uniform(size=(64, 8, 8, 1)).astype("float32"), None
else:
    x = rng.normal(size=(96, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")

with strategy.scope():
    keras.utils.set_random_seed(0)
    if kind == "gan":
        model = StepModel(step="gan", config={"latent_dim": 8}, seed=1)
        model.compile()
    else:
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                                keras.layers.Dense(1)])
        model = StepModel(net, step="supervised", seed=1)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])


class KillWorker(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if kill_at != "-" and index == 1 and f"{self.epoch}:{batch}" == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


backup = os.path.join(out_dir, "backup", f"worker{index}")
history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                    callbacks=[keras.callbacks.BackupAndRestore(backup), KillWorker()])
result = {
    "history": history.history,
    "weights": [w.numpy().tolist() for w in model.weights],
    "iterations": {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()},
}
with open(os.path.join(out_dir, f"worker{index}.json"), "w") as f:
    json.dump(result, f)
