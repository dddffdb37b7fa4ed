"""The benchmark scripts still run (tiny settings; no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--jobs", "4", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_run_all_runs_every_script_and_writes_results(quick_run):
    doc, table = quick_run
    assert set(doc["results"]) == {"steps", "graph", "memory", "import"}
    machine = doc["machine"]
    assert machine["nproc"] >= 1 and machine["tensorflow"] and machine["keras"]
    for heading in ("### Training step", "### Time to first step", "### Ops in the traced",
                    "### Peak memory",
                    "### Import and step discovery", "### Targets"):
        assert heading in table
    assert doc["command"] == "python bench/run_all.py --quick"


def test_step_benchmark_measures_every_contender_with_and_without_spe(quick_run):
    steps = quick_run[0]["results"]["steps"]
    seen = {(r["workload"], r["steps_per_execution"]) for r in steps["results"]}
    assert seen == {("mlp", 1), ("mlp", 2), ("gan", 1), ("gan", 2)}
    for res in steps["results"]:
        assert set(res["contenders"]) == {"stepkit", "keras", "tf.function"}
        for c in res["contenders"].values():
            assert c["step_cpu_ms"] > 0 and c["first_wall_s"] > 0
        assert res["ratios"]["step_cpu:stepkit/keras"]["median"] > 0
    assert set(steps["fit_overhead_ms"]) == {"current"}


def test_graph_benchmark_counts_the_ops_of_both_train_steps(quick_run):
    (row,) = quick_run[0]["results"]["graph"]["results"]
    assert row["workload"] == "mlp" and row["stepkit_ops"] > 100 and row["keras_ops"] > 100
    extra = sum(row["only_in_stepkit"].values()) - sum(row["only_in_keras"].values())
    assert extra == row["stepkit_ops"] - row["keras_ops"]


def test_memory_children_import_stepkit_only_for_stepkit(quick_run):
    (row,) = quick_run[0]["results"]["memory"]["results"]
    imported = {name: c["stepkit_imported"] for name, c in row["contenders"].items()}
    assert imported == {"stepkit": True, "keras": False, "tf.function": False}
    assert all(c["peak_mib"] >= c["after_import_mib"] > 0 for c in row["contenders"].values())


def test_discovery_sees_the_100_temporary_distributions(quick_run):
    imp = quick_run[0]["results"]["import"]
    assert imp["import"]["stepkit_in_process_ms"] > 0
    by = {d["scenario"]: d for d in imp["discovery"]}
    assert set(by) == {"get-builtin", "list"}
    listed = by["list"]
    assert listed["extra_distributions"] == 100
    assert listed["bench_plugins_imported"] == 100  # list_steps() needs every plugin
    assert listed["steps_listed"] >= 103  # the 100 plugin steps and the 3 built-in ones
    assert 0 <= by["get-builtin"]["bench_plugins_imported"] <= 100


def test_update_docs_replaces_only_the_results_section(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n{run_all.BEGIN}\nold table\n{run_all.END}\nafter\n")
    run_all.update_docs(doc, "new table\n")
    assert doc.read_text() == f"# Title\n{run_all.BEGIN}\nnew table\n{run_all.END}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="results:begin"):
        run_all.update_docs(doc, "x")
