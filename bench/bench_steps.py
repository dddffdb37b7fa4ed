"""Time per training step and time to first step: stepkit vs Keras vs a tf.function loop.

Everything runs in one process. Each round builds a fresh model per contender
(timing ``setup`` = construct + compile, and ``first`` = the first ``fit`` call:
optimizer build, tracing and one execution), then times ``--blocks`` blocks of
training per contender, alternating their order from block to block and from
round to round. Step time is the epoch loop of ``fit`` (a callback's
``on_epoch_begin`` to ``on_epoch_end``) divided by the steps; ``fit_overhead``
is the rest of the ``fit`` call. A discarded warm-up round traces every
contender once first. The garbage collector runs before, and is off during,
every timed region.

Usage::

    python bench/bench_steps.py [--quick] [--steps 240] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402  (sets the quiet environment before TensorFlow loads)


def timed(fn):
    """Run ``fn`` with the garbage collector off; (wall, CPU) seconds and its result."""
    from workloads import clocks

    gc.collect()
    gc.disable()
    try:
        t0 = clocks()
        out = fn()
        t1 = clocks()
        return t1[0] - t0[0], t1[1] - t0[1], out
    finally:
        gc.enable()


def one_round(workload, spe, contenders, steps, blocks, r):
    """One round: {contender: {metric: value or list over blocks}}."""
    from workloads import Contender

    names = _common.order(contenders, r)
    made, out = {}, {}
    for name in names:
        c = made[name] = Contender(name, workload, spe)
        setup, _, _ = timed(c.setup)
        first_wall, first_cpu, _ = timed(c.first)
        out[name] = {"setup": setup, "first_wall": first_wall, "first_cpu": first_cpu,
                     "step_wall": [], "step_cpu": [], "overhead_wall": []}
    per_block = max(spe, -(-steps // blocks // spe) * spe)  # a multiple of spe
    for b in range(blocks):
        for name in _common.order(names, b):
            _, _, t = timed(made[name].run_fn(per_block))
            out[name]["step_wall"].append(t["loop_wall"] / per_block)
            out[name]["step_cpu"].append(t["loop_cpu"] / per_block)
            out[name]["overhead_wall"].append(t["call_wall"] - t["loop_wall"])
    for name in names:  # one value per round: the median over blocks
        for key in ("step_wall", "step_cpu", "overhead_wall"):
            out[name][key] = _common.median(out[name][key])
    return out


SCALE = {"step_wall": 1e3, "step_cpu": 1e3, "overhead_wall": 1e3, "setup": 1e3,
         "first_wall": 1.0, "first_cpu": 1.0}
UNIT = {"step_wall": "step_wall_ms", "step_cpu": "step_cpu_ms",
        "overhead_wall": "fit_overhead_ms", "setup": "setup_ms",
        "first_wall": "first_wall_s", "first_cpu": "first_cpu_s"}


def summarise(workload, spe, rounds):
    """Medians over rounds, and medians (and ranges) of the per-round ratios."""
    names = list(rounds[0])
    per = {}
    for name in names:
        per[name] = {}
        for key, label in UNIT.items():
            vals = [SCALE[key] * r[name][key] for r in rounds]
            per[name][label] = _common.median(vals)
            per[name][label + "_range"] = _common.spread(vals)

    def ratio(a, b, key):
        vals = [_common.ratio(r[a][key], r[b][key]) for r in rounds]
        return {"median": _common.median(vals), "range": _common.spread(vals)}

    ratios = {}
    for key in ("step_wall", "step_cpu", "first_wall", "first_cpu"):
        ratios[f"{key}:stepkit/keras"] = ratio("stepkit", "keras", key)
    for key in ("step_wall", "step_cpu"):
        ratios[f"{key}:stepkit/tf.function"] = ratio("stepkit", "tf.function", key)
        ratios[f"{key}:keras/tf.function"] = ratio("keras", "tf.function", key)
    return {"workload": workload, "steps_per_execution": spe, "contenders": per,
            "ratios": ratios}


def fit_overhead(rounds: int, fits: int) -> dict:
    """Median ``fit()`` call overhead (ms) on the mlp: time outside the step loop."""
    samples = {"stepkit": [], "keras": []}
    for r in range(rounds):
        for name in _common.order(list(samples), r):
            c = __import__("workloads").Contender(name, "mlp", 1)
            c.setup()
            c.first()
            for _ in range(fits):
                _, _, t = timed(c.run_fn(8))
                samples[name].append(1e3 * (t["call_wall"] - t["loop_wall"]))
    return {"current": {name: _common.median(v) for name, v in samples.items()}}


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=240, rounds=5)
    p.add_argument("--blocks", type=int, default=4, help="timed blocks per contender per round")
    p.add_argument("--spe", type=int, nargs="+", default=[1, 8], help="steps_per_execution")
    p.add_argument("--workloads", nargs="+", default=["mlp", "cnn", "gan"])
    p.add_argument("--threads", type=int, default=1,
                   help="TensorFlow intra/inter-op threads (0: TensorFlow's default)")
    args = p.parse_args(argv)
    if args.quick:  # every code path once: supervised and gan, with and without spe
        args.steps, args.rounds, args.blocks, args.spe = 2, 1, 1, [1, 2]
        args.workloads = [w for w in args.workloads if w != "cnn"]
    _common.set_threads(args.threads)
    from workloads import CONTENDERS

    start = time.perf_counter()
    for workload in [] if args.quick else args.workloads:  # warm-up: trace all once, discard
        one_round(workload, 1, CONTENDERS, 1, 1, 0)
    results = []
    for workload in args.workloads:
        for spe in args.spe:
            rounds = [one_round(workload, spe, CONTENDERS, args.steps, args.blocks, r)
                      for r in range(args.rounds)]
            results.append(summarise(workload, spe, rounds))
            rat = results[-1]["ratios"]
            print(f"# {workload} spe={spe}: stepkit/keras step wall "
                  f"{rat['step_wall:stepkit/keras']['median']:.3f} cpu "
                  f"{rat['step_cpu:stepkit/keras']['median']:.3f}, first wall "
                  f"{rat['first_wall:stepkit/keras']['median']:.3f}", file=sys.stderr)
    overhead = fit_overhead(1 if args.quick else 3, 1 if args.quick else 6)
    print(f"# fit() overhead ms: {overhead}", file=sys.stderr)
    doc = {
        "benchmark": "steps",
        "fit_overhead_ms": overhead,
        "settings": {"steps": args.steps, "rounds": args.rounds, "blocks": args.blocks,
                     "spe": args.spe, "workloads": args.workloads, "threads": args.threads,
                     "quick": args.quick},
        "seconds": time.perf_counter() - start,
        "results": results,
    }
    _common.write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
