"""Start a multi-worker training job on this machine: one process per worker.

Usage::

    python -m stepkit.launch --workers 2 train.py [script args...]

Each worker runs ``train.py`` with ``TF_CONFIG`` describing a cluster of
workers on 127.0.0.1 (free ports are picked), so the script only needs
``strategy = tf.distribute.MultiWorkerMirroredStrategy()`` and to build its
``StepModel`` in ``strategy.scope()``. Worker output is prefixed with
``[worker N]``. If any worker fails, the others are stopped and the launcher
exits with that worker's status, so a lost worker never leaves the job hanging.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def tf_config(ports: Sequence[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster on ``ports``."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _pump(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def launch(command: Sequence[str], workers: int = 2, *, env: dict | None = None,
           poll: float = 0.2) -> int:
    """Run ``command`` once per worker; return 0 when all succeed, else the first failure.

    Args:
        command: the program and arguments each worker runs (e.g. ``[python, "train.py"]``).
        workers: how many worker processes.
        env: extra environment variables for every worker.
        poll: seconds between checks of the workers' status.
    """
    if workers < 1:
        raise ValueError(f"`workers` must be at least 1. Received: workers={workers}.")
    ports = free_ports(workers)
    procs, pumps = [], []
    for index in range(workers):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(ports, index),
                      "STEPKIT_WORKER_INDEX": str(index), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(list(command), env=worker_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {index}] "),
                                daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                status = failed[0].returncode
                print(f"stepkit.launch: worker {procs.index(failed[0])} exited with status "
                      f"{status}; stopping the other workers.", file=sys.stderr, flush=True)
                break
            time.sleep(poll)
        else:
            status = next((p.returncode for p in procs if p.returncode), 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        for t in pumps:
            t.join(timeout=5)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepkit.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("script", help="the training script each worker runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    ns = parser.parse_args(argv)
    if not os.path.exists(ns.script):
        parser.error(f"no such script: {ns.script!r}")
    chosen = os.environ.get("KERAS_BACKEND", "tensorflow")
    if chosen != "tensorflow":
        parser.error(
            f"multi-worker training uses tf.distribute, which only Keras' TensorFlow backend "
            f"has. Received KERAS_BACKEND={chosen!r}. Use KERAS_BACKEND=tensorflow, or on JAX "
            "keras.distribution (DataParallel, ModelParallel) over one process's devices."
        )
    status = launch([sys.executable, ns.script, *ns.args], workers=ns.workers)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    raise SystemExit(main())
