"""One worker of the ``multiworker`` check (or the one-process reference run).

Run as ``python -m stepkit.launch --workers 2 THIS_FILE WORKDIR RUN`` (each
worker gets ``TF_CONFIG`` and trains under ``MultiWorkerMirroredStrategy``) or
as ``python THIS_FILE WORKDIR RUN`` without ``TF_CONFIG`` (the default
strategy). ``WORKDIR`` holds ``model.keras`` and ``sample.pkl``; worker ``N``
writes ``WORKDIR/RUN<N>.npz`` (weights) and ``WORKDIR/RUN<N>.json``.
"""

import json
import os
import pickle
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import stepkit  # noqa: E402
from stepkit.testing._child import register_classes  # noqa: E402


def main(workdir: str, run: str) -> None:
    index = int(os.environ.get("STEPKIT_WORKER_INDEX", "0"))
    with open(os.path.join(workdir, "sample.pkl"), "rb") as f:
        sample = pickle.load(f)
    register_classes(sample["step_class"], sample["wrapper_classes"])
    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    with strategy.scope():  # the model and its optimizers must be created in the scope
        model = stepkit.load_model(os.path.join(workdir, "model.keras"))
    before = keras.ops.convert_to_numpy(model._seed_generator.state)
    history = model.fit(sample["x"], sample["y"], batch_size=sample["batch_size"],
                        epochs=sample["epochs"], shuffle=False, verbose=0).history
    np.savez(os.path.join(workdir, f"{run}{index}.npz"),
             *[np.asarray(w) for w in model.get_weights()])
    out = {"history": {k: [float(v) for v in vals] for k, vals in history.items()},
           "iterations": {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()},
           "replicas": strategy.num_replicas_in_sync,
           "uses_noise": not np.array_equal(
               before, keras.ops.convert_to_numpy(model._seed_generator.state))}
    with open(os.path.join(workdir, f"{run}{index}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
