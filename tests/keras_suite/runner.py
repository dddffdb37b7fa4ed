"""Copy, rewrite and run Keras' installed test modules; read the results back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_suite.rewrite import rewrite_source

KERAS_SRC = Path(keras.__file__).resolve().parent / "src"
SUITE_PATH = Path(__file__).resolve().parent.parent  # tests/: where keras_suite lives

# The Keras test modules, relative to keras/src. Left out:
#   callbacks/orbax_checkpoint_test.py: needs the `orbax` package, which stepkit
#     does not install (its tests all skip without it).
MODULES = (
    "trainers/trainer_test.py",
    "models/model_test.py",
    "models/functional_test.py",
    "callbacks/backup_and_restore_test.py",
    "callbacks/callback_test.py",
    "callbacks/csv_logger_test.py",
    "callbacks/early_stopping_test.py",
    "callbacks/lambda_callback_test.py",
    "callbacks/learning_rate_scheduler_test.py",
    "callbacks/model_checkpoint_test.py",
    "callbacks/monitor_callback_test.py",
    "callbacks/reduce_lr_on_plateau_test.py",
    # `requests.post` is mocked: no network is used.
    "callbacks/remote_monitor_test.py",
    "callbacks/swap_ema_weights_test.py",
    "callbacks/tensorboard_test.py",
    "callbacks/terminate_on_nan_test.py",
    "trainers/data_adapters/tf_dataset_adapter_test.py",
    "backend/tensorflow/distribute_test.py",
    "backend/tensorflow/saved_model_test.py",
)


@dataclass
class Result:
    nodeid: str
    # passed, failed, out_of_scope, left_out (of this backend's run, for time),
    # skipped (by Keras itself), no_package (a variant that imports a package that is
    # not installed: grain, or jax/torch where they are absent)
    outcome: str
    message: str = ""
    text: str = ""
    wrapped: int = 0
    overrides: list[str] = field(default_factory=list)


@dataclass
class Run:
    modules: tuple[str, ...]
    results: dict[str, Result]
    returncode: int
    wall_s: float
    output: str

    def for_module(self, module: str) -> Run:
        results = {k: r for k, r in self.results.items() if k.split("::", 1)[0] == module}
        return Run((module,), results, self.returncode, self.wall_s, self.output)

    def by_outcome(self, outcome: str) -> list[Result]:
        return [r for r in self.results.values() if r.outcome == outcome]

    def counts(self) -> dict[str, int]:
        keys = ("passed", "failed", "out_of_scope", "left_out", "skipped", "no_package")
        out = {k: len(self.by_outcome(k)) for k in keys}
        # tests that ran and made a StepModel (out-of-scope ones are skipped before)
        out["reach_stepmodel"] = sum(1 for r in self.results.values()
                                     if r.wrapped and r.outcome in ("passed", "failed"))
        out["reach_and_pass"] = sum(1 for r in self.results.values()
                                    if r.wrapped and r.outcome == "passed")
        return out


def prepare(workdir: Path, modules: tuple[str, ...] = MODULES) -> None:
    """Write the rewritten modules (same relative paths) and the conftest into ``workdir``."""
    for module in modules:
        source = (KERAS_SRC / module).read_text()
        target = workdir / module
        target.parent.mkdir(parents=True, exist_ok=True)
        text, _ = rewrite_source(source, f"keras/src/{module}")
        target.write_text(text)
    shutil.copy(Path(__file__).with_name("suite_conftest.py"), workdir / "conftest.py")


def environment() -> dict[str, str]:
    """The subprocess's environment: this process's Keras backend, CPU only."""
    env = dict(os.environ)
    env.update(KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3",
               STEPKIT_KERAS_SUITE_PATH=str(SUITE_PATH), CUDA_VISIBLE_DEVICES="",
               PYTHONHASHSEED="0")
    env.pop("PYTEST_ADDOPTS", None)
    flags = env.get("XLA_FLAGS", "")
    if env["KERAS_BACKEND"] == "jax" and "device_count" not in flags:
        # Two CPU devices: Keras' DataParallel variants (skipped on one device) run too.
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2".strip()
    return env


def run(modules: tuple[str, ...], workdir: Path, extra: tuple[str, ...] = (),
        timeout: float = 3600) -> Run:
    """Run rewritten modules (prepared in ``workdir``) in one pytest subprocess.

    One process for all modules: importing TensorFlow and Keras costs seconds, paid once.
    """
    xml = workdir / "results.xml"
    if xml.exists():
        xml.unlink()
    cmd = [sys.executable, "-m", "pytest", *modules, "-p", "no:cacheprovider",
           "--rootdir", str(workdir), "-o", "addopts=", "-o", "junit_family=xunit1",
           f"--junitxml={xml}", "-q", "-rN", "--tb=short", "-W", "ignore::DeprecationWarning",
           *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=environment(), capture_output=True,
                          text=True, timeout=timeout)
    wall = time.monotonic() - start
    results = parse_junit(xml) if xml.exists() else {}
    return Run(tuple(modules), results, proc.returncode, wall, proc.stdout + proc.stderr)


def parse_junit(path: Path) -> dict[str, Result]:
    results: dict[str, Result] = {}
    rank = {"passed": 0, "skipped": 1, "out_of_scope": 1, "left_out": 1, "no_package": 1,
            "failed": 2}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        # Collection errors have no node id property: their classname is the module.
        nodeid = props.get("nodeid") or (
            case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", ""))
        outcome, message, text = "passed", "", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
            else:
                continue
            message, text = child.get("message") or "", child.text or ""
            break
        if "stepkit_out_of_scope" in props and outcome == "skipped":
            outcome = "out_of_scope"
        elif outcome == "skipped" and "stepkit left out on" in message:
            outcome = "left_out"  # (not a test that Keras skips itself on this backend)
        elif outcome == "skipped" and "stepkit: not installed:" in message:
            outcome = "no_package"
        result = Result(nodeid, outcome, message, text, int(props.get("stepkit_wrapped") or 0),
                        [o for o in (props.get("stepkit_overrides") or "").split(",") if o])
        old = results.get(nodeid)
        if old is None or rank[outcome] > rank[old.outcome]:
            if old is not None:
                result.wrapped = max(result.wrapped, old.wrapped)
            results[nodeid] = result
    return results


def main(argv: list[str]) -> int:
    """``python -m keras_suite [--baseline] [--all] [MODULE...] [-- PYTEST ARGS]``.

    Runs the modules under the process's ``KERAS_BACKEND`` and prints each failure.
    ``--baseline``: without wrapping (Keras' own result); ``--all``: the tests left
    out of this backend's run for time (``keras_suite.scope.LEFT_OUT``) run too.
    """
    import tempfile

    extra: tuple[str, ...] = ()
    if "--" in argv:
        extra = tuple(argv[argv.index("--") + 1:])
        argv = argv[:argv.index("--")]
    if "--baseline" in argv:
        argv = [a for a in argv if a != "--baseline"]
        os.environ["STEPKIT_KERAS_SUITE_BASELINE"] = "1"
    if "--all" in argv:
        argv = [a for a in argv if a != "--all"]
        os.environ["STEPKIT_KERAS_SUITE_ALL"] = "1"
    modules = tuple(argv) or MODULES
    keep = os.environ.get("KERAS_SUITE_DIR")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="keras_suite_"))
    workdir.mkdir(parents=True, exist_ok=True)
    prepare(workdir, modules)
    result = run(modules, workdir, extra)
    for module in modules:
        part = result.for_module(module)
        print(f"{module}: {part.counts()}", flush=True)
        for r in part.by_outcome("failed"):
            print(f"  FAILED {r.nodeid} (wrapped={r.wrapped}): {r.message[:300]}")
    print(f"TOTAL ({keras.backend.backend()}): {result.counts()} rc={result.returncode} "
          f"{result.wall_s:.0f}s (workdir {workdir})")
    if not result.results:
        print(result.output[-3000:])
    return 0
