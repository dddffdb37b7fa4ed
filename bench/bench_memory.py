"""Peak resident memory (RSS) of training with stepkit, Keras and a tf.function loop.

Every contender trains in its own fresh Python process, which reports its
``VmHWM`` (peak RSS, from ``/proc/self/status``) after importing what it needs
and again after setup, tracing and ``--steps`` training steps. Contenders run
one after the other, their order alternating from round to round; the table
shows medians over rounds. The Keras and tf.function processes never import
stepkit, so stepkit's own imports count against it.

Usage::

    python bench/bench_memory.py [--quick] [--steps 240] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

SCRIPT = Path(__file__).resolve()


def child(workload: str, contender: str, steps: int, spe: int, threads: int) -> dict:
    """Runs in the subprocess: import, train, report peak RSS."""
    _common.set_threads(threads)
    if contender == "stepkit":
        import stepkit  # noqa: F401
    import workloads

    after_import = _common.vm_hwm_mib()
    c = workloads.Contender(contender, workload, spe)
    c.setup()
    c.first()
    c.run(steps)
    return {"after_import_mib": after_import, "peak_mib": _common.vm_hwm_mib(),
            "stepkit_imported": "stepkit" in sys.modules}


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=240, rounds=3)
    p.add_argument("--workloads", nargs="+", default=["mlp", "cnn", "gan"])
    p.add_argument("--spe", type=int, default=1, help="steps_per_execution")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", nargs=2, metavar=("WORKLOAD", "CONTENDER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.spe, args.threads)))
        return {}
    if args.quick:
        args.steps, args.rounds, args.workloads = 2, 1, ["mlp"]
    start = time.perf_counter()
    samples = {w: {c: [] for c in ("stepkit", "keras", "tf.function")} for w in args.workloads}
    for r in range(args.rounds):
        for w in args.workloads:
            for c in _common.order(list(samples[w]), r):
                samples[w][c].append(_common.run_child(
                    [str(SCRIPT), "--child", w, c, "--steps", str(args.steps),
                     "--spe", str(args.spe), "--threads", str(args.threads)]))
    results = []
    for w, per in samples.items():
        row = {"workload": w, "contenders": {}}
        for c, runs in per.items():
            row["contenders"][c] = {
                "peak_mib": _common.median(s["peak_mib"] for s in runs),
                "peak_mib_range": _common.spread([s["peak_mib"] for s in runs]),
                "after_import_mib": _common.median(s["after_import_mib"] for s in runs),
                "training_mib": _common.median(s["peak_mib"] - s["after_import_mib"]
                                               for s in runs),
                "stepkit_imported": all(s["stepkit_imported"] for s in runs),
            }
        k = row["contenders"]
        row["peak_ratio_stepkit_keras"] = _common.ratio(k["stepkit"]["peak_mib"],
                                                        k["keras"]["peak_mib"])
        row["peak_delta_mib_stepkit_keras"] = k["stepkit"]["peak_mib"] - k["keras"]["peak_mib"]
        row["training_delta_mib_stepkit_keras"] = (k["stepkit"]["training_mib"]
                                                   - k["keras"]["training_mib"])
        results.append(row)
        print(f"# {w}: peak stepkit/keras {row['peak_ratio_stepkit_keras']:.3f} "
              f"({row['peak_delta_mib_stepkit_keras']:+.1f} MiB)", file=sys.stderr)
    doc = {"benchmark": "memory",
           "settings": {"steps": args.steps, "rounds": args.rounds, "spe": args.spe,
                        "threads": args.threads, "quick": args.quick},
           "seconds": time.perf_counter() - start, "results": results}
    _common.write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
