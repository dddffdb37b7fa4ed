"""The ``stepkit`` command line: ``stepkit fit``, ``stepkit list``, ``stepkit info``.

Example::

    stepkit list
    stepkit info gan --json
    stepkit fit --step gan --epochs 15 --set latent_dim=64 --out runs/gan
    stepkit fit --resume runs/gan --epochs 30

Exit codes: 0 done, 2 bad input (unknown step, bad config, bad data; the message
is on stderr), 130 training interrupted with Ctrl-C (the model and history so
far are saved).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepkit.describe import describe_step, format_step
from stepkit.errors import StepkitError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
RUN_KEYS = ("step", "data", "epochs", "batch_size", "seed", "out", "limit", "image_size",
            "config")
DEFAULTS = {"step": None, "data": "digits", "epochs": 10, "batch_size": None, "seed": None,
            "out": None, "limit": None, "image_size": 28, "config": {}}

# What the CLI gives each step, by step name. A step may instead set a class
# attribute ``data_kind``; unknown steps fall back to ``default_preset``.
STEP_PRESETS: dict[str, dict[str, Any]] = {
    "supervised": {"data_kind": "labeled-images", "classifier": True,
                   "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "custom-loss": {"data_kind": "labeled-images", "classifier": True,
                    "config": {"loss": "sparse_categorical_crossentropy"},
                    "metrics": ["accuracy"]},
    # 16: twice the updates per epoch of 32 on the small default data; clearer digits.
    "gan": {"data_kind": "images", "batch_size": 16},
    "wgan-gp": {"data_kind": "images"},
    "vae": {"data_kind": "images"},
    # The CLI first trains a wider teacher on the data, then distils it into the student.
    "distill": {"data_kind": "labeled-images", "classifier": True, "logits": True,
                "teacher": True, "loss": None, "metrics": ["accuracy"]},
}


class UsageError(StepkitError, ValueError):
    """A flag, ``--set`` item or config-file key the command line cannot use."""


def default_preset(step_class: type) -> dict[str, Any]:
    """The CLI's settings for a step (data kind, default network, compile arguments)."""
    from stepkit.callbacks import is_generative

    preset = dict(STEP_PRESETS.get(step_class.name, {}))
    kind = getattr(step_class, "data_kind", None)
    if kind:
        preset["data_kind"] = kind
    preset.setdefault("data_kind", "images" if is_generative(step_class) else "labeled-images")
    preset.setdefault("classifier", len(step_class.roles) == 1 and not has_default_networks(
        step_class) and preset["data_kind"] != "images")
    if step_class.loss_kind == "keras" and preset["classifier"]:
        preset.setdefault("loss", "sparse_categorical_crossentropy")
    if step_class.uses_compile_metrics and preset["classifier"]:
        preset.setdefault("metrics", ["accuracy"])
    return preset


def has_default_networks(step_class: type) -> bool:
    from stepkit.step import Step

    return step_class.default_networks is not Step.default_networks


# ---------------------------------------------------------------- settings


def _read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"Config file {path!r} does not exist.")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(p.read_text())
        elif p.suffix == ".json":
            data = json.loads(p.read_text())
        else:
            raise UsageError(f"Config file {path!r} must end in .toml or .json.")
    except (ValueError, OSError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"Config file {path!r} could not be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"Config file {path!r} must hold a table/object. Received {data!r}.")
    return _checked(data, f"config file {path!r}")


def _checked(data: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(data) - set(RUN_KEYS))
    if unknown:
        raise UsageError(f"Unknown key(s) {unknown} in {where}. Valid keys: "
                         f"{', '.join(RUN_KEYS)} (step settings go in the [config] table).")
    for key in ("epochs", "batch_size", "limit", "image_size", "seed"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or (value < 1 and key != "seed")):
            raise UsageError(f"{where}: {key!r} must be a positive integer. Received {value!r}.")
    if not isinstance(data.get("config", {}), dict):
        raise UsageError(f"{where}: 'config' must be a table of step settings. "
                         f"Received {data['config']!r}.")
    return data


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE (e.g. --set latent_dim=64). "
                             f"Received: {item!r}.")
        out[key.strip()] = value
    return out


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults < ``--resume DIR``'s run.json < ``--config`` file < flags and ``--set``."""
    settings = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    layers = []
    if args.resume:
        run_file = Path(args.resume) / "run.json"
        if not run_file.is_file():
            raise UsageError(f"--resume {args.resume!r}: no run.json there; it is not a "
                             "folder written by `stepkit fit`.")
        layers.append(_checked(json.loads(run_file.read_text()), str(run_file)))
    if args.config:
        layers.append(_read_config_file(args.config))
    flags = {k: getattr(args, k) for k in RUN_KEYS if k != "config"}
    layers.append(_checked({k: v for k, v in flags.items() if v is not None},
                           "the command line"))
    for layer in layers:
        for key, value in layer.items():
            if key == "config":
                settings["config"].update(value)
            else:
                settings[key] = value
    settings["config"].update(_parse_sets(args.set))
    if args.resume:
        settings["out"] = args.resume
    if not settings["step"]:
        raise UsageError("No step given: pass --step NAME (see `stepkit list`).")
    return settings


# ---------------------------------------------------------------- fit


def classifier_network(input_shape: tuple[int, ...], num_classes: int, *, logits: bool = False,
                       width: int = 16, name: str = "classifier") -> Any:
    """The CLI's default network for classification steps: a small conv net (or MLP).

    Example::

        net = classifier_network((28, 28, 1), 10)  # softmax over 10 classes
    """
    import keras
    from keras import layers

    if len(input_shape) == 3:
        body = [layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D()]
    else:
        body = [layers.Flatten()]
    return keras.Sequential([keras.Input(shape=input_shape), *body,
                             layers.Dense(4 * width, activation="relu"),
                             layers.Dense(num_classes, activation=None if logits else "softmax")],
                            name=name)


def _teacher(data: Any, classes: int, settings: dict[str, Any], verbose: int) -> Any:
    import keras

    teacher = classifier_network(data.x.shape[1:], classes, logits=True, width=32,
                                 name="teacher")
    teacher.compile(optimizer="adam", metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    print(f"stepkit: training the teacher for {settings['epochs']} epochs first", flush=True)
    teacher.fit(data.x, data.y, epochs=settings["epochs"], batch_size=settings["batch_size"],
                verbose=verbose)
    return teacher


def _fresh_out_dir(step: str) -> Path:
    import time

    base = Path("runs") / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def run_fit(settings: dict[str, Any], *, resume: bool = False, verbose: int = 1) -> int:
    """Train as ``settings`` say and write everything under ``settings['out']``."""
    import keras

    from stepkit.callbacks import HistoryFiles, SampleGrid, StopOnInterrupt, is_generative
    from stepkit.config import structure_config, unstructure_config
    from stepkit.data import load_data
    from stepkit.model import StepModel
    from stepkit.registry import get_step

    name = settings["step"]
    step_class = get_step(name)
    preset = default_preset(step_class)
    if settings["batch_size"] is None:
        settings = {**settings, "batch_size": preset.get("batch_size", 32)}
    step_config = {**preset.get("config", {}), **settings["config"]}
    config = structure_config(step_class.config_class, step_config, step=name)
    data = load_data(settings["data"], kind=preset["data_kind"],
                     image_size=settings["image_size"], limit=settings["limit"])
    out = Path(settings["out"]) if settings["out"] else _fresh_out_dir(name)
    backup = out / "backup"
    if backup.exists() and not resume:
        raise UsageError(f"{str(out)!r} already holds a run. Continue it with --resume "
                         f"{out}, or pass another --out.")
    out.mkdir(parents=True, exist_ok=True)
    run = {k: settings[k] for k in RUN_KEYS if k != "config"}
    run.update(out=str(out), config=unstructure_config(config))
    (out / "run.json").write_text(json.dumps(run, indent=2))

    if settings["seed"] is not None:
        keras.utils.set_random_seed(settings["seed"])
    networks = None
    if preset.get("classifier"):
        if data.y is None:
            raise UsageError(f"Step {name!r} trains a classifier and needs labels.")
        classes = max(int(data.y.max()) + 1, 2)
        networks = {role: classifier_network(data.x.shape[1:], classes, name=role,
                                             logits=bool(preset.get("logits")))
                    for role in step_class.roles}
        if preset.get("teacher") and not resume:
            networks["teacher"] = _teacher(data, classes, settings, verbose)
    elif not has_default_networks(step_class):
        raise UsageError(f"Step {name!r} has no default networks and the command line does "
                         "not know how to make them; train it from Python with "
                         "StepModel(networks=...).")
    model = StepModel(networks, step=name, config=config, seed=settings["seed"])
    model.compile(loss=preset.get("loss"), metrics=preset.get("metrics"))

    stop = StopOnInterrupt()
    callbacks = [keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
                 HistoryFiles(out), stop]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False))
    else:
        print("stepkit: TensorBoard is not installed; no logs (pip install tensorboard).",
              file=sys.stderr)
    grid = None
    if is_generative(step_class):
        grid = SampleGrid(out / "samples")
        callbacks.insert(2, grid)
    inputs = (data.x, data.y) if preset["data_kind"] == "labeled-images" else (data.x,)
    print(f"stepkit: training step {name!r} on {data.describe()}; writing to {out}",
          flush=True)
    aborted = False
    try:
        model.fit(*inputs, epochs=settings["epochs"], batch_size=settings["batch_size"],
                  callbacks=callbacks, verbose=verbose)
    except KeyboardInterrupt:
        aborted = True
    model.save(out / "model.keras")
    _report(out, grid, interrupted=stop.interrupted or aborted, tensorboard=tensorboard)
    return EXIT_INTERRUPTED if stop.interrupted or aborted else 0


def _report(out: Path, grid: Any, interrupted: bool, tensorboard: bool) -> None:
    lines = [f"stepkit: {'interrupted; saved the run so far' if interrupted else 'done'} in "
             f"{out}",
             f"  model        {out / 'model.keras'}  (stepkit.load_model)",
             f"  history      {out / 'history.csv'}, {out / 'history.json'}",
             f"  loss curve   {out / 'loss.png'}"]
    if tensorboard:
        lines.append(f"  tensorboard  tensorboard --logdir {out / 'logs'}")
    if grid is not None and grid.paths:
        n = len(grid.paths)
        lines.append(f"  samples      {grid.paths[-1]} ({n} grid{'s' if n != 1 else ''})")
    lines.append(f"  backup       {out / 'backup'}  (continue: stepkit fit --resume {out})")
    print("\n".join(lines), flush=True)


# ---------------------------------------------------------------- info


def _cmd_fit(args: argparse.Namespace) -> int:
    return run_fit(resolve_settings(args), resume=bool(args.resume), verbose=args.verbose)


def _cmd_list(args: argparse.Namespace) -> int:
    from stepkit.registry import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # broken plugins are listed below
        reg = registry()
        steps, broken, conflicts = reg.steps(), reg.broken(), reg.conflicts()
    rows = [{"name": i.name, "distribution": i.distribution, "version": i.version,
             "plugin": i.plugin, "roles": list(i.step_class.roles),
             "description": i.step_class.description} for i in steps]
    bad = [{"plugin": b.plugin, "distribution": b.distribution, "version": b.version,
            "error": b.error} for b in broken]
    clash = {n: [i.source for i in infos] for n, infos in conflicts.items()}
    if args.json:
        print(json.dumps({"steps": rows, "broken": bad, "conflicts": clash}, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    for r in rows:
        source = f"{r['distribution'] or 'plugin ' + r['plugin']} {r['version'] or ''}".strip()
        print(f"{r['name']:<{width}}  {source:<22} roles: {', '.join(r['roles'])}")
        print(f"{'':<{width}}  {r['description'] or '(no description)'}")
    for b in bad:
        source = f"{b['distribution'] or ''} {b['version'] or ''}".strip() or "(no distribution)"
        print(f"BROKEN {b['plugin']} ({source}): {b['error']}")
    for name, sources in clash.items():
        print(f"CONFLICT {name}: registered by {' and '.join(sources)}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = describe_step(args.name)
    print(json.dumps(info, indent=2) if args.json else format_step(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepkit", description="Train Keras models with step plugins.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="train a step on a dataset and save the results",
                         description="Train a step; writes the model, history, loss curve, "
                         "TensorBoard logs and (generative steps) sample grids to --out.")
    fit.add_argument("--step", help="registered step name (see `stepkit list`)")
    fit.add_argument("--data", help="'digits' (default), a .npz file (keys x, optional y), an "
                     "image folder, or a cached Keras dataset: mnist, fashion_mnist, cifar10")
    fit.add_argument("--epochs", type=int, help="number of epochs (default 10)")
    fit.add_argument("--batch-size", type=int, help="batch size (default 32; 16 for gan)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a step config value, e.g. --set latent_dim=64 (repeatable)")
    fit.add_argument("--config", help="a TOML or JSON file with run settings and a "
                     "[config] table of step settings")
    fit.add_argument("--seed", type=int, help="random seed (Python, numpy, Keras, the model)")
    fit.add_argument("--out", help="output folder (default runs/<step>-<timestamp>)")
    fit.add_argument("--limit", type=int, help="use only the first N samples")
    fit.add_argument("--image-size", type=int, help="side of the images made from the digits "
                     "or an image folder (default 28)")
    fit.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its backup")
    fit.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="Keras verbosity: 0 silent, 1 progress bar (default), 2 one line "
                     "per epoch")
    fit.set_defaults(func=_cmd_fit)

    lst = sub.add_parser("list", help="show every available step and broken plugins")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_cmd_list)

    info = sub.add_parser("info", help="show a step's config fields, optimizers and networks")
    info.add_argument("name", help="step name")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras loads (lazily)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage errors (code 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except StepkitError as exc:
        print(f"stepkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
