"""Child process of the ``save_load`` check: load in a fresh interpreter, compare, train on.

Run as ``python -m stepkit.testing._load_child WORKDIR``. ``WORKDIR`` holds
``model.keras`` (saved after one epoch), ``meta.json`` (step, config, wrapper
specs, optimizer iterations, weight names, class paths of hand-registered
classes), ``arrays.npz`` (the weights when saved, ``w<i>``, and after one more
epoch of the original model, ``next<i>``) and ``data.pkl`` (the sample and
``predict`` on its first rows). A difference exits with a message on stderr
that starts with ``STEPKIT-LOAD:``; success prints ``STEPKIT-LOAD-OK``.
"""

import json
import os
import pickle
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402

import stepkit  # noqa: E402
from stepkit.config import unstructure_config  # noqa: E402
from stepkit.testing._child import register_classes  # noqa: E402

#: Tolerance of the weights after one more epoch (the same ops on the same data).
TOL = 1e-6


def _differ(what: str) -> None:
    sys.exit(f"STEPKIT-LOAD: {what}")


def _compare_weights(got: list, want: list, names: list[str], when: str, tol: float) -> None:
    if len(got) != len(want):
        _differ(f"{when}: {len(got)} weights, expected {len(want)}.")
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        d = float(np.max(np.abs(np.asarray(a, np.float64) - b))) if np.size(b) else 0.0
        if not d <= tol:
            _differ(f"{when}: weight {i} {names[i]!r} (shape {np.shape(b)}) differs by up to "
                    f"{d:.3g}.")


def main(workdir: str) -> None:
    with open(os.path.join(workdir, "meta.json")) as f:
        meta = json.load(f)
    register_classes(meta["step_class"], meta["wrapper_classes"])
    arrays = np.load(os.path.join(workdir, "arrays.npz"))
    with open(os.path.join(workdir, "data.pkl"), "rb") as f:
        data = pickle.load(f)
    m = stepkit.load_model(os.path.join(workdir, "model.keras"))
    n, names = meta["n_weights"], meta["weight_names"]
    _compare_weights(m.get_weights(), [arrays[f"w{i}"] for i in range(n)], names,
                     "the loaded weights", 0.0)
    if m.step.name != meta["step"]:
        _differ(f"the loaded step is {m.step.name!r}, expected {meta['step']!r}.")
    if unstructure_config(m.step.config) != meta["config"]:
        _differ(f"the loaded config is {m.step.config!r}, expected {meta['config']!r}.")
    wrappers = [w.spec() for w in m.wrappers]
    if wrappers != meta["wrappers"]:
        _differ(f"the loaded wrappers are {wrappers}, expected {meta['wrappers']}.")
    its = {r: int(o.iterations) for r, o in m.optimizers.items()}
    if its != meta["iterations"]:
        _differ(f"optimizer iterations after loading are {its}, expected {meta['iterations']}.")
    out = m.predict(data["predict_x"], verbose=0)
    keras.tree.assert_same_structure(out, data["predict_out"])
    for a, b in zip(keras.tree.flatten(out), keras.tree.flatten(data["predict_out"]),
                    strict=True):
        if not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            _differ(f"predict() after loading differs by up to {np.max(np.abs(a - b)):.3g}.")
    m.fit(data["x"], data["y"], batch_size=data["batch_size"], epochs=1, shuffle=False,
          verbose=0)
    _compare_weights(m.get_weights(), [arrays[f"next{i}"] for i in range(n)], names,
                     "after one more epoch, the loaded model's weights differ from the "
                     "original model's", TOL)
    print("STEPKIT-LOAD-OK")


if __name__ == "__main__":
    main(sys.argv[1])
