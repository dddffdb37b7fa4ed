"""The ``replicas`` check: 2 devices against one (MirroredStrategy; DataParallel on JAX).

Logical devices must be configured before TensorFlow initialises, so the runs
happen in a child interpreter (:mod:`stepkit.testing._replica_child`). The kit
hands it the case as files: the compiled, built, untrained model saved to
``.keras`` (networks, weights, seed, step config and ``compile()`` arguments)
and the sample pickled as NumPy arrays, so the model must be savable. The
child finds installed steps through entry points; a step registered by hand
(``stepkit.register_plugin``) is imported there by its class's module and
qualified name, with the parent's ``sys.path``, so its class must be defined
at module level.

The child trains the model under ``OneDeviceStrategy("/cpu:0")`` and under
``MirroredStrategy`` over ``/cpu:0`` and ``/cpu:1``, with the same global batch
and seed:

* a deterministic step (one that draws no ``ctx.normal`` / ``ctx.uniform``
  noise; the child sees whether the model's seed generator advanced) must give
  the same history and weights to 1e-5;
* a noisy step draws different noise on each replica, so it must train (finite
  history, every role's optimizer ``iterations`` equal to the one-device run's)
  and report unscaled values: at the first epoch each value is within 35% of
  the one-device figure (a loss left divided by 2 replicas would be half), for
  every value whose spread under a different noise seed is below that margin.

On JAX the child (:mod:`stepkit.testing._replica_child_jax`) gets 2 CPU devices
from ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and trains under
``keras.distribution.DataParallel`` over both against one device. JAX traces the
step once over the global batch and XLA shards it, so every step, noisy or not,
must give the one-device history and weights to 1e-5. Keras' torch backend has
no multi-device ``fit``: the check is skipped there.

Example::

    from stepkit.testing.replicas import check_replicas

    check_replicas("gan", Sample(images[:40], batch_size=16), config={"latent_dim": 8})
"""

from __future__ import annotations

import importlib
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
    max_diff,
)
from stepkit.testing.backends import TWO_CPU_DEVICES, CheckSkipped, skip_reason

__all__ = ["RTOL_NOISY", "check_replicas"]

#: Tolerance of a noisy step's first-epoch values against the one-device run.
RTOL_NOISY = 0.35
_TOL = 1e-5


def _run_child(case: Case, module: str = "stepkit.testing._replica_child",
               here: bool = False, **env: str) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """The runs of ``module`` on the saved case: in a child process, or ``here``."""
    with tempfile.TemporaryDirectory() as tmp:
        write_case(case, tmp, "replicas", epochs=case.epochs)
        if here:
            importlib.import_module(module).main(tmp)
            proc = subprocess.CompletedProcess([], 0, "", "")
        else:
            proc = subprocess.run([sys.executable, "-m", module, tmp], capture_output=True,
                                  text=True, env={**child_env(), **env}, timeout=600)
        result_path = os.path.join(tmp, "result.json")
        if proc.returncode != 0 or not os.path.exists(result_path):
            tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
            fail("replicas", case, f"the 2-replica child process failed:\n{tail}")
        with open(result_path) as f:
            result = json.load(f)
        weights = {}
        for run in result:
            path = os.path.join(tmp, f"{run}.npz")
            if os.path.exists(path):
                weights[run] = read_weights(path)
    return result, weights


def _check_errors(case: Case, result: dict) -> None:
    for run, what in [("one", "OneDeviceStrategy('/cpu:0')"),
                      ("one_reseeded", "OneDeviceStrategy('/cpu:0') with another noise seed"),
                      ("two", "MirroredStrategy over 2 logical CPU devices")]:
        if "error" in result.get(run, {}):
            fail("replicas", case, f"fit() under {what} raised:\n{result[run]['error']}")


def _check_iterations(case: Case, one: dict, two: dict) -> None:
    if two["iterations"] != one["iterations"]:
        fail("replicas", case, f"optimizer iterations under 2 replicas {two['iterations']} "
                               f"differ from one device's {one['iterations']}: each global "
                               "batch must be one optimizer step per role.")
    if not any(one["iterations"].values()):
        fail("replicas", case, f"no optimizer stepped: iterations {one['iterations']}.")


_DETERMINISTIC_HINT = (
    " The step draws no ctx.normal/ctx.uniform noise, so 2 replicas must equal one device: "
    "are losses plain per-replica means, and tracked values weighted by ctx.batch_size(x)? "
    "Randomness outside ctx.normal/uniform (dropout, keras.random) also differs per replica.")


def _check_deterministic(case: Case, one: dict, two: dict, w_one: list, w_two: list,
                         hint: str = _DETERMINISTIC_HINT) -> dict:
    try:
        diff = compare_histories("replicas", case, two["history"], one["history"], tol=_TOL)
    except AssertionError as exc:
        raise type(exc)(f"{exc}{hint}") from None
    if len(w_one) != len(w_two):
        fail("replicas", case, f"{len(w_two)} weights under 2 replicas, {len(w_one)} on one.")
    w_diff = 0.0
    for i, (a, b) in enumerate(zip(w_one, w_two, strict=True)):
        d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        w_diff = max(w_diff, d)
        if not np.allclose(b, a, rtol=_TOL, atol=_TOL):
            fail("replicas", case, f"weight {i} (shape {a.shape}) after training under 2 "
                                   f"replicas differs from one device's by up to {d:.3g}.{hint}")
    return {"max_diff": diff, "weights_max_diff": w_diff}


def _check_noisy(case: Case, one: dict, reseeded: dict, two: dict) -> dict:
    checked, unchecked, ratios = [], [], {}
    for key, values in one["history"].items():
        ref, got = values[0], two["history"][key][0]
        spread = abs(reseeded["history"][key][0] - ref)
        ratios[key] = got / ref if ref else float("nan")
        if spread >= RTOL_NOISY * abs(ref):  # noise alone moves it this much: not telling
            unchecked.append(key)
            continue
        checked.append(key)
        if abs(got - ref) > RTOL_NOISY * abs(ref):
            half = " (about half: a loss left scaled by 1/replicas?)" if (
                abs(got - ref / 2) < abs(got - ref)) else ""
            fail("replicas", case, f"{key!r} at the first epoch is {got:.4g} under 2 replicas, "
                                   f"{ref:.4g} on one device: more than {RTOL_NOISY:.0%} apart"
                                   f"{half}; another noise seed moves it by only {spread:.3g}.")
    if not checked:
        fail("replicas", case, f"every reported value ({sorted(one['history'])}) moves by "
                               f"{RTOL_NOISY:.0%} or more under another noise seed, so the check "
                               "cannot tell whether losses are unscaled: use a larger sample.")
    return {"checked": checked, "too_noisy": unchecked, "ratios": ratios,
            "max_diff": max_diff(two["history"], one["history"])}


def _check_jax(case: Case) -> dict:
    import jax

    # A process that already has 2 CPU devices (the kit's child for another backend) runs
    # the same code without starting another interpreter.
    here = len(jax.devices("cpu")) >= 2
    result, weights = _run_child(case, "stepkit.testing._replica_child_jax", here=here,
                                 XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                                           f"{TWO_CPU_DEVICES}".strip())
    for run, what in [("one", "one device"), ("two", "DataParallel over 2 CPU devices")]:
        if "error" in result.get(run, {}):
            fail("replicas", case, f"fit() under {what} raised:\n{result[run]['error']}")
    one, two = result["one"], result["two"]
    if two["mesh"] != {"batch": 2}:
        fail("replicas", case, f"DataParallel laid the variables out on the mesh {two['mesh']}, "
                               "expected {'batch': 2}.")
    check_finite("replicas", case, two["history"])
    _check_iterations(case, one, two)
    hint = (" On JAX, keras.distribution traces the step once over the global batch (sharded "
            "by XLA), so 2 devices must equal one, noise included: does the step keep state "
            "outside the model's variables, or draw randomness outside ctx.normal/uniform?")
    report = _check_deterministic(case, one, two, weights["one"], weights["two"], hint)
    return {"uses_noise": one["uses_noise"], "iterations": two["iterations"],
            "replicas": 2, "distribution": "DataParallel", **report}


@as_check
def check_replicas(case: Case) -> dict:
    """2 replicas (MirroredStrategy, 2 logical CPUs) against one device; see the module.

    On JAX: ``keras.distribution.DataParallel`` over 2 CPU devices, which must equal
    one device for every step; torch is skipped (:data:`stepkit.testing.backends.SKIPS`).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _check_jax(case)
    if skip_reason("replicas", backend):
        raise CheckSkipped(skip_reason("replicas", backend))
    result, weights = _run_child(case)
    _check_errors(case, result)
    one, two = result["one"], result["two"]
    if result["replicas"] != 2:
        fail("replicas", case, f"the child had {result['replicas']} replicas, expected 2.")
    check_finite("replicas", case, two["history"])
    if set(two["history"]) != set(one["history"]):
        fail("replicas", case, f"history keys under 2 replicas {sorted(two['history'])} differ "
                               f"from one device's {sorted(one['history'])}.")
    _check_iterations(case, one, two)
    report = {"uses_noise": one["uses_noise"], "iterations": two["iterations"]}
    if one["uses_noise"]:
        report.update(_check_noisy(case, one, result["one_reseeded"], two))
    else:
        report.update(_check_deterministic(case, one, two, weights["one"], weights["two"]))
    return report

