"""bench/bench_backends.py still runs (tiny settings, no timing asserted).

The benchmark starts one child process per backend; here it runs only the
backend of this test run, so each backend's test run checks its own child.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BACKEND = keras.backend.backend()


def _bench_module():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_backends
    finally:
        sys.path.remove(str(BENCH))
    return bench_backends


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_backends")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, str(BENCH / "bench_backends.py"), "--quick", "--backends", BACKEND,
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results_backends.json").read_text()), \
        (out / "results_backends.md").read_text()


def test_fresh_process_reports_import_first_step_and_peak_memory(quick_run):
    doc, table = quick_run
    (res,) = doc["results"]
    assert res["backend"] == BACKEND
    t = res["table"]
    assert t["import_s"] > 0 and t["first_wall_s"] > 0 and t["step_cpu_ms"] > 0
    assert t["peak_mib"] >= t["after_import_mib"] > 0
    assert BACKEND in t["imported"]
    assert f"| {BACKEND} |" in table and "### Backends side by side" in table
    assert doc["command"] == f"python bench/bench_backends.py --quick --backends {BACKEND}"


def test_stepkit_and_the_guide_model_are_both_timed_on_both_workloads(quick_run):
    doc, table = quick_run
    (res,) = doc["results"]
    assert doc["guide_models"] == "tests/guide_models.py"
    assert set(res["ratios"]) == {"mlp", "gan"}
    for workload, q in res["ratios"].items():
        extra = {"guide_nograd"} if (BACKEND, workload) == ("torch", "gan") else set()
        assert set(q["step_cpu_ms"]) == {"stepkit", "guide"} | extra
        assert set(q["vs"]) == {"guide"} | extra
        assert q["rounds"] == 1
        assert all(v > 0 for v in q["step_cpu_ms"].values())
        for v in q["vs"].values():
            assert v["step_cpu"]["median"] > 0 and v["first_wall"]["median"] > 0
    assert "### StepModel vs the guide's hand-written model" in table


def test_command_drops_only_where_the_run_wrote():
    reproduce = _bench_module().reproduce
    assert reproduce(["--quick", "--out", "/x", "--docs", "--backends", "jax"]) == \
        "python bench/bench_backends.py --quick --backends jax"
    assert reproduce(["--out=/x", "--processes", "3"]) == \
        "python bench/bench_backends.py --processes 3"


def test_jax_children_get_the_thread_setting_and_others_keep_xla_flags_alone():
    child_env = _bench_module().child_env
    assert "intra_op_parallelism_threads=1" in child_env("jax", 1)["XLA_FLAGS"]
    assert child_env("jax", 1)["KERAS_BACKEND"] == "jax"
    assert child_env("torch", 1).get("XLA_FLAGS") == os.environ.get("XLA_FLAGS")
    assert child_env("jax", 0).get("XLA_FLAGS") == os.environ.get("XLA_FLAGS")


def test_update_docs_replaces_only_the_backends_section(tmp_path):
    mod = _bench_module()
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n{mod.BEGIN}\nold\n{mod.END}\nafter\n")
    mod.update_docs(doc, "new\n")
    assert doc.read_text() == f"# Title\n{mod.BEGIN}\nnew\n{mod.END}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="backends:begin"):
        mod.update_docs(doc, "x")
