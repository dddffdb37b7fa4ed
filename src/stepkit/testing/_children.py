"""The parent side of checks that run a step in child processes."""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

import keras
import numpy as np

from stepkit.testing._harness import Case, fail, step_class_path, wrapper_classes


def write_case(case: Case, tmp: str, check: str, **extra: Any) -> Any:
    """Save ``case``'s untrained model and its sample into ``tmp`` for a child process.

    The child rebuilds the model from ``model.keras`` (which stores the wrapper
    specs) and the data from ``sample.pkl`` (NumPy arrays, batch size, ``extra``
    settings and, for a step or wrappers registered by hand, their class paths:
    ``step_class``, ``wrapper_classes``). Returns the saved model.
    """
    step_class = step_class_path(case, check)
    wrappers = wrapper_classes(case, check)
    model = case.model()
    s = case.sample
    sample = {"x": keras.tree.map_structure(np.asarray, s.x),
              "y": None if s.y is None else keras.tree.map_structure(np.asarray, s.y),
              "batch_size": s.batch_size, "step_class": step_class,
              "wrapper_classes": wrappers, **extra}
    try:
        model.save(os.path.join(tmp, "model.keras"))
    except Exception as exc:
        fail(check, case, "the child processes rebuild the model from a .keras file, but "
                          f"saving the untrained model failed: {exc!r}. Give compile() "
                          "serializable arguments.")
    with open(os.path.join(tmp, "sample.pkl"), "wb") as f:
        pickle.dump(sample, f)
    return model


def child_env() -> dict[str, str]:
    """This process' environment for a child: quiet, CPU only, the same import path."""
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    path = os.pathsep.join(dict.fromkeys(p for p in [*inherited, *sys.path]
                                         if p and os.path.isdir(p)))
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
            "PYTHONPATH": path}


def read_weights(path: str) -> list[np.ndarray]:
    """The weights a child saved with ``np.savez(path, *weights)``, in order."""
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]
