"""Markdown tables and target checks from ``bench/results.json`` (used by ``run_all.py``)."""

from __future__ import annotations

TARGETS = {
    "step": 1.02,  # training-step time, stepkit / hand-written Keras (CPU-time median ratio)
    "first": 1.02,  # time to first step (tracing), same
    "import_ms": 50.0,  # import stepkit after import keras
    "discovery_ms": 100.0,  # get_step / list_steps with 100 extra distributions
}


def _f(v, fmt="{:.3f}"):
    return "n/a" if v is None else fmt.format(v)


def _r(ratio):
    if not ratio or ratio.get("median") is None:
        return "n/a"
    lo, hi = ratio["range"]
    return f"{ratio['median']:.3f} [{lo:.2f}-{hi:.2f}]"


def _ok(flag):
    return "met" if flag else "**missed**"


def targets(doc: dict) -> list[dict]:
    """One row per target: what, measured, limit, met."""
    rows = []
    steps = doc["results"].get("steps")
    if steps:
        for res in steps["results"]:
            label = f"{res['workload']}, steps_per_execution={res['steps_per_execution']}"
            for key, name in (("step", "training step"), ("first", "time to first step")):
                cpu = res["ratios"][f"{key}_cpu:stepkit/keras"]["median"]
                wall = res["ratios"][f"{key}_wall:stepkit/keras"]["median"]
                rows.append({"target": f"{name} ({label})", "limit": f"<= {TARGETS[key]:.2f}x",
                             "measured": f"{cpu:.3f}x CPU, {wall:.3f}x wall",
                             "met": cpu <= TARGETS[key]})
    imp = doc["results"].get("import")
    if imp:
        ms = imp["import"]["stepkit_in_process_ms"]
        rows.append({"target": "import stepkit after import keras", "limit": "< 50 ms",
                     "measured": f"{ms:.1f} ms wall "
                                 f"({imp['import']['stepkit_in_process_cpu_ms']:.1f} ms CPU)",
                     "met": ms < TARGETS["import_ms"]})
        for d in imp["discovery"]:
            if d["extra_distributions"]:
                rows.append({"target": f"discovery: {d['scenario']} (+{d['extra_distributions']} "
                                       "distributions)", "limit": "< 100 ms",
                             "measured": f"{d['ms']:.1f} ms, imported "
                                         f"{d['plugins_imported']}/{d['plugin_entry_points']} "
                                         "plugins",
                             "met": d["ms"] < TARGETS["discovery_ms"]})
    return rows


def markdown(doc: dict) -> str:
    m = doc["machine"]
    out = [
        f"Machine: {m['cpu_model']}, {m['cpuinfo_processors']} processors in /proc/cpuinfo, "
        f"nproc {m['nproc']}, load average at start {m['load_average']}. "
        f"Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"stepkit {m['stepkit']} (commit {m.get('stepkit_commit')}).",
        "",
        f"Command: `{doc['command']}`",
        "",
    ]
    commits = {n: r.get("commit") for n, r in doc["results"].items()}
    if len(set(commits.values())) > 1:
        out += ["The core changed during the run; commit per script: " + ", ".join(
            f"{n} {c}" for n, c in commits.items()) + ".", ""]
    steps = doc["results"].get("steps")
    if steps:
        s = steps["settings"]
        out += [
            f"### Training step ({s['rounds']} rounds x {s['blocks']} alternating blocks, "
            f"{s['steps']} steps per contender per round, {s['threads']} TF thread(s))",
            "",
            "Step time is CPU ms per step (all threads of the process), median over rounds; "
            "ratios are medians [min-max] of the per-round ratios.",
            "",
            "| workload | spe | stepkit ms | keras ms | tf.function ms | stepkit/keras CPU "
            "| stepkit/keras wall | keras/tf.function CPU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for res in steps["results"]:
            c, r = res["contenders"], res["ratios"]
            out.append(
                f"| {res['workload']} | {res['steps_per_execution']} "
                f"| {_f(c['stepkit']['step_cpu_ms'])} | {_f(c['keras']['step_cpu_ms'])} "
                f"| {_f(c['tf.function']['step_cpu_ms'])} "
                f"| {_r(r['step_cpu:stepkit/keras'])} | {_r(r['step_wall:stepkit/keras'])} "
                f"| {_r(r['step_cpu:keras/tf.function'])} |")
        out += ["", "### Time to first step (optimizer build + tracing + first execution)", "",
                "| workload | spe | stepkit s | keras s | tf.function s | stepkit/keras wall "
                "| stepkit/keras CPU | setup ms stepkit / keras |",
                "|---|---|---|---|---|---|---|---|"]
        for res in steps["results"]:
            c, r = res["contenders"], res["ratios"]
            out.append(
                f"| {res['workload']} | {res['steps_per_execution']} "
                f"| {_f(c['stepkit']['first_wall_s'])} | {_f(c['keras']['first_wall_s'])} "
                f"| {_f(c['tf.function']['first_wall_s'])} "
                f"| {_r(r['first_wall:stepkit/keras'])} | {_r(r['first_cpu:stepkit/keras'])} "
                f"| {_f(c['stepkit']['setup_ms'], '{:.1f}')} / "
                f"{_f(c['keras']['setup_ms'], '{:.1f}')} |")
        fo = steps.get("fit_overhead_ms")
        if fo:
            out += ["", "`fit()` call overhead outside the step loop (mlp, wall ms, median): "
                    f"stepkit {fo['current']['stepkit']:.1f} vs Keras "
                    f"{fo['current']['keras']:.1f}."]
    graph = doc["results"].get("graph")
    if graph:
        out += ["", "### Ops in the traced train_step graph (exact; each runs once per step)", "",
                "| workload | stepkit ops | keras ops | only in stepkit | only in keras |",
                "|---|---|---|---|---|"]
        for row in graph["results"]:
            def fmt(d):
                return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

            out.append(f"| {row['workload']} | {row['stepkit_ops']} | {row['keras_ops']} "
                       f"| {fmt(row['only_in_stepkit'])} | {fmt(row['only_in_keras'])} |")
    mem = doc["results"].get("memory")
    if mem:
        out += ["", f"### Peak memory (VmHWM, MiB; one process per contender, "
                f"{mem['settings']['rounds']} rounds, {mem['settings']['steps']} steps)", "",
                "| workload | stepkit | keras | tf.function | stepkit/keras | stepkit - keras "
                "| after imports stepkit / keras |", "|---|---|---|---|---|---|---|"]
        for row in mem["results"]:
            c = row["contenders"]
            out.append(
                f"| {row['workload']} | {c['stepkit']['peak_mib']:.1f} "
                f"| {c['keras']['peak_mib']:.1f} | {c['tf.function']['peak_mib']:.1f} "
                f"| {row['peak_ratio_stepkit_keras']:.3f} "
                f"| {row['peak_delta_mib_stepkit_keras']:+.1f} "
                f"| {c['stepkit']['after_import_mib']:.1f} / "
                f"{c['keras']['after_import_mib']:.1f} |")
    imp = doc["results"].get("import")
    if imp:
        i = imp["import"]
        out += ["", f"### Import and step discovery ({i['rounds']} import rounds, "
                f"{imp['settings']['discovery_rounds']} per discovery scenario)", "",
                f"`import stepkit` after `import keras`, in-process: "
                f"{i['stepkit_in_process_ms']:.1f} ms wall "
                f"({i['stepkit_in_process_cpu_ms']:.1f} ms CPU); difference of the median "
                f"process times (`import keras` {i['process_wall_keras_s']:.2f} s): "
                f"{i['process_wall_difference_ms']:.0f} ms.", "",
                "| scenario | extra distributions | ms | CPU ms | plugin modules imported |",
                "|---|---|---|---|---|"]
        for d in imp["discovery"]:
            out.append(f"| {d['scenario']} | {d['extra_distributions']} | {d['ms']:.1f} "
                       f"| {d['cpu_ms']:.1f} | {d['plugins_imported']} of "
                       f"{d['plugin_entry_points']} |")
    out += ["", "### Targets", "", "| target | limit | measured | result |", "|---|---|---|---|"]
    for t in targets(doc):
        out.append(f"| {t['target']} | {t['limit']} | {t['measured']} | {_ok(t['met'])} |")
    return "\n".join(out) + "\n"
