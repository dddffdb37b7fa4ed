"""The ``resume`` check: a fit killed with SIGKILL mid-epoch resumes to the same result.

The kit saves the compiled, built, untrained model to ``.keras`` and pickles the
sample (as the ``replicas`` check does, so the model must be savable and a
hand-registered step class must be defined at module level), then runs three
child interpreters (:mod:`stepkit.testing._resume_child`), each a fit of
:data:`EPOCHS` epochs with ``shuffle=False``:

* A trains with ``keras.callbacks.BackupAndRestore(dir, save_freq=SAVE_FREQ)``;
  after batch 1 of epoch index 2 (the middle of epoch 3) it writes a marker
  file and sleeps; the kit waits for the marker and kills A with SIGKILL;
* B trains again with the same backup directory, so it resumes from A's last
  backup and finishes;
* C trains uninterrupted from the same saved model (alongside A, which it
  does not depend on).

B must start from A's backup (optimizer ``iterations`` above 0), B's weights
must equal C's to 1e-6, and every role's optimizer ``iterations`` must be equal. A step that
draws ``ctx.normal`` / ``ctx.uniform`` noise must reproduce too: the seed
generator's state is a model variable, so the backup restores it; B's final
seed state must equal C's. Every child run has :data:`TIMEOUT_S` seconds, so a
hang fails the check instead of blocking it.

Example::

    from stepkit.testing.resume import check_resume

    check_resume("gan", Sample(images[:40], batch_size=16), config={"latent_dim": 8})
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from stepkit.testing._children import child_env, read_weights, write_case
from stepkit.testing._harness import Case, as_check, fail

__all__ = ["EPOCHS", "SAVE_FREQ", "TIMEOUT_S", "check_resume"]

#: Epochs of every child run; the victim is killed in epoch index 2.
EPOCHS = 5
#: ``BackupAndRestore(save_freq=...)``: a backup every this many batches.
SAVE_FREQ = 2
#: Seconds each child run (and the wait for the victim's marker) may take.
TIMEOUT_S = 300
_TOL = 1e-6


def _start(tmp: str, run: str) -> subprocess.Popen:
    log = open(os.path.join(tmp, f"{run}.log"), "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "stepkit.testing._resume_child", tmp, run],
                            stdout=log, stderr=subprocess.STDOUT, text=True, env=child_env())
    proc.log = log
    return proc


def _tail(tmp: str, run: str) -> str:
    with open(os.path.join(tmp, f"{run}.log")) as f:
        return "\n".join(f.read().strip().splitlines()[-12:])


def _finish(case: Case, tmp: str, run: str, what: str,
            proc: subprocess.Popen | None = None) -> tuple[dict, list[np.ndarray]]:
    """Wait for ``run`` (started now, or ``proc``) and read its results."""
    proc = proc or _start(tmp, run)
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        fail("resume", case, f"the {what} did not finish within {TIMEOUT_S} s.")
    finally:
        proc.log.close()
    if code != 0 or not os.path.exists(os.path.join(tmp, f"{run}.json")):
        fail("resume", case, f"the {what} failed (exit code {code}):\n{_tail(tmp, run)}")
    with open(os.path.join(tmp, f"{run}.json")) as f:
        result = json.load(f)
    weights = read_weights(os.path.join(tmp, f"{run}.npz"))
    return result, weights


def _kill_victim(case: Case, tmp: str) -> None:
    victim, marker = _start(tmp, "victim"), os.path.join(tmp, "marker")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not os.path.exists(marker):
            if victim.poll() is not None:
                fail("resume", case, "the run to be killed ended (exit code "
                                     f"{victim.returncode}) before the middle of epoch 3:\n"
                                     f"{_tail(tmp, 'victim')}")
            if time.monotonic() > deadline:
                fail("resume", case, f"the run to be killed did not reach the middle of "
                                     f"epoch 3 within {TIMEOUT_S} s.")
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        code = victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        victim.log.close()
    if code != -signal.SIGKILL:
        fail("resume", case, f"the run to be killed exited with {code}, not by SIGKILL.")
    if not os.listdir(os.path.join(tmp, "backup")):
        fail("resume", case, "BackupAndRestore left no backup before the kill.")


@as_check
def check_resume(case: Case) -> dict:
    """A fit killed mid-epoch and resumed with BackupAndRestore equals an uninterrupted one."""
    s = case.sample
    if -(-s.size // s.batch_size) < 2:
        fail("resume", case, f"the sample has {s.size} rows in batches of {s.batch_size}: "
                             "the check needs at least 2 batches per epoch.")
    with tempfile.TemporaryDirectory() as tmp:
        model = write_case(case, tmp, "resume", epochs=EPOCHS, save_freq=SAVE_FREQ)
        seed_before = keras.ops.convert_to_numpy(model._seed_generator.state).tolist()
        plain_proc = _start(tmp, "plain")  # independent of the victim: runs alongside it
        try:
            _kill_victim(case, tmp)
            resumed, w_resumed = _finish(case, tmp, "resumed", "resumed run (BackupAndRestore)")
            plain, w_plain = _finish(case, tmp, "plain", "uninterrupted run", plain_proc)
        finally:
            if plain_proc.poll() is None:
                plain_proc.kill()
                plain_proc.wait()
            plain_proc.log.close()
    if not any(resumed["start_iterations"].values()):
        fail("resume", case, f"the resumed run started at optimizer iterations "
                             f"{resumed['start_iterations']}: it did not restore A's backup.")
    uses_noise = plain["seed_state"] != seed_before
    noise = (" Is there state outside the model's variables? A counter or an average kept in "
             "a Python attribute or a variable not made with ctx.add_state / "
             "Wrapper.add_state is not in a backup, so a resumed run starts it afresh; "
             "randomness outside ctx.normal/ctx.uniform (keras.random or dropout without the "
             "model's seed generator) is not saved either, so a resumed run draws other "
             "numbers.")
    if resumed["iterations"] != plain["iterations"]:
        fail("resume", case, f"optimizer iterations after resuming {resumed['iterations']} "
                             f"differ from the uninterrupted run's {plain['iterations']}.")
    if resumed["seed_state"] != plain["seed_state"]:
        fail("resume", case, f"the seed generator state after resuming "
                             f"{resumed['seed_state']} differs from the uninterrupted run's "
                             f"{plain['seed_state']}: the noise stream was not restored.")
    if len(w_resumed) != len(w_plain):
        fail("resume", case, f"{len(w_resumed)} weights after resuming, {len(w_plain)} "
                             "uninterrupted.")
    w_diff = 0.0
    for i, (a, b) in enumerate(zip(w_plain, w_resumed, strict=True)):
        d = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        w_diff = max(w_diff, d)
        if d > _TOL:
            fail("resume", case, f"weight {i} (shape {a.shape}) after resuming differs from "
                                 f"the uninterrupted run's by up to {d:.3g}.{noise}")
    return {"uses_noise": uses_noise, "iterations": plain["iterations"],
            "weights_max_diff": w_diff, "resumed_from_iterations": resumed["start_iterations"]}
