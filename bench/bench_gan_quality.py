"""Sample quality of the gan step's configurations on the digits: FID, collapse, time.

Trains each configuration on the 1,797 scikit-learn digits at 28x28 for 15
epochs with 3 seeds, each run in its own process, the runs interleaved
(seed 0 of every configuration, then seed 1, ...) so that the machine's noise
falls on all of them alike. After training, 1,000 samples of each run are
scored with the digits classifier that ships with stepkit
(:mod:`stepkit.metrics`):

- FID (Heusel et al. 2017) against all 1,797 real images, on the classifier's
  penultimate features;
- KID (Bińkowski et al. 2018), exact over all features;
- *collapse*: fewer than 5 of the 10 classes recognised among the 1,000 samples;
- for the conditional configuration, the share of samples recognised as the
  class they were asked for, and the intra-class FID (the mean over the 10
  classes of the FID between the real images of a class and the samples asked
  for it; Miyato and Koyama 2018), which grows when a class collapses to a few
  images.

Time per epoch is the median of epochs 2..15 (epoch 1 includes tracing).

    python bench/bench_gan_quality.py                    # the full run (about an hour on 2 cores)
    python bench/bench_gan_quality.py --quick            # checks the script works

writes ``bench/results_gan_quality.json`` / ``.md`` and sample grids under
``docs/images/gan_quality_<config>.png`` (seed 0).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DIR, REPO, child_env, machine

# name -> (gan config, what it is)
CONFIGS = {
    "seed": ({}, "the seed's DCGAN: the gan step's defaults (preset 'dcgan')"),
    "recommended": ({"preset": "recommended"}, "preset 'recommended'"),
    "conditional": ({"preset": "conditional"}, "preset 'conditional', on (images, labels)"),
}
COLLAPSE_CLASSES = 5
N_SAMPLES = 1000


def run_one(name: str, seed: int, epochs: int, limit: int | None, grid: Path | None) -> dict:
    """Train one configuration with one seed; returns its figures."""
    import keras
    import numpy as np

    from stepkit import StepModel
    from stepkit.callbacks import save_image_grid
    from stepkit.data import load_digits
    from stepkit.metrics import (
        class_recognition_rate,
        distinct_classes,
        frechet_distance,
        intra_class_frechet_distance,
        kernel_distance,
        requested_labels,
    )
    from stepkit.metrics.features import as_features, digits_features
    from stepkit.metrics.frechet import feature_statistics

    x, y = load_digits(28)
    if limit:
        x, y = x[:limit], y[:limit]
    config, _ = CONFIGS[name]
    keras.utils.set_random_seed(seed)
    model = StepModel(step="gan", config=config, seed=seed)
    model.compile()
    data = (x, y) if name == "conditional" else (x,)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    batch = model.step.default_batch_size or 32
    model.fit(*data, epochs=epochs, batch_size=batch, verbose=0, callbacks=[Clock()])
    inputs = model.step.sample_inputs(N_SAMPLES, seed=1000 + seed)
    samples = np.asarray(model.predict(inputs, batch_size=250, verbose=0))
    extractor = digits_features()
    real = as_features(extractor, x)
    fake = as_features(extractor, samples)
    out = {
        "config": name, "seed": seed, "epochs": epochs, "batch_size": batch,
        "epoch_seconds": times,
        "epoch_seconds_median": statistics.median(times[1:] or times),
        "fid": frechet_distance(*feature_statistics(real), *feature_statistics(fake)),
        "kid": kernel_distance(real, fake),
        "distinct_classes": distinct_classes(samples),
    }
    out["collapsed"] = out["distinct_classes"] < COLLAPSE_CLASSES
    if name == "conditional":
        out["class_recognition"] = class_recognition_rate(samples, requested_labels(inputs))
        out["intra_fid"] = intra_class_frechet_distance(real, y, fake, requested_labels(inputs))
        # for scale: one half of the real images against the other (2 a class at least)
        out["intra_fid_real_halves"] = (
            intra_class_frechet_distance(real[::2], y[::2], real[1::2], y[1::2])
            if min(np.bincount(y[::2]).min(), np.bincount(y[1::2]).min()) >= 2 else None)
    if grid is not None:
        small = model.step.sample_inputs(100, seed=0)
        save_image_grid(np.asarray(model.predict(small, verbose=0)), grid,
                        cols=model.step.sample_grid_columns(100))
    return out


def summarise(runs: list[dict]) -> dict:
    by = {n: [r for r in runs if r["config"] == n] for n in CONFIGS}
    summary = {}
    for name, rs in by.items():
        if not rs:
            continue
        summary[name] = {
            "fid_mean": statistics.fmean(r["fid"] for r in rs),
            "fid_by_seed": [r["fid"] for r in rs],
            "kid_mean": statistics.fmean(r["kid"] for r in rs),
            "distinct_classes_by_seed": [r["distinct_classes"] for r in rs],
            "collapsed_seeds": sum(r["collapsed"] for r in rs),
            "epoch_seconds_median": statistics.median(r["epoch_seconds_median"] for r in rs),
        }
        if name == "conditional":
            summary[name]["class_recognition_by_seed"] = [r["class_recognition"] for r in rs]
            summary[name]["intra_fid_by_seed"] = [r["intra_fid"] for r in rs]
            summary[name]["intra_fid_real_halves"] = rs[0]["intra_fid_real_halves"]
    if "seed" in summary and "recommended" in summary:
        s, r = summary["seed"], summary["recommended"]
        summary["ratios"] = {
            "fid_recommended_over_seed": r["fid_mean"] / s["fid_mean"],
            "epoch_time_recommended_over_seed":
                r["epoch_seconds_median"] / s["epoch_seconds_median"],
        }
    return summary


def _number(value: float | None) -> str:
    return "n/a (too few images a class)" if value is None else f"{value:.2f}"


def markdown(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"Command: `{doc['command']}`", "",
             f"Machine: {doc['machine']}", "",
             "| configuration | FID (mean) | FID by seed | KID (mean) | classes by seed "
             "| collapsed seeds | s/epoch |", "|---|---|---|---|---|---|---|"]
    for name in CONFIGS:
        if name in s:
            c = s[name]
            lines.append(
                f"| {name} ({CONFIGS[name][1]}) | {c['fid_mean']:.2f} | "
                f"{', '.join(f'{v:.2f}' for v in c['fid_by_seed'])} | {c['kid_mean']:.4f} | "
                f"{', '.join(map(str, c['distinct_classes_by_seed']))} | "
                f"{c['collapsed_seeds']} | {c['epoch_seconds_median']:.1f} |")
    if "conditional" in s:
        rec = s["conditional"]["class_recognition_by_seed"]
        intra = s["conditional"]["intra_fid_by_seed"]
        lines += ["", "Conditional: requested class recognised in "
                  + ", ".join(f"{v:.1%}" for v in rec) + " of samples; intra-class FID "
                  + ", ".join(f"{v:.2f}" for v in intra) + " (by seed; between two halves of "
                  f"the real images: {_number(s['conditional']['intra_fid_real_halves'])})."]
    if "ratios" in s:
        r = s["ratios"]
        lines += ["", f"FID recommended / seed: {r['fid_recommended_over_seed']:.3f}; "
                  f"time per epoch recommended / seed: "
                  f"{r['epoch_time_recommended_over_seed']:.3f}."]
    commits: dict[str, list[str]] = {}
    for r in doc["runs"]:
        commits.setdefault(r.get("stepkit_commit") or "not recorded", []).append(
            f"{r['config']} {r['seed']}")
    if len(commits) > 1:  # a run continued with --continue after a change
        lines += ["", "Runs by stepkit commit (a run continued with `--continue`): "
                  + "; ".join(f"{c}: {', '.join(rs)}" for c, rs in commits.items()) + "."]
    lines += ["", f"Collapse: fewer than {COLLAPSE_CLASSES} of 10 classes recognised among "
              f"{N_SAMPLES} samples by the shipped digits classifier."]
    return "\n".join(lines) + "\n"


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 epoch, 64 images, 1 seed")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results_gan_quality.json")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="keep the runs of an interrupted benchmark (its _partial.json) and "
                        "run the rest")
    p.add_argument("--one", nargs=2, metavar=("CONFIG", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--grid", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        result = run_one(args.one[0], int(args.one[1]), args.epochs, args.limit, args.grid)
        print("RESULT " + json.dumps(result))
        return 0
    if args.quick:
        args.epochs, args.seeds, args.limit = 1, [0], 64
    runs = []
    partial = args.out.with_name(args.out.stem + "_partial.json")
    if args.resume and partial.exists():
        runs = [r for r in json.loads(partial.read_text())["runs"] if r["epochs"] == args.epochs]
    for seed in args.seeds:
        for name in args.configs:
            if any(r["config"] == name and r["seed"] == seed for r in runs):
                continue
            grid = (REPO / "docs" / "images" / f"gan_quality_{name}.png"
                    if seed == 0 and not args.quick else None)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, str(seed),
                   "--epochs", str(args.epochs)]
            cmd += ["--limit", str(args.limit)] if args.limit else []
            cmd += ["--grid", str(grid)] if grid else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"run {name} seed {seed} failed")
            runs.append({**json.loads(lines[-1][len("RESULT "):]),
                         "stepkit_commit": machine()["stepkit_commit"]})
            if not args.quick:  # what has run so far, in case a later run fails
                partial.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
            print(f"{name} seed {seed}: FID {runs[-1]['fid']:.2f}, classes "
                  f"{runs[-1]['distinct_classes']}, {runs[-1]['epoch_seconds_median']:.1f} "
                  "s/epoch", flush=True)
    command = " ".join(["python bench/bench_gan_quality.py", *sys.argv[1:]])
    doc = {"command": command, "machine": machine(), "runs": runs, "summary": summarise(runs)}
    if not args.quick:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(doc))
        args.out.with_name(args.out.stem + "_partial.json").unlink(missing_ok=True)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
