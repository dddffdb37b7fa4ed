"""The ``multiworker`` check: 2 workers under ``MultiWorkerMirroredStrategy`` on 127.0.0.1.

TensorFlow backend only: ``tf.distribute`` is TensorFlow's (see
:data:`stepkit.testing.backends.SKIPS`).

The kit saves the compiled, built, untrained model to ``.keras`` and pickles the
sample (as the ``replicas`` check does), then starts 2 worker processes with
``python -m stepkit.launch --workers 2`` (:mod:`stepkit.testing._multiworker_child`);
each loads the model inside ``MultiWorkerMirroredStrategy().scope()`` and fits
it with ``shuffle=False``. A third process fits the same model alone. Both
workers must end with identical weights and each role's optimizer
``iterations`` equal to the one-process run's; a deterministic step (one that
draws no ``ctx.normal`` / ``ctx.uniform`` noise) must also match the
one-process weights and history to 1e-5. Every run has :data:`TIMEOUT_S` seconds.

Example::

    from stepkit.testing.multiworker import check_multiworker

    check_multiworker("supervised", Sample(x, y), networks=make_net, compile={"loss": "mse"})
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np

from stepkit.testing._children import child_env, read_weights, write_case
from stepkit.testing._harness import (
    Case,
    as_check,
    check_finite,
    compare_histories,
    fail,
)
from stepkit.testing.backends import CheckSkipped, skip_reason

__all__ = ["TIMEOUT_S", "check_multiworker"]

#: Seconds each run (the 2-worker job, the one-process run) may take.
TIMEOUT_S = 300
_TOL = 1e-5


def _run(case: Case, tmp: str, run: str, cmd: list[str], what: str, n: int) -> list:
    env = {k: v for k, v in child_env().items() if k != "TF_CONFIG"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        fail("multiworker", case, f"the {what} did not finish within {TIMEOUT_S} s.")
    out = []
    for i in range(n):
        path = os.path.join(tmp, f"{run}{i}.json")
        if proc.returncode != 0 or not os.path.exists(path):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
            fail("multiworker", case, f"the {what} failed (exit code {proc.returncode}):\n{tail}")
        with open(path) as f:
            result = json.load(f)
        result["weights"] = read_weights(os.path.join(tmp, f"{run}{i}.npz"))
        out.append(result)
    return out


@as_check
def check_multiworker(case: Case) -> dict:
    """2 workers (MultiWorkerMirroredStrategy) against one process; see the module."""
    reason = skip_reason("multiworker", keras.backend.backend())
    if reason:
        raise CheckSkipped(reason)
    # Its path only: importing the child module would import TensorFlow here.
    script = importlib.util.find_spec("stepkit.testing._multiworker_child").origin
    with tempfile.TemporaryDirectory() as tmp:
        write_case(case, tmp, "multiworker", epochs=case.epochs)
        w0, w1 = _run(case, tmp, "mw", [sys.executable, "-m", "stepkit.launch", "--workers",
                                        "2", script, tmp, "mw"], "2-worker job", 2)
        (one,) = _run(case, tmp, "one", [sys.executable, script, tmp, "one"],
                      "one-process run", 1)
    if w0["replicas"] != 2:
        fail("multiworker", case, f"the workers had {w0['replicas']} replicas, expected 2.")
    check_finite("multiworker", case, w0["history"])
    for i, (a, b) in enumerate(zip(w0["weights"], w1["weights"], strict=True)):
        if not np.array_equal(a, b):
            fail("multiworker", case, f"weight {i} (shape {a.shape}) differs between the 2 "
                                      "workers: every worker must apply the same update.")
    if w0["iterations"] != one["iterations"]:
        fail("multiworker", case, f"optimizer iterations on 2 workers {w0['iterations']} "
                                  f"differ from one process's {one['iterations']}.")
    report = {"uses_noise": one["uses_noise"], "iterations": one["iterations"]}
    if one["uses_noise"]:
        return report
    report["max_diff"] = compare_histories("multiworker", case, w0["history"], one["history"],
                                           tol=_TOL)
    w_diff = 0.0
    for i, (a, b) in enumerate(zip(one["weights"], w0["weights"], strict=True)):
        d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        w_diff = max(w_diff, d)
        if d > _TOL:
            fail("multiworker", case, f"weight {i} (shape {a.shape}) on 2 workers differs from "
                                      f"one process's by up to {d:.3g}.")
    report["weights_max_diff"] = w_diff
    return report
