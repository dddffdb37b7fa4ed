"""Child process of the ``replicas`` check on JAX: ``keras.distribution.DataParallel``.

Run as ``KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2
python -m stepkit.testing._replica_child_jax WORKDIR``: XLA gives the process 2
CPU devices (the flag must be set before JAX starts, hence a child). ``WORKDIR``
holds ``model.keras`` (the compiled, built, untrained model) and ``sample.pkl``.
The model is trained on the default device (``one``), then loaded and trained
again inside ``DataParallel(devices=<2 CPU devices>).scope()`` (``two``); each
run writes ``WORKDIR/<run>.npz`` (weights), and ``WORKDIR/result.json`` holds
both runs' history, optimizer iterations, whether the seed generator advanced
and the mesh the variables were laid out on.
"""

import contextlib
import json
import os
import pickle
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import stepkit  # noqa: E402
from stepkit.testing._child import register_classes  # noqa: E402


def _train(path: str, sample: dict, distribution, weights: str) -> dict:
    with distribution.scope() if distribution is not None else contextlib.nullcontext():
        model = stepkit.load_model(path)
        before = keras.ops.convert_to_numpy(model._seed_generator.state)
        history = model.fit(sample["x"], sample["y"], batch_size=sample["batch_size"],
                            epochs=sample["epochs"], shuffle=False, verbose=0).history
    np.savez(weights, *[np.asarray(w) for w in model.get_weights()])
    sharding = model.trainable_variables[0].value.sharding
    return {
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
        "iterations": {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()},
        "uses_noise": not np.array_equal(before, keras.ops.convert_to_numpy(
            model._seed_generator.state)),
        "mesh": dict(getattr(getattr(sharding, "mesh", None), "shape", {}) or {}),
    }


def main(workdir: str) -> None:
    path = os.path.join(workdir, "model.keras")
    with open(os.path.join(workdir, "sample.pkl"), "rb") as f:
        sample = pickle.load(f)
    register_classes(sample["step_class"], sample["wrapper_classes"])
    devices = jax.devices("cpu")
    out = {"replicas": len(devices[:2])}
    runs = [("one", None), ("two", keras.distribution.DataParallel(devices=devices[:2]))]
    for run, distribution in runs:
        try:
            out[run] = _train(path, sample, distribution, os.path.join(workdir, f"{run}.npz"))
        except Exception as exc:  # reported by the parent, with the run that failed
            out[run] = {"error": "".join(traceback.format_exception(exc))[-4000:]}
            break
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
