"""Helpers shared by the benchmark scripts: arguments, medians, machine facts, JSON.

The scripts are run as ``python bench/<script>.py``; each writes one JSON
document (``--json PATH``) that ``bench/run_all.py`` merges into
``bench/results.json`` and renders as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# Quiet TensorFlow and pin the backend before anything imports Keras. Only the
# first two are set in this process: importing a bench module (the smoke test
# does) must not silence warnings in the importer's later subprocesses.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
             "PYTHONWARNINGS": "ignore"}
for _k in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND"):
    os.environ.setdefault(_k, QUIET_ENV[_k])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark subprocess: this one, quiet, plus ``extra``."""
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env.update(extra)
    return env


def parser(description: str, *, steps: int, rounds: int) -> argparse.ArgumentParser:
    """The arguments every script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a tiny run that only checks the script works (numbers meaningless)")
    p.add_argument("--steps", type=int, default=steps, help=f"work per measurement ({steps})")
    p.add_argument("--rounds", type=int, default=rounds,
                   help=f"alternating rounds; medians are over rounds ({rounds})")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p


def median(values: Iterable[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> list[float] | None:
    """``[min, max]`` of ``values`` (None when empty)."""
    values = [v for v in values if v is not None]
    return [min(values), max(values)] if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def order(names: Sequence[str], round_index: int) -> list[str]:
    """Contenders in round ``round_index``: forward on even rounds, reversed on odd ones."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def vm_hwm_mib() -> float:
    """Peak resident set size of this process so far (``VmHWM``), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU model and cores (``/proc/cpuinfo``, ``nproc``), load and versions."""
    model, cores = None, 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("processor"):
                    cores += 1
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True,
                                   check=True).stdout)
    except (OSError, ValueError, subprocess.CalledProcessError):
        nproc = len(os.sched_getaffinity(0))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True, cwd=REPO).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, cwd=REPO).stdout.strip()
        commit += " (src/ modified)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "stepkit_commit": commit,
        "cpu_model": model or platform.processor(),
        "cpuinfo_processors": cores,
        "nproc": nproc,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "stepkit": _version("stepkit"),
        "platform": platform.platform(),
    }


def set_threads(n: int) -> None:
    """Run TensorFlow ops on ``n`` threads (both pools); 0 keeps TensorFlow's default."""
    if n:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def write_json(path: Path | None, doc: dict) -> None:
    text = json.dumps(doc, indent=2, sort_keys=False)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def run_child(args: Sequence[str], env: dict | None = None, timeout: float = 600) -> dict:
    """Run ``python args...``; its last stdout line is a JSON object, returned."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=env or child_env(), timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
