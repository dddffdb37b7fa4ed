"""stepkit on TensorFlow, JAX and torch: StepModel vs the guide's hand-written model, per backend.

Keras fixes its backend per process, so every measurement runs in a child
process (``bench/_backend_child.py``) with ``KERAS_BACKEND`` set. Each run
starts ``--processes`` children per backend, interleaved (TF, JAX, torch, then
torch, JAX, TF, ...). Each child measures:

* ``fresh``: import Keras and stepkit, then ``StepModel(step="gan")`` built,
  compiled and trained for its first step (tracing or compilation included),
  a few more steps, and the peak RSS of the process (``ru_maxrss``) before
  anything else is built: what a user of that backend sees;
* ``ratio``: ``StepModel`` against the hand-written ``keras.Model`` subclass of
  keras-io's "Customizing what happens in fit()" guide for that backend
  (``tests/guide_models.py``) on the same networks and data: ``supervised`` on a
  small MLP and the guide's DCGAN ``gan``. Models are built in alternating order
  (time to first step), then trained in alternating blocks (A, B, B, A, ...).
  Ratios are medians of the per-round ratios, over every round of every child.

Usage::

    python bench/bench_backends.py [--quick] [--docs] [--processes 2] [--backends jax torch]
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
CHILD = _common.BENCH_DIR / "_backend_child.py"
BEGIN, END = "<!-- backends:begin -->", "<!-- backends:end -->"
FULL = {"image": 28, "latent": 128, "batch": {"mlp": 32, "gan": 4},
        "steps": {"mlp": 320, "gan": 4}, "rounds": {"mlp": 10, "gan": 4},
        "first_repeats": {"mlp": 2, "gan": 1}, "fresh_blocks": 2}
QUICK = {"image": 8, "latent": 16, "batch": {"mlp": 32, "gan": 4},
         "steps": {"mlp": 2, "gan": 1}, "rounds": {"mlp": 1, "gan": 1},
         "first_repeats": {"mlp": 1, "gan": 1}, "fresh_blocks": 1}
REFERENCES = {"guide": "guide", "guide_nograd": "guide, fake images under no_grad"}


def child_env(backend: str, threads: int) -> dict[str, str]:
    env = _common.child_env(KERAS_BACKEND=backend)
    if backend == "jax" and threads:  # XLA:CPU reads its thread settings from XLA_FLAGS
        flags = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    return env


def _ratios(a: list, b: list) -> dict:
    vals = [_common.ratio(x, y) for x, y in zip(a, b, strict=True)]
    return {"median": _common.median(vals), "range": _common.spread(vals)}


def summarise(backend: str, children: list[dict]) -> dict:
    """Medians over the children of one backend (fresh), over all their rounds (ratio)."""
    fr = [c["fresh"] for c in children]

    def med(key, scale=1.0):
        return _common.median(scale * f[key] for f in fr)

    table = {
        "import_s": med("import_s"), "setup_s": med("setup_s"),
        "first_wall_s": med("first_wall_s"), "first_cpu_s": med("first_cpu_s"),
        "first_wall_s_range": _common.spread([f["first_wall_s"] for f in fr]),
        "step_wall_ms": _common.median(1e3 * x for f in fr for x in f["step_wall"]),
        "step_cpu_ms": _common.median(1e3 * x for f in fr for x in f["step_cpu"]),
        "peak_mib": med("peak_mib"), "peak_mib_range": _common.spread([f["peak_mib"] for f in fr]),
        "after_import_mib": med("after_import_mib"), "imported": fr[0]["imported"],
    }
    ratios = {}
    for workload in children[0]["ratio"]:
        per = [c["ratio"][workload] for c in children]
        names = list(per[0]["blocks"])
        blocks = {n: {k: [x for p in per for x in p["blocks"][n][k]] for k in ("wall", "cpu")}
                  for n in names}
        firsts = {n: [t for p in per for t in p["first"][n]] for n in names}
        ratios[workload] = {
            "rounds": len(blocks["stepkit"]["cpu"]),
            "step_cpu_ms": {n: 1e3 * _common.median(blocks[n]["cpu"]) for n in names},
            "step_wall_ms": {n: 1e3 * _common.median(blocks[n]["wall"]) for n in names},
            "first_wall_s": {n: _common.median(t["first_wall_s"] for t in firsts[n])
                             for n in names},
            "vs": {ref: {
                "step_cpu": _ratios(blocks["stepkit"]["cpu"], blocks[ref]["cpu"]),
                "step_wall": _ratios(blocks["stepkit"]["wall"], blocks[ref]["wall"]),
                "first_wall": _ratios([t["first_wall_s"] for t in firsts["stepkit"]],
                                      [t["first_wall_s"] for t in firsts[ref]]),
                "first_cpu": _ratios([t["first_cpu_s"] for t in firsts["stepkit"]],
                                     [t["first_cpu_s"] for t in firsts[ref]]),
            } for ref in names if ref != "stepkit"},
        }
    return {"backend": backend, "version": children[0]["versions"].get(backend),
            "table": table, "ratios": ratios}


TARGET = 1.02  # StepModel / hand-written guide model, training-step time (CPU median ratio)


def _f(v, fmt="{:.2f}"):
    return "n/a" if v is None else fmt.format(v)


def _r(ratio):
    if not ratio or ratio.get("median") is None:
        return "n/a"
    lo, hi = ratio["range"]
    return f"{ratio['median']:.3f} [{lo:.2f}-{hi:.2f}]"


def markdown(doc: dict) -> str:
    m, s = doc["machine"], doc["settings"]
    versions = ", ".join(f"{r['backend']} {r['version']}" for r in doc["results"])
    out = [
        f"Machine: {m['cpu_model']}, nproc {m['nproc']}, load average {m['load_average']} at "
        f"start and {m['load_average_at_end']} at the end (other work shared the machine). "
        f"Python {m['python']}, Keras {m['keras']}, {versions}, stepkit {m['stepkit']} "
        f"(commit {m['stepkit_commit']}), {doc['date']}; {doc['seconds'] / 60:.1f} minutes.",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"{s['processes']} process(es) per backend, interleaved; {s['threads'] or 'default'} "
        f"thread(s) per backend; `gan`: the guide's DCGAN on {s['image']}x{s['image']}x1 "
        f"digits, latent {s['latent']}, batch {s['batch']['gan']}; `mlp`: 64-64-64-10, batch "
        f"{s['batch']['mlp']}. Hand-written models: `{doc['guide_models']}`.",
        "",
        "### Backends side by side (StepModel, `gan` step, one fresh process each)",
        "",
        "| backend | step ms CPU | step ms wall | time to first step s wall (CPU) "
        "| import s | peak RSS MiB | RSS after import MiB | frameworks loaded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        t = r["table"]
        out.append(
            f"| {r['backend']} | {_f(t['step_cpu_ms'], '{:.1f}')} "
            f"| {_f(t['step_wall_ms'], '{:.1f}')} "
            f"| {_f(t['first_wall_s'])} ({_f(t['first_cpu_s'])}) | {_f(t['import_s'], '{:.1f}')} "
            f"| {_f(t['peak_mib'], '{:.0f}')} | {_f(t['after_import_mib'], '{:.0f}')} "
            f"| {', '.join(t['imported'])} |")
    out += [
        "", "### StepModel vs the guide's hand-written model, per backend", "",
        "Step time: CPU ms per step, median over rounds; ratios: medians [min-max] of the "
        "per-round ratios (StepModel / hand-written). First step: a fresh model's first `fit` "
        "(build, trace or compile, one step) in a warm process.",
        "",
        "| backend | workload | hand-written | rounds | StepModel ms | hand-written ms "
        "| step CPU ratio | step wall ratio | first step s StepModel / hand-written "
        "| first step wall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        for workload, q in r["ratios"].items():
            for ref, v in q["vs"].items():
                out.append(
                    f"| {r['backend']} | {workload} | {REFERENCES[ref]} | {q['rounds']} "
                    f"| {_f(q['step_cpu_ms']['stepkit'], '{:.3f}')} "
                    f"| {_f(q['step_cpu_ms'][ref], '{:.3f}')} | {_r(v['step_cpu'])} "
                    f"| {_r(v['step_wall'])} | {_f(q['first_wall_s']['stepkit'])} / "
                    f"{_f(q['first_wall_s'][ref])} | {_r(v['first_wall'])} |")
    out += ["", "| target | measured | result |", "|---|---|---|"]
    for r in doc["results"]:
        for workload, q in r["ratios"].items():
            for ref, v in q["vs"].items():
                med = v["step_cpu"]["median"]
                ok = med is not None and med <= TARGET
                out.append(f"| {r['backend']} {workload}: StepModel / {REFERENCES[ref]} "
                           f"<= {TARGET:.2f}x | {_f(med, '{:.3f}')}x CPU "
                           f"| {'met' if ok else '**missed**'} |")
    return "\n".join(out) + "\n"


def reproduce(argv: list[str]) -> str:
    """The command that reproduces a run, without where it wrote (``--out``, ``--docs``)."""
    kept, skip = [], False
    for a in argv:
        if skip or a == "--docs" or a.startswith("--out="):
            skip = False
            continue
        skip = a == "--out"
        if not skip:
            kept.append(a)
    return " ".join(["python bench/bench_backends.py", *kept])


def update_docs(path: Path, text: str) -> None:
    """Replace the text between the backends markers of ``path`` with ``text``."""
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise ValueError(f"{path} has no {BEGIN} ... {END} section to replace; add the two "
                         "markers where the backends table goes.")
    head, rest = doc.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{text}{END}{rest.split(END, 1)[1]}")


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=0, rounds=0)
    p.set_defaults(steps=None, rounds=None)
    p.add_argument("--processes", type=int, default=2, help="children per backend (2)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--workloads", nargs="+", choices=("mlp", "gan"), default=["mlp", "gan"])
    p.add_argument("--threads", type=int, default=1,
                   help="intra/inter-op threads of every backend (0: each one's default)")
    p.add_argument("--out", type=Path, default=_common.BENCH_DIR,
                   help="folder for results_backends.json and .md (default: bench/)")
    p.add_argument("--docs", action="store_true",
                   help="also write the tables into docs/benchmarks.md")
    args = p.parse_args(argv)
    s = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.quick:
        args.processes = 1
    if args.steps:
        s["steps"] = {w: args.steps for w in s["steps"]}
    if args.rounds:
        s["rounds"] = {w: args.rounds for w in s["rounds"]}
    s.update(threads=args.threads, workloads=args.workloads)
    command = reproduce(sys.argv[1:] if argv is None else list(argv))
    machine = _common.machine()
    machine.update(jax=_common._version("jax"), torch=_common._version("torch"))
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {b: [] for b in args.backends}
    for proc in range(args.processes):
        for backend in _common.order(args.backends, proc):
            t0 = time.perf_counter()
            out = _common.run_child([str(CHILD), json.dumps(dict(s, process=proc))],
                                    env=child_env(backend, args.threads), timeout=900)
            runs[backend].append(out)
            print(f"# {backend} child {proc}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"benchmark": "backends", "command": command, "machine": machine,
           "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "settings": dict(s, processes=args.processes, quick=args.quick),
           "guide_models": runs[args.backends[0]][0]["guide_models"],
           "seconds": time.perf_counter() - start,
           "results": [summarise(b, runs[b]) for b in args.backends]}
    text = markdown(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    _common.write_json(args.out / "results_backends.json", doc)
    (args.out / "results_backends.md").write_text(text)
    if args.docs:
        update_docs(_common.REPO / "docs" / "benchmarks.md", text)
    print(text)
    return doc


if __name__ == "__main__":
    main()
