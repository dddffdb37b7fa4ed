"""Child process of the ``replicas`` check: 2 logical CPU devices, then the runs.

Run as ``python -m stepkit.testing._replica_child WORKDIR``. ``WORKDIR`` holds
``model.keras`` (the compiled, built, untrained model) and ``sample.pkl``; the
results go to ``WORKDIR/result.json``. Logical devices must be configured before
TensorFlow initialises, so this module does that before importing stepkit.
"""

import json
import os
import pickle
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import stepkit  # noqa: E402
from stepkit.testing._child import register_classes  # noqa: E402


def _train(path: str, sample: dict, strategy, weights: str, reseed: bool = False) -> dict:
    with strategy.scope():
        model = stepkit.load_model(path)
    generator = model._seed_generator
    if reseed:  # a different noise stream, same weights: measures the noise spread
        generator.state.assign(keras.ops.convert_to_tensor([12345, 0], generator.state.dtype))
    before = keras.ops.convert_to_numpy(generator.state)
    history = model.fit(sample["x"], sample["y"], batch_size=sample["batch_size"],
                        epochs=sample["epochs"], shuffle=False, verbose=0).history
    np.savez(weights, *[np.asarray(w) for w in model.get_weights()])
    return {
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
        "iterations": {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()},
        "uses_noise": not np.array_equal(before, keras.ops.convert_to_numpy(generator.state)),
    }


def main(workdir: str) -> None:
    path = os.path.join(workdir, "model.keras")
    with open(os.path.join(workdir, "sample.pkl"), "rb") as f:
        sample = pickle.load(f)
    register_classes(sample["step_class"], sample["wrapper_classes"])
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": two.num_replicas_in_sync}
    for run, strategy, reseed in [("one", one, False), ("one_reseeded", one, True),
                                  ("two", two, False)]:
        if run == "one_reseeded" and not out["one"]["uses_noise"]:
            continue
        try:
            out[run] = _train(path, sample, strategy, os.path.join(workdir, f"{run}.npz"),
                              reseed)
        except Exception as exc:  # reported by the parent, with the run that failed
            out[run] = {"error": "".join(traceback.format_exception_only(exc)).strip()[-3000:]}
            break
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
