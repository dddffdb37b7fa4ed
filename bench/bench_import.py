"""What ``import stepkit`` costs over ``import keras``, and how fast steps are discovered.

Import: fresh interpreters, alternating, ``--rounds`` of each:

* ``keras`` imports Keras (and TensorFlow);
* ``stepkit`` imports Keras, then stepkit, timing each import in-process.

Reported: the median in-process time of ``import stepkit`` once Keras is loaded
(what a Keras user pays), and the difference of the median process wall times.

Discovery: a temporary directory holds ``--plugins`` minimal installed
distributions (``*.dist-info`` with ``METADATA`` and ``entry_points.txt``, and a
tiny module registering one step each) and goes on the subprocess' PYTHONPATH.
In fresh interpreters (after ``import stepkit``) it times the first
``stepkit.get_step("gan")`` (a built-in step), ``get_step`` of a plugin's step
and ``stepkit.list_steps()``, and counts which plugin modules each imported
(``sys.modules``), with and without the extra distributions.

Usage::

    python bench/bench_import.py [--quick] [--rounds 10] [--plugins 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

SCRIPT = Path(__file__).resolve()
PREFIX = "benchplug"
PLUGIN_SOURCE = '''"""A tiny stepkit plugin made by bench/bench_import.py."""
import stepkit


class Step{i}(stepkit.Step):
    name = "bench-step-{i:03d}"
    description = "benchmark plugin {i}"

    def train_step(self, ctx, data):
        pass

    def test_step(self, ctx, data):
        pass


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(Step{i})
'''


def make_plugins(root: Path, n: int) -> None:
    """``n`` installed distributions, each with one ``stepkit`` entry point and module."""
    for i in range(n):
        name = f"{PREFIX}{i:03d}"
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(PLUGIN_SOURCE.format(i=i))
        info = root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[stepkit]\nbench-step-{i:03d} = {name}\n")
        (info / "top_level.txt").write_text(name + "\n")


def _plugin_modules() -> set[str]:
    from importlib import metadata

    return {ep.value.split(":")[0] for ep in metadata.entry_points(group="stepkit")
            if ep.value != "stepkit.steps"}


def child(scenario: str) -> dict:
    """Runs in the fresh interpreter."""
    t0 = time.perf_counter()
    import keras  # noqa: F401

    t1, c1 = time.perf_counter(), time.process_time()
    if scenario == "keras":
        return {"keras_s": t1 - t0}
    import stepkit

    t2, c2 = time.perf_counter(), time.process_time()
    if scenario == "stepkit":
        return {"keras_s": t1 - t0, "stepkit_s": t2 - t1, "stepkit_cpu_s": c2 - c1}
    plugins = _plugin_modules()  # read before timing; the registry reads its own
    before = set(sys.modules)
    t3, c3 = time.perf_counter(), time.process_time()
    if scenario.startswith("get-builtin"):
        stepkit.get_step("gan")
    elif scenario == "get-plugin":
        stepkit.get_step("bench-step-050")
    elif scenario == "list":
        found = len(stepkit.list_steps())
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    t4, c4 = time.perf_counter(), time.process_time()
    new = set(sys.modules) - before
    out = {"seconds": t4 - t3, "cpu_seconds": c4 - c3, "plugin_entry_points": len(plugins),
           "plugins_imported": len(plugins & new),
           "bench_plugins_imported": len([m for m in plugins & new if m.startswith(PREFIX)])}
    if scenario == "list":
        out["steps_listed"] = found
    return out


def _timed_child(args: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = _common.run_child(args, env=env)
    return time.perf_counter() - t0, out


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=0, rounds=10)
    p.add_argument("--plugins", type=int, default=100, help="extra installed distributions")
    p.add_argument("--discovery-rounds", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return {}
    if args.quick:
        args.rounds, args.discovery_rounds = 1, 1
    start = time.perf_counter()
    env = _common.child_env()

    walls = {"keras": [], "stepkit": []}
    inproc = {"keras": [], "stepkit": []}
    inproc_cpu = []
    for r in range(args.rounds):
        for scenario in _common.order(["keras", "stepkit"], r):
            wall, out = _timed_child([str(SCRIPT), "--child", scenario], env)
            walls[scenario].append(wall)
            inproc[scenario].append(out.get("stepkit_s"))
            inproc_cpu.append(out.get("stepkit_cpu_s"))
    import_row = {
        "stepkit_in_process_ms": 1e3 * _common.median(inproc["stepkit"]),
        "stepkit_in_process_ms_range": [1e3 * v for v in _common.spread(inproc["stepkit"])],
        "stepkit_in_process_cpu_ms": 1e3 * _common.median(inproc_cpu),
        "process_wall_keras_s": _common.median(walls["keras"]),
        "process_wall_stepkit_s": _common.median(walls["stepkit"]),
        "process_wall_difference_ms": 1e3 * (_common.median(walls["stepkit"])
                                             - _common.median(walls["keras"])),
        "rounds": args.rounds,
    }

    discovery = []
    with tempfile.TemporaryDirectory(prefix="stepkit-bench-plugins-") as tmp:
        make_plugins(Path(tmp), args.plugins)
        extra = [0, args.plugins] if not args.quick else [args.plugins]
        for n in extra:
            penv = dict(env)
            if n:
                penv["PYTHONPATH"] = os.pathsep.join(
                    [tmp] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
            scenarios = ("get-builtin", "get-plugin", "list")
            for scenario in scenarios[::2] if args.quick else scenarios:
                if scenario == "get-plugin" and not n:
                    continue
                runs = [_timed_child([str(SCRIPT), "--child", scenario], penv)[1]
                        for _ in range(args.discovery_rounds)]
                row = {k: runs[0][k] for k in runs[0] if k != "seconds"}
                row.update(scenario=scenario, extra_distributions=n,
                           ms=1e3 * _common.median(r["seconds"] for r in runs),
                           cpu_ms=1e3 * _common.median(r["cpu_seconds"] for r in runs),
                           ms_range=[1e3 * v for v in _common.spread([r["seconds"]
                                                                        for r in runs])])
                discovery.append(row)
                print(f"# discovery {scenario} +{n}: {row['ms']:.1f} ms, imported "
                      f"{row['plugins_imported']}/{row['plugin_entry_points']} plugins",
                      file=sys.stderr)
    print(f"# import stepkit after keras: {import_row['stepkit_in_process_ms']:.1f} ms; "
          f"process difference {import_row['process_wall_difference_ms']:.0f} ms",
          file=sys.stderr)
    doc = {"benchmark": "import",
           "settings": {"rounds": args.rounds, "discovery_rounds": args.discovery_rounds,
                        "plugins": args.plugins, "quick": args.quick},
           "seconds": time.perf_counter() - start,
           "import": import_row, "discovery": discovery}
    _common.write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
