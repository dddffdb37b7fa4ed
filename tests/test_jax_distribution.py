"""keras.distribution on JAX: two CPU devices give one device's result.

One child process (``backend_children/jax_distribution.py``, JAX with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``) trains ``supervised`` and
``gan`` (two roles, noise from the model's seed generator) 2 epochs from the same
initial weights: on one device, under ``DataParallel`` over both devices, and under
``ModelParallel`` whose ``LayoutMap`` shards one hidden Dense kernel over a 'model' axis.
On JAX stepkit traces the step once over the global batch, so even the noisy step draws
the same numbers as on one device: histories agree to rel 1e-5 and every weight and
optimizer variable to atol 1e-5 (float32 sums in another order).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHILD = Path(__file__).parent / "backend_children" / "jax_distribution.py"
CASES = ("supervised", "gan")
#: Per case: the sharded kernel's path, its shape, and its optimizer slots' names.
SHARDED = {"supervised": ("net/net_hidden/kernel", (5, 8), ("momentum", "velocity")),
           "gan": ("discriminator/discriminator_hidden/kernel", (6, 8), ("momentum",))}
STEPS = 6  # 2 epochs of 48 rows in batches of 16
TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="needs jax installed (the child runs KERAS_BACKEND=jax)")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("jax_distribution")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 5)).astype("float32")
    np.savez(work / "data.npz", x=x,
             y=np.stack([x[:, 0] * 2 + 1, x[:, 1] - x[:, 2]], 1).astype("float32"),
             images=rng.uniform(size=(48, 6)).astype("float32"))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    with open(work / "child.log", "w") as log:
        try:
            subprocess.run([sys.executable, str(CHILD), str(work)], stdout=log,
                           stderr=subprocess.STDOUT, env=env, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    return work


def _run(work: Path, run: str, case: str) -> tuple[dict, dict]:
    stem = work / f"{run}_{case}"
    if not stem.with_suffix(".json").exists():
        tail = "\n".join((work / "child.log").read_text().strip().splitlines()[-25:])
        pytest.fail(f"the JAX child wrote nothing for {run}, {case}:\n{tail}")
    meta = json.loads(stem.with_suffix(".json").read_text())
    if "error" in meta:
        pytest.fail(f"{run}, {case}:\n{meta['error']}")
    return dict(np.load(stem.with_suffix(".npz"))), meta


def _assert_same_training(work: Path, run: str, case: str) -> dict:
    single, single_meta = _run(work, "single", case)
    state, meta = _run(work, run, case)
    assert meta["iterations"] == single_meta["iterations"]
    assert set(single_meta["iterations"].values()) == {STEPS}
    for name, values in single_meta["history"].items():
        np.testing.assert_allclose(meta["history"][name], values, rtol=1e-5, err_msg=name)
    assert sorted(state) == sorted(single)
    for key, value in single.items():
        np.testing.assert_allclose(state[key], value, atol=1e-5, err_msg=key)
    return meta


def test_the_child_sees_two_devices(workdir):
    assert json.loads((workdir / "devices.json").read_text()) == ["cpu:0", "cpu:1"]


@pytest.mark.parametrize("case", CASES)
def test_data_parallel_equals_one_device(workdir, case):
    meta = _assert_same_training(workdir, "data", case)
    for path, placed in meta["placement"].items():  # replicated on both devices
        assert placed["devices"] == 2 and not any(placed["spec"] or []), (path, placed)


@pytest.mark.parametrize("case", CASES)
def test_model_parallel_shards_the_kernel_and_equals_one_device(workdir, case):
    meta = _assert_same_training(workdir, "model", case)
    kernel, (rows, units), slots = SHARDED[case]
    slot_paths = [p for p in meta["placement"]
                  if p.split("/")[-1].endswith(tuple(f"{kernel.split('/')[-2]}_kernel_{s}"
                                                     for s in slots))]
    assert len(slot_paths) == len(slots), slot_paths
    sharded = {kernel, *slot_paths}
    for path, placed in meta["placement"].items():
        assert placed["devices"] == 2, (path, placed)
        if path in sharded:  # after training, still split by units: half on each device
            assert placed["spec"] == [None, "model"], (path, placed)
            assert placed["shards"] == [[rows, units // 2]] * 2, (path, placed)
        else:
            assert not any(placed["spec"] or []), (path, placed)
