"""``stepkit fit``: check everything, then train a step and write the run's folder.

The order is deliberate: settings, then the data files, then the step and its
config, then the networks (built on one batch), and only then the output folder,
so that a bad flag, file, setting or image size leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stepkit.cli_settings import (
    EXIT_INTERRUPTED,
    RUN_KEYS,
    UsageError,
    default_preset,
    epochs_done,
    has_default_networks,
    resolve_step,
)


def classifier_network(input_shape: tuple[int, ...], num_classes: int, *, logits: bool = False,
                       width: int = 32, name: str = "classifier") -> Any:
    """The CLI's default network for classification steps: a small conv net (or MLP).

    Two stride-2 convolutions, a dense layer of ``4 * width`` units with dropout,
    and the output layer; with the CLI's Adam(1e-3) it passes 95% validation
    accuracy on the digits within 5 epochs.

    Example::

        net = classifier_network((28, 28, 1), 10)  # softmax over 10 classes
    """
    import keras
    from keras import layers

    if len(input_shape) == 3:
        body = [layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu"),
                layers.Flatten()]
    else:
        body = [layers.Flatten()]
    return keras.Sequential([keras.Input(shape=input_shape), *body,
                             layers.Dense(4 * width, activation="relu"), layers.Dropout(0.3),
                             layers.Dense(num_classes, activation=None if logits else "softmax")],
                            name=name)


def _train_teacher(teacher: Any, train: tuple, settings: dict[str, Any], verbose: int) -> None:
    import keras

    teacher.compile(optimizer="adam", metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = settings["epochs"]
    print(f"stepkit: training the teacher for {n} epoch{'s' if n != 1 else ''} first",
          flush=True)
    teacher.fit(*train, epochs=settings["epochs"], batch_size=settings["batch_size"],
                verbose=verbose)


def _fresh_out_dir(step: str) -> Path:
    import time

    base = Path("runs") / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _split(data: Any, fraction: float, seed: int | None, labelled: bool) -> tuple:
    """(train inputs, validation inputs or None): a seeded shuffle, then the last share."""
    x, y = data.x, data.y if labelled else None
    if not fraction:
        return ((x, y) if labelled else (x,)), None
    n_val = max(1, int(round(len(x) * fraction)))
    if n_val >= len(x):
        raise UsageError(f"--validation-split {fraction} leaves no training samples out of "
                         f"{len(x)}. Pass a smaller fraction, or --validation-split 0.")
    order = np.random.default_rng(0 if seed is None else seed).permutation(len(x))
    train, val = order[:-n_val], order[-n_val:]
    if labelled:
        return (x[train], y[train]), (x[val], y[val])
    return (x[train],), (x[val],)


def _image_size_hint(make_model: Any, error: Exception, size: int, inputs: tuple) -> str:
    """The step's complaint about ``--image-size``, with the nearest sizes that work."""
    def works(side: int) -> bool:
        x = np.zeros((2, side, side, inputs[0].shape[-1]), "float32")
        try:
            make_model().build_from_data(x if len(inputs) == 1 else (x, inputs[1][:2]))
        except Exception:  # noqa: BLE001 - any failure: this size does not fit either
            return False
        return True

    below = next((s for s in range(size - 1, max(size - 17, 3), -1) if works(s)), None)
    above = next((s for s in range(size + 1, size + 17) if works(s)), None)
    sizes = " or ".join(f"--image-size {s}" for s in (below, above) if s)
    fix = f" From the command line: pass {sizes} instead." if sizes else ""
    return f"--image-size {size} does not suit this step. {error}{fix}"


def _sample_files(out: Path) -> list[Path]:
    return sorted((out / "samples").glob("epoch-*.png"))


def run_fit(settings: dict[str, Any], *, resume: bool = False, verbose: int = 1) -> int:
    """Train as ``settings`` say and write everything under ``settings['out']``."""
    from stepkit.data import prepare_data, read_data

    if resume:
        done = epochs_done(settings["out"])
        if done >= settings["epochs"]:
            out = settings["out"]
            print(f"stepkit: the run in {out} is complete: it has trained {done} of "
                  f"{settings['epochs']} epochs. To train it for longer, give the new total: "
                  f"stepkit fit --resume {out} --epochs {done * 2}", flush=True)
            return 0
    raw = read_data(settings["data"], image_size=settings["image_size"])  # before TensorFlow

    from stepkit.config import structure_config

    name, step_class = resolve_step(settings["step"])
    preset = default_preset(step_class)
    settings = {**settings, "step": name}
    if settings["batch_size"] is None:
        settings["batch_size"] = (preset.get("batch_size") or step_class.default_batch_size
                                  or 32)
    if settings["validation_split"] is None:
        settings["validation_split"] = preset["validation_split"]
    config = structure_config(step_class.config_class,
                              {**preset.get("config", {}), **settings["config"]}, step=name)
    data = prepare_data(raw, kind=preset["data_kind"], limit=settings["limit"])
    labelled = preset["data_kind"] == "labeled-images"
    train, val = _split(data, settings["validation_split"], settings["seed"], labelled)
    out = Path(settings["out"]) if settings["out"] else _fresh_out_dir(name)
    if (out / "backup").exists() and not resume:
        raise UsageError(f"{str(out)!r} already holds a run. Continue it with --resume "
                         f"{out}, or pass another --out.")

    model = _build_model(step_class, name, config, preset, settings, data, train, verbose,
                         resume)
    return _train(model, step_class, preset, settings, data, train, val, out, resume, verbose)


def _build_model(step_class: type, name: str, config: Any, preset: dict[str, Any],
                 settings: dict[str, Any], data: Any, train: tuple, verbose: int,
                 resume: bool) -> Any:
    """The compiled StepModel with every network built (so a bad image size fails here)."""
    import keras

    from stepkit.errors import DataStructureError
    from stepkit.model import StepModel

    if settings["seed"] is not None:
        keras.utils.set_random_seed(settings["seed"])
    networks = None
    if preset.get("classifier"):
        classes = max(int(data.y.max()) + 1, 2)
        width = preset.get("width", 32)
        networks = {role: classifier_network(
            data.x.shape[1:], classes, name=role, logits=bool(preset.get("logits")),
            width=2 * width if role == "teacher" and preset.get("teacher") else width)
            for role in step_class.roles}
        if preset.get("teacher") and not resume:
            _train_teacher(networks["teacher"], train, settings, verbose)
    elif not has_default_networks(step_class):
        raise UsageError(f"Step {name!r} has no default networks and the command line does "
                         "not know how to make them; train it from Python with "
                         "StepModel(networks=...).")

    def make_model() -> Any:
        return StepModel(networks, step=name, config=config, seed=settings["seed"],
                         wrappers=settings.get("wrappers") or None)

    model = make_model()
    model.compile(loss=preset.get("loss"), metrics=preset.get("metrics"),
                  optimizer=preset.get("optimizer"))
    first = tuple(a[:settings["batch_size"]] for a in train)
    try:
        model.build_from_data(first[0] if len(first) == 1 else first)
    except DataStructureError as exc:
        spec = settings["data"]
        if networks is None and (spec in (None, "", "digits") or Path(str(spec)).is_dir()):
            raise UsageError(_image_size_hint(make_model, exc, settings["image_size"],
                                              train)) from None
        raise
    return model


def _train(model: Any, step_class: type, preset: dict[str, Any], settings: dict[str, Any],
           data: Any, train: tuple, val: tuple | None, out: Path, resume: bool,
           verbose: int) -> int:
    import keras

    from stepkit.callbacks import HistoryFiles, SampleGrid, StopOnInterrupt, is_generative
    from stepkit.config import unstructure_config

    out.mkdir(parents=True, exist_ok=True)
    run = {k: settings[k] for k in RUN_KEYS if k != "config"}
    run.update(out=str(out), config=unstructure_config(model.step.config),
               wrappers=[w.spec() for w in model.wrappers])
    (out / "run.json").write_text(json.dumps(run, indent=2))

    stop = StopOnInterrupt()
    history = HistoryFiles(out, title=f"step {settings['step']!r}")
    callbacks = [keras.callbacks.BackupAndRestore(str(out / "backup"), delete_checkpoint=False),
                 history, stop]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False))
    else:
        print("stepkit: TensorBoard is not installed; no logs (pip install tensorboard).",
              file=sys.stderr)
    generative = is_generative(step_class)
    if generative:
        callbacks.insert(2, SampleGrid(out / "samples", label="epoch {epoch}"))
    if generative and settings["data"] in (None, "", "digits") and data.x.ndim == 4:
        from stepkit.metrics import SampleQuality  # fid, kid: before HistoryFiles/TensorBoard

        callbacks.insert(1, SampleQuality(data.x, n_samples=500, seed=0))
    checking = (f"validating on {len(val[0])} of them" if val else "no validation")
    epochs = f"{settings['epochs']} epoch{'s' if settings['epochs'] != 1 else ''}"
    if model.wrappers:
        from stepkit.wrapper import stack_order

        epochs += f", wrapped in {stack_order(model.wrappers)}"
    print(f"stepkit: training step {settings['step']!r} for {epochs} on "
          f"{data.describe()}\n         seed {settings['seed']} (--seed N to change), batch "
          f"size {settings['batch_size']}, {checking}; writing to {out}", flush=True)
    aborted = False
    try:
        model.fit(*train, validation_data=val, epochs=settings["epochs"],
                  batch_size=settings["batch_size"], callbacks=callbacks, verbose=verbose)
    except KeyboardInterrupt:
        aborted = True
    model.save(out / "model.keras")
    animation = None
    if generative:
        from stepkit.pictures import save_animation

        animation = save_animation(_sample_files(out), out / "samples" / "progress.gif")
    interrupted = stop.interrupted or aborted
    print(_report(out, history.records, animation, interrupted, tensorboard), flush=True)
    return EXIT_INTERRUPTED if interrupted else 0


def _figures(record: dict[str, Any], validation: bool) -> str:
    keys = [k for k in record if k != "epoch" and k.startswith("val_") == validation]
    return ", ".join(f"{k[4:] if validation else k} {record[k]:.4g}" for k in keys)


def _report(out: Path, records: list[dict[str, Any]], animation: Path | None,
            interrupted: bool, tensorboard: bool) -> str:
    last = records[-1] if records else None
    epochs = f" after {last['epoch']} epoch{'s' if last['epoch'] != 1 else ''}" if last else ""
    lines = [f"stepkit: {'interrupted; saved the run so far' if interrupted else 'done'}"
             f"{epochs} in {out}"]
    if last:
        lines.append(f"  train        {_figures(last, False)}")
        if any(k.startswith("val_") for k in last):
            lines.append(f"  validation   {_figures(last, True)}")
    lines += [f"  model        {out / 'model.keras'}  (stepkit.load_model)",
              f"  history      {out / 'history.csv'}, {out / 'history.json'}",
              f"  loss curve   {out / 'loss.png'}",
              f"  settings     {out / 'run.json'}"]
    if tensorboard:
        lines.append(f"  tensorboard  tensorboard --logdir {out / 'logs'}")
    grids = _sample_files(out)
    if grids:
        count = f"{len(grids)} grid{'s' if len(grids) != 1 else ''}"
        lines.append(f"  samples      {grids[-1]} ({count}; more: stepkit sample {out})")
    if animation is not None:
        lines.append(f"  animation    {animation}")
    lines.append(f"  backup       {out / 'backup'}  (continue: stepkit fit --resume {out})")
    return "\n".join(lines)
