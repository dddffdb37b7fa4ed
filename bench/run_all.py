"""Run every benchmark, write ``results.json`` and ``results.md`` (and the docs table).

Usage::

    python bench/run_all.py            # the full run (about 30 minutes on 2 busy cores)
    python bench/run_all.py --quick    # a tiny run that only checks the scripts work
    python bench/run_all.py --docs     # also put the table into docs/benchmarks.md
    python bench/run_all.py --only graph   # rerun one script, keep the other results

The scripts run one after the other (``--jobs 1``) so that they do not compete
for the CPU; ``--jobs 4`` runs them side by side (only sensible with ``--quick``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import report  # noqa: E402

SCRIPTS = {"steps": "bench_steps.py", "graph": "bench_graph.py", "memory": "bench_memory.py",
           "import": "bench_import.py"}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _run(name: str, quick: bool, tmp: Path) -> dict:
    out = tmp / f"{name}.json"
    cmd = [sys.executable, str(_common.BENCH_DIR / SCRIPTS[name]), "--json", str(out)]
    if quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    commit = _common.machine()["stepkit_commit"]  # the core may change between scripts
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_common.child_env(),
                          cwd=_common.REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{SCRIPTS[name]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    progress = [line for line in proc.stderr.splitlines() if line.startswith("# ")]
    print(f"{SCRIPTS[name]}: {time.perf_counter() - t0:.0f} s", *progress, sep="\n  ",
          file=sys.stderr)
    return dict(json.loads(out.read_text()), commit=commit)


def update_docs(path: Path, table: str) -> None:
    """Replace the text between the results markers of ``path`` with ``table``."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} section to replace.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run: checks, no meaningful numbers")
    p.add_argument("--out", type=Path, default=_common.BENCH_DIR,
                   help="folder for results.json and results.md (default: bench/)")
    p.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS),
                   help="run only these; the others' results are kept from OUT/results.json")
    p.add_argument("--jobs", type=int, default=1, help="scripts run at the same time")
    p.add_argument("--docs", action="store_true",
                   help="also write the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    command = "python bench/run_all.py" + (" --quick" if args.quick else "")
    doc = {"command": command, "machine": _common.machine(),
           "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "results": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {n: pool.submit(_run, n, args.quick, Path(tmp)) for n in args.only}
            for name, fut in futures.items():
                doc["results"][name] = fut.result()
    doc["seconds"] = time.perf_counter() - start
    previous = args.out / "results.json"
    if set(args.only) != set(SCRIPTS) and previous.exists():
        kept = json.loads(previous.read_text())["results"]
        doc["results"] = {n: doc["results"].get(n, kept.get(n)) for n in SCRIPTS
                          if n in doc["results"] or n in kept}
    doc["machine"]["load_average_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    table = report.markdown(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    _common.write_json(args.out / "results.json", doc)
    (args.out / "results.md").write_text(table)
    if args.docs:
        update_docs(_common.REPO / "docs" / "benchmarks.md", table)
    print(table)
    return doc


if __name__ == "__main__":
    main()
