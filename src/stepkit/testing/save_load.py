"""The ``save_load`` check: a fresh interpreter loads the model and trains on exactly as it would.

After one epoch the kit saves the model to ``.keras`` and trains the original
one more epoch. A fresh interpreter (:mod:`stepkit.testing._load_child`) loads
the file with :func:`stepkit.load_model` and must restore the same weights
(exactly), step name, config, wrapper stack (every wrapper's ``spec()``), every
optimizer's ``iterations`` and ``predict`` output on the first 8 rows of
``predict_x`` (rtol 1e-5, atol 1e-6); then it trains the loaded model one epoch
on the same data, which must give the original model's weights to
:data:`~stepkit.testing._load_child.TOL`. That last comparison catches state
that is not saved: a counter or an average kept in a Python attribute, a
variable made outside ``ctx.add_state`` / ``Wrapper.add_state``. The fresh
interpreter finds installed steps and wrappers through their entry points and
imports those registered by hand from their modules.

Example::

    from stepkit.testing.save_load import check_save_load

    check_save_load("supervised", Sample(x, y), networks=make_net,
                    compile={"loss": "mse"}, wrappers=["lookahead"])
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any

import keras
import numpy as np

from stepkit.config import unstructure_config
from stepkit.testing._children import child_env
from stepkit.testing._harness import (
    Case,
    as_check,
    fail,
    iterations,
    step_class_path,
    wrapper_classes,
)

__all__ = ["check_save_load"]

_NOT_SAVED = (" State that is not a model weight (a Python attribute, a variable not made "
              "with ctx.add_state or Wrapper.add_state) is lost by saving.")


def _head(tree: Any, n: int) -> Any:
    """The first ``n`` rows of every array in ``tree`` (an array or a structure of arrays)."""
    return keras.tree.map_structure(lambda a: np.asarray(a)[:n], tree)


def _write(case: Case, model: Any, tmp: str) -> dict:
    s = case.sample
    px = _head(s.predict_x if s.predict_x is not None else s.x, 8)
    model.save(os.path.join(tmp, "model.keras"))
    weights = model.get_weights()
    meta = {"step": case.step, "config": unstructure_config(model.step.config),
            "wrappers": [w.spec() for w in model.wrappers],
            "iterations": iterations(model), "n_weights": len(weights),
            "weight_names": [v.path for v in model.weights],
            "step_class": step_class_path(case, "save_load"),
            "wrapper_classes": wrapper_classes(case, "save_load")}
    with open(os.path.join(tmp, "data.pkl"), "wb") as f:
        pickle.dump({"predict_x": px, "predict_out": _head(model.predict(px, verbose=0), 8),
                     "x": s.x, "y": s.y, "batch_size": s.batch_size}, f)
    case.fit(model, epochs=1)  # the original trains on: what the loaded model must match
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({f"next{i}": w for i, w in enumerate(model.get_weights())})
    np.savez(os.path.join(tmp, "arrays.npz"), **arrays)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f)
    return meta


@as_check
def check_save_load(case: Case) -> dict:
    """Save to ``.keras``; a fresh interpreter restores it and trains on alike (see the module)."""
    model = case.model()
    case.fit(model, epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        meta = _write(case, model, tmp)
        proc = subprocess.run([sys.executable, "-m", "stepkit.testing._load_child", tmp],
                              capture_output=True, text=True, env=child_env(), timeout=300)
    if proc.returncode != 0 or "STEPKIT-LOAD-OK" not in proc.stdout:
        lines = proc.stderr.strip().splitlines()
        known = [ln for ln in lines if ln.startswith("STEPKIT-LOAD: ")]
        if known:
            what = known[-1].removeprefix("STEPKIT-LOAD: ")
            fail("save_load", case, f"in a fresh interpreter, {what}"
                                    f"{_NOT_SAVED if 'one more epoch' in what else ''}")
        tail = "\n".join(lines[-8:])
        fail("save_load", case, f"loading in a fresh interpreter failed:\n{tail}")
    return {"iterations": meta["iterations"], "wrappers": meta["wrappers"]}
