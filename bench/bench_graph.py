"""The extra work in stepkit's training step, counted exactly: ops in the traced graphs.

Timing ratios on a shared machine are noisy to a few percent; the traced
``train_step`` graph is not. For each workload this traces ``train_step`` of
the stepkit model and of the hand-written Keras model (after a first ``fit``
step has built them) and reports the op counts and which op types one has
more of than the other. Every op runs once per training step.

Usage::

    python bench/bench_graph.py [--quick] [--json out.json]
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def graph_ops(contender) -> collections.Counter:
    import tensorflow as tf

    contender.setup()
    contender.first()
    fn = tf.function(contender.model.train_step)
    graph = fn.get_concrete_function(contender.ds.element_spec).graph
    return collections.Counter(op.type for op in graph.get_operations())


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=0, rounds=1)
    p.add_argument("--workloads", nargs="+", default=["mlp", "cnn", "gan"])
    args = p.parse_args(argv)
    if args.quick:
        args.workloads = ["mlp"]
    from workloads import Contender

    start = time.perf_counter()
    results = []
    for w in args.workloads:
        ours = graph_ops(Contender("stepkit", w, 1))
        ref = graph_ops(Contender("keras", w, 1))
        row = {"workload": w, "stepkit_ops": sum(ours.values()), "keras_ops": sum(ref.values()),
               "only_in_stepkit": dict(sorted((ours - ref).items())),
               "only_in_keras": dict(sorted((ref - ours).items()))}
        results.append(row)
        print(f"# {w}: {row['stepkit_ops']} ops vs {row['keras_ops']}; stepkit +"
              f"{row['only_in_stepkit']}, keras +{row['only_in_keras']}", file=sys.stderr)
    doc = {"benchmark": "graph", "settings": {"quick": args.quick},
           "seconds": time.perf_counter() - start, "results": results}
    _common.write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
