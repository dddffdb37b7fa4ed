"""Files portable across backends, and BackupAndRestore resuming on JAX and torch.

A ``.keras`` file saved on one backend loads, predicts and trains on every other one.

One child process per backend (``backend_children/portable.py``, all three at once)
trains each case 1 epoch, saves it, then loads the other two backends' files with
``stepkit.load_model``. Cases: ``supervised`` (Adam), ``gan`` (two roles: Adam and SGD
with momentum, noise from the model's seed generator) and the ``vae`` plugin (one
RMSprop with momentum over two networks). For every ordered pair of backends:

* every weight (the step counter and the RNG state included) and every optimizer
  variable (``iterations``, learning rate, each slot) arrives with the saved value;
* ``predict`` agrees to rtol 1e-5, atol 1e-6 (float32 on different kernels);
* one more epoch continues from the saved optimizer state: for ``supervised`` it equals
  the source backend's own 2nd epoch (atol 1e-5); for the noisy steps (each backend draws
  its own numbers from a seed) it equals a model built on the loading backend with the
  saved weights and optimizer variables assigned by hand (atol 1e-6). The same file with
  freshly compiled optimizers ends elsewhere (by more than 1e-3), so a dropped
  ``iterations`` or slot would fail these checks.

A fit interrupted mid-epoch (a callback raises) with ``BackupAndRestore(save_freq=2)``,
or at an epoch's end (``save_freq="epoch"``), then fit again with the same backup, ends
with the uninterrupted run's weights, optimizer variables and last epoch's logs, on JAX
and torch (``backend_children/resume.py``; TensorFlow: ``stepkit.testing.resume``).
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BACKENDS = ("tensorflow", "jax", "torch")
CASES = ("supervised", "gan", "vae")
PAIRS = [(src, dst) for src in BACKENDS for dst in BACKENDS if src != dst]
CHILDREN = Path(__file__).parent / "backend_children"
TIMEOUT_S = 600
RESUME_BACKENDS = ("jax", "torch")
RESUME_RUNS = [("supervised", "2"), ("gan", "2"), ("gan", "epoch")]  # as resume.py's RUNS

_missing = [b for b in BACKENDS if importlib.util.find_spec(b) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"needs {', '.join(_missing)} installed "
                                                      "to run a child process per backend")


def child_env(backend: str) -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")])}


def _write_data(workdir: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 5)).astype("float32")
    np.savez(workdir / "data.npz", x=x,
             y=np.stack([x[:, 0] * 2 + 1, x[:, 1] - x[:, 2]], 1).astype("float32"),
             images=rng.uniform(size=(rows, 6)).astype("float32"),
             z=rng.normal(size=(4, 4)).astype("float32"),
             z_vae=rng.normal(size=(4, 2)).astype("float32"))


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Starts every child at once (3 saving and loading, 2 resuming); waits for them all."""
    work, resume = tmp_path_factory.mktemp("portable"), tmp_path_factory.mktemp("resume")
    _write_data(work, 48)  # 3 batches of 16
    _write_data(resume, 80)  # 5 batches of 16
    runs = [(work, b, ["portable.py", str(work), *(o for o in BACKENDS if o != b)])
            for b in BACKENDS]
    runs += [(resume, b, ["resume.py", str(resume)]) for b in RESUME_BACKENDS]
    procs, start = [], time.monotonic()
    for folder, backend, args in runs:
        log = open(folder / f"{backend}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, str(CHILDREN / args[0]), *args[1:]],
                                       stdout=log, stderr=subprocess.STDOUT,
                                       env=child_env(backend)), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=max(TIMEOUT_S - (time.monotonic() - start), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return work, resume


@pytest.fixture(scope="module")
def workdir(children):
    return children[0]


def _log_tail(work: Path, backend: str) -> str:
    lines = (work / f"{backend}.log").read_text().strip().splitlines()
    return "\n".join(lines[-25:])


def _result(work: Path, src: str, dst: str, case: str) -> tuple[dict, dict, dict]:
    """(the loaded arrays, the loading child's notes, the saved arrays) of one pair."""
    for backend in (src, dst):
        if not (work / f"{backend}.saved").exists():
            pytest.fail(f"the {backend} child did not save its files:\n"
                        f"{_log_tail(work, backend)}")
    stem = work / dst / f"from_{src}_{case}"
    if not stem.with_suffix(".json").exists():
        pytest.fail(f"the {dst} child wrote no result for {src}'s {case}:\n"
                    f"{_log_tail(work, dst)}")
    meta = json.loads(stem.with_suffix(".json").read_text())
    if "error" in meta:
        pytest.fail(f"{dst} could not load and train {src}'s {case} file:\n{meta['error']}")
    return dict(np.load(stem.with_suffix(".npz"))), meta, dict(np.load(work / src / f"{case}.npz"))


def _keys(saved: dict, floats_only: bool = False) -> list[str]:
    keys = [k[len("saved_"):] for k in saved if k.startswith("saved_")]
    return [k for k in keys if not floats_only or saved["saved_" + k].dtype.kind == "f"]


def _max_diff(a: dict, prefix_a: str, b: dict, prefix_b: str, keys: list[str]) -> float:
    return max(float(np.max(np.abs(a[prefix_a + k].astype("float64")
                                   - b[prefix_b + k].astype("float64"))))
               for k in keys if a[prefix_a + k].size)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_loads_every_weight_and_optimizer_variable(workdir, src, dst, case):
    loaded, meta, saved = _result(workdir, src, dst, case)
    source = json.loads((workdir / src / f"{case}.json").read_text())["saved"]
    keys = _keys(saved)
    assert sorted(k for k in loaded if k.startswith("loaded_")) == sorted(
        "loaded_" + k for k in keys), "the loaded model has other weights or optimizer variables"
    assert meta["loaded"]["iterations"] == source["iterations"]
    assert all(n > 0 for n in source["iterations"].values()), source["iterations"]
    # Names: a built-then-trained network's variable paths carry its name, a loaded one's
    # do not (Keras, on every backend), so the last component is compared.
    assert [p.split("/")[-1] for p in meta["loaded"]["weights"]] == [
        p.split("/")[-1] for p in source["weights"]]
    for role, paths in source["optimizers"].items():
        assert len(meta["loaded"]["optimizers"][role]) == len(paths), role
    differ = [k for k in keys if not np.array_equal(loaded["loaded_" + k], saved["saved_" + k])]
    assert not differ, f"{src} -> {dst}: {differ} changed on the way (w: model.weights, " \
                       "opt:<role>:<i>: optimizer variables)"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_predicts_the_same(workdir, src, dst, case):
    loaded, _, saved = _result(workdir, src, dst, case)
    np.testing.assert_allclose(loaded["pred"], saved["pred"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_continues_training_from_the_saved_optimizer_state(workdir, src, dst, case):
    loaded, meta, saved = _result(workdir, src, dst, case)
    steps = {"supervised": 3, "gan": 3, "vae": 3}[case]  # 48 rows in batches of 16
    opt_iterations = [k for k in _keys(saved) if k.startswith("opt:") and k.endswith(":0")]
    for k in opt_iterations:  # variable 0 of a Keras optimizer is `iterations`
        assert int(loaded["cont_" + k]) == int(saved["saved_" + k]) + steps, k
    floats = _keys(saved, floats_only=True)
    if case == "supervised":
        # Deterministic: the source backend's own uninterrupted 2nd epoch, to float32 noise.
        diff = _max_diff(loaded, "cont_", saved, "own_", floats)
        assert diff < 1e-5, f"{src} -> {dst}: 1 more epoch differs from {src}'s own by {diff}"
    else:
        diff = _max_diff(loaded, "cont_", loaded, "ref_", floats)
        assert diff < 1e-6, (f"{src} -> {dst}: 1 more epoch from the file differs by {diff} "
                             "from a model given the saved state by hand")
        ints = [k for k in _keys(saved) if k not in floats]  # RNG state, counters
        for k in ints:
            assert np.array_equal(loaded["cont_" + k], loaded["ref_" + k]), k


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dst", BACKENDS)
def test_the_continuation_check_sees_dropped_optimizer_state(workdir, dst, case):
    """Fresh optimizers on the same file end far from the continuation (first source only)."""
    done = [src for src in BACKENDS if src != dst
            and (workdir / dst / f"from_{src}_{case}.npz").exists()
            and "fresh_w0" in np.load(workdir / dst / f"from_{src}_{case}.npz")]
    if not done:
        pytest.fail(f"{dst} ran no fresh-optimizer continuation:\n{_log_tail(workdir, dst)}")
    loaded, _, saved = _result(workdir, done[0], dst, case)
    floats = [k for k in _keys(saved, floats_only=True) if k.startswith("w")]
    assert _max_diff(loaded, "cont_", loaded, "fresh_", floats) > 1e-3


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_jit_compile_auto_resolves_on_the_loading_backend(workdir, src, dst):
    """compile(jit_compile="auto") resolves on the loading backend, as in Keras.

    The continuations above train with the loading backend's own default, so that they
    check the optimizer state only.
    """
    _, meta, _ = _result(workdir, src, dst, "supervised")
    assert meta["jit_compile"] == meta["own_jit_compile"], (
        f"the {src} file trains with jit_compile={meta['jit_compile']} on {dst}; a model "
        f"compiled there with jit_compile='auto' has {meta['own_jit_compile']}")


@pytest.mark.parametrize(("step", "freq"), RESUME_RUNS)
@pytest.mark.parametrize("backend", RESUME_BACKENDS)
def test_backup_and_restore_resumes_to_the_uninterrupted_result(children, backend, step, freq):
    work = children[1]
    stem = work / f"{backend}_{step}_{freq}"
    if not stem.with_suffix(".json").exists():
        pytest.fail(f"the {backend} resume child wrote nothing for {step}, save_freq={freq}:\n"
                    f"{_log_tail(work, backend)}")
    meta = json.loads(stem.with_suffix(".json").read_text())
    if "error" in meta:
        pytest.fail(f"{backend}, {step}, save_freq={freq}:\n{meta['error']}")
    # Restored from the backup: after batch 2 of epoch 1 (8 steps) or epoch 0's end (5).
    expected_start = 8 if freq == "2" else 5
    assert set(meta["start_iterations"].values()) == {expected_start}, meta["start_iterations"]
    # Batches the backup holds ran once: every role took as many steps as uninterrupted.
    assert meta["iterations"] == meta["plain_iterations"]
    for name, values in meta["plain_history"].items():
        assert meta["history"][name][-1] == pytest.approx(values[-1], rel=1e-6, abs=1e-7), name
    if freq == "epoch":  # the resumed epoch ran whole: its logs are the uninterrupted ones
        for name, values in meta["plain_history"].items():
            assert meta["history"][name] == pytest.approx(values[1:], rel=1e-6, abs=1e-7), name
    state = dict(np.load(stem.with_suffix(".npz")))
    keys = [k[len("plain_"):] for k in state if k.startswith("plain_")]
    assert keys and sorted(keys) == sorted(k[len("resumed_"):] for k in state
                                           if k.startswith("resumed_"))
    diff = _max_diff(state, "resumed_", state, "plain_", keys)
    assert diff <= 1e-6, f"resumed weights or optimizer variables differ by up to {diff}"
