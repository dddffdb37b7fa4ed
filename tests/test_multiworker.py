"""MultiWorkerMirroredStrategy: 2 worker processes on 127.0.0.1, started by stepkit.launch."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("multiworker_script.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def launch(kind, out, epochs=3, kill_at="-", workers=2):
    out.mkdir(exist_ok=True)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stepkit.launch", "--workers", str(workers), str(SCRIPT), kind,
         str(out), str(epochs), kill_at], env=ENV, capture_output=True, text=True, timeout=400)
    return proc, time.monotonic() - start


def single(kind, out, epochs=3):
    out.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(SCRIPT), kind, str(out), str(epochs), "-"],
                          env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "worker0.json").read_text())


def results(out):
    return [json.loads((out / f"worker{i}.json").read_text()) for i in range(2)]


def assert_close(a, b, atol):
    for x, y in zip(a["weights"], b["weights"], strict=True):
        np.testing.assert_allclose(x, y, atol=atol)


def test_supervised_two_workers_agree_and_match_one_process(tmp_path):
    proc, _ = launch("supervised", tmp_path / "mw")
    assert proc.returncode == 0, proc.stdout[-3000:]
    first, second = results(tmp_path / "mw")
    assert first["weights"] == second["weights"]
    alone = single("supervised", tmp_path / "one")
    assert first["iterations"] == alone["iterations"] == {"network": 9}
    assert_close(first, alone, atol=1e-5)
    for key in alone["history"]:
        np.testing.assert_allclose(first["history"][key], alone["history"][key], atol=1e-5)


def test_gan_two_workers_train_to_identical_weights(tmp_path):
    proc, _ = launch("gan", tmp_path / "mw", epochs=2)
    assert proc.returncode == 0, proc.stdout[-3000:]
    first, second = results(tmp_path / "mw")
    assert first["weights"] == second["weights"]
    assert first["iterations"] == {"generator": 4, "discriminator": 4}
    assert all(np.isfinite(v).all() for v in first["history"].values())


def test_lost_worker_fails_the_job_cleanly_and_backup_resumes_it(tmp_path):
    out = tmp_path / "mw"
    proc, elapsed = launch("supervised", out, kill_at="1:1")
    assert proc.returncode != 0
    assert "worker 1 exited with status" in proc.stderr
    assert elapsed < 120, f"the job took {elapsed:.0f} s to fail"
    assert not (out / "worker0.json").exists()
    resumed, _ = launch("supervised", out)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    first, second = results(out)
    assert first["weights"] == second["weights"]
    alone = single("supervised", tmp_path / "one")
    assert first["iterations"] == alone["iterations"]
    assert_close(first, alone, atol=1e-5)


def test_launcher_rejects_a_missing_script():
    proc = subprocess.run([sys.executable, "-m", "stepkit.launch", "no-such-script.py"],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such script: 'no-such-script.py'" in proc.stderr


@pytest.mark.parametrize("workers", [0, -1])
def test_launch_needs_a_worker(workers):
    from stepkit.launch import launch as run_launch

    with pytest.raises(ValueError, match="`workers` must be at least 1"):
        run_launch(["true"], workers=workers)
