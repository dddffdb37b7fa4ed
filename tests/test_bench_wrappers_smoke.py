"""bench/bench_wrappers.py still runs (tiny settings, two contenders, no timing asserted).

The benchmark runs in this process (``main(argv)``, the backend of the test run,
its thread settings left alone: ``--threads 0``), which saves importing Keras a
second time.
"""

import json
import sys
from pathlib import Path

import keras
import pytest

from stepkit.registry import list_wrappers

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BACKEND = keras.backend.backend()


def _bench_module():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_wrappers
    finally:
        sys.path.remove(str(BENCH))
    return bench_wrappers


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_wrappers")
    _bench_module().main(["--quick", "--threads", "0", "--contenders", "ema", "ema-generator",
                          "--out", str(out)])
    return json.loads((out / "results_wrappers.json").read_text()), \
        (out / "results_wrappers.md").read_text()


def test_quick_run_times_the_bare_and_the_wrapped_step_of_both_workloads(quick_run):
    doc, table = quick_run
    assert doc["backend"] == BACKEND and doc["settings"]["quick"]
    by = {r["workload"]: {c["name"]: c for c in r["contenders"]} for r in doc["results"]}
    assert set(by) == {"supervised", "gan"}
    assert set(by["supervised"]) == {"bare", "ema"} and set(by["gan"]) == {"bare", "ema-generator"}
    assert by["gan"]["ema-generator"]["wrappers"] == [{"name": "ema", "roles": ["generator"]}]
    for rows in by.values():
        for c in rows.values():
            assert c["step_cpu_ms"] > 0 and c["first_step"]["wall_s"] > 0 and c["rounds"] == 1
            if c["name"] != "bare":
                assert c["ratio"]["cpu"]["median"] > 0 and len(c["ratio"]["wall"]["per_round"]) == 1
    prefix = "" if BACKEND == "tensorflow" else f"KERAS_BACKEND={BACKEND} "
    assert doc["command"] == (f"{prefix}python bench/bench_wrappers.py --quick --threads 0 "
                              "--contenders ema ema-generator")
    assert "| ema-generator | `--wrap ema:roles=generator` |" in table
    assert "| supervised ema <= 1.05x |" in table and "| gan ema-generator <= 1.05x |" in table


def test_every_builtin_wrapper_is_benchmarked():
    mod = _bench_module()
    names = {w if isinstance(w, str) else w["name"]
             for workload in ("supervised", "gan")
             for specs, _ in mod.contenders(workload, [3]).values() for w in specs}
    assert names == {w.name for w in list_wrappers() if w.distribution == "stepkit"}


def test_cli_spec_writes_stepkit_fit_options():
    cli_spec = _bench_module().cli_spec
    assert cli_spec([{"name": "accumulate", "steps": 4}, "ema"]) == \
        "--wrap accumulate:steps=4 --wrap ema"
    assert cli_spec([{"name": "sam", "adaptive": True, "roles": ["generator", "discriminator"]}]) \
        == "--wrap sam:adaptive=true,roles=generator+discriminator"
    assert cli_spec([]) == "(none)"


def test_unknown_contender_is_refused_with_the_valid_names(capsys):
    with pytest.raises(SystemExit):
        _bench_module().main(["--quick", "--contenders", "emma"])
    err = capsys.readouterr().err
    assert "unknown --contenders ['emma']" in err and "accumulate+ema" in err


def test_command_drops_only_where_the_run_wrote():
    reproduce = _bench_module().reproduce
    prefix = "" if BACKEND == "tensorflow" else f"KERAS_BACKEND={BACKEND} "
    assert reproduce(["--quick", "--out", "/x", "--docs", "--rounds", "3"]) == \
        f"{prefix}python bench/bench_wrappers.py --quick --rounds 3"


def test_update_docs_replaces_only_the_wrappers_section(tmp_path):
    mod = _bench_module()
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n{mod.BEGIN}\nold\n{mod.END}\nafter\n")
    mod.update_docs(doc, "new\n")
    assert doc.read_text() == f"# Title\n{mod.BEGIN}\nnew\n{mod.END}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="wrappers:begin"):
        mod.update_docs(doc, "x")
