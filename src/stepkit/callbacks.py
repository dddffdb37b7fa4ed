"""Keras callbacks for stepkit models (used by ``stepkit fit``, usable from Python).

:class:`SampleGrid` saves a PNG grid of samples from a generative step (one whose
``model.predict(z)`` maps latent vectors to images: ``gan``, ``wgan-gp``, ``vae``)
after each epoch, always from the same latent vectors, so the grids of successive
epochs show the same samples improving.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stepkit.pictures import add_label, plot_history


def image_grid(images: Any, cols: int | None = None, value_range: tuple[float, float] = (0, 1),
               pad: int = 1) -> np.ndarray:
    """Tile ``(n, h, w[, c])`` images into one ``(H, W, c)`` uint8 array (white padding).

    Example::

        grid = image_grid(np.random.rand(16, 28, 28, 1))  # 4x4 tiles
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "image_grid needs images of shape (n, height, width[, channels]) with 1, 3 or 4 "
            f"channels. Received shape {images.shape}."
        )
    lo, hi = value_range
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype="float32")
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = im
    return (grid * 255).round().astype("uint8")


def save_image_grid(images: Any, path: str | os.PathLike, cols: int | None = None,
                    value_range: tuple[float, float] = (0, 1), scale: int = 2,
                    label: str | None = None) -> Path:
    """Save ``images`` as one PNG grid at ``path`` (each pixel repeated ``scale`` times).

    ``label`` (e.g. ``"epoch 3"``) is written in a white strip above the tiles.
    """
    import matplotlib.image

    grid = image_grid(images, cols, value_range)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    if label:
        grid = add_label(grid, label)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grid.shape[-1] == 1:
        matplotlib.image.imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        matplotlib.image.imsave(path, grid)
    return path


class SampleGrid(keras.callbacks.Callback):
    """Save a grid of ``model.predict(z)`` for fixed latent vectors ``z`` after each epoch.

    The inputs are drawn once, with a fixed ``seed``, by the step's
    ``sample_inputs(num_samples, seed)`` (standard-normal latent vectors of the
    config's ``latent_dim``; for a conditional step, with one class per row), so
    every grid shows the same samples. With ``latent_dim`` given, plain latent
    vectors of that size.

    Args:
        out_dir: folder of the PNG files (created if needed).
        num_samples: how many samples (tiles) in the grid.
        latent_dim: size of a latent vector; default: the step config's ``latent_dim``.
        seed: seed of the latent vectors.
        every: save after every ``every`` epochs (and after the last one).
        filename: name of each file, formatted with ``epoch`` (1-based).
        value_range: the range of the generated pixel values, mapped to black-white.
        label: a caption above each grid, formatted with ``epoch`` (e.g.
            ``"epoch {epoch}"``); ``None`` for none.

    Attributes:
        paths: the files written so far, in order.

    Example::

        model = StepModel(step="gan", config={"latent_dim": 64})
        model.compile()
        model.fit(images, epochs=10, callbacks=[SampleGrid("samples")])
        # samples/epoch-001.png ... samples/epoch-010.png
    """

    def __init__(self, out_dir: str | os.PathLike, num_samples: int = 64,
                 latent_dim: int | None = None, seed: int = 0, every: int = 1,
                 filename: str = "epoch-{epoch:03d}.png",
                 value_range: tuple[float, float] = (0.0, 1.0),
                 label: str | None = None) -> None:
        super().__init__()
        if num_samples < 1 or every < 1:
            raise ValueError(f"num_samples and every must be positive. Received: "
                             f"num_samples={num_samples!r}, every={every!r}.")
        self.out_dir = Path(out_dir)
        self.num_samples = num_samples
        self.latent_dim = latent_dim
        self.seed = seed
        self.every = every
        self.filename = filename
        self.value_range = value_range
        self.label = label
        self.paths: list[Path] = []
        self._z: np.ndarray | None = None
        self._epochs: int | None = None

    def latent_vectors(self) -> Any:
        """The fixed inputs of ``predict``: the step's ``sample_inputs(num_samples, seed)``.

        For the usual generative step that is ``(num_samples, latent_dim)`` float32
        standard-normal vectors; a conditional step adds class labels (one class
        per row). With ``latent_dim`` given, plain latent vectors of that size.
        """
        if self._z is None:
            step = getattr(self.model, "step", None)
            if self.latent_dim is None and step is not None:
                self._z = step.sample_inputs(self.num_samples, self.seed)
            else:
                dim = self.latent_dim or self._latent_dim_of(self.model)
                rng = np.random.default_rng(self.seed)
                self._z = rng.standard_normal((self.num_samples, dim)).astype("float32")
        return self._z

    @staticmethod
    def _latent_dim_of(model: Any) -> int:
        config = getattr(getattr(model, "step", None), "config", None)
        dim = getattr(config, "latent_dim", None)
        if not isinstance(dim, int):
            step = getattr(getattr(model, "step", None), "name", type(model).__name__)
            raise ValueError(
                f"SampleGrid cannot tell the latent size of {step!r}: its config has no integer "
                "`latent_dim`. Pass SampleGrid(..., latent_dim=N)."
            )
        return dim

    def on_train_begin(self, logs: Any = None) -> None:
        self._epochs = (self.params or {}).get("epochs")
        self.latent_vectors()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        last = self._epochs is not None and epoch + 1 == self._epochs
        if (epoch + 1) % self.every and not last:
            return
        self.save(epoch + 1)

    def save(self, epoch: int) -> Path:
        """Predict the fixed samples now and write the grid for ``epoch``."""
        images = self.model.predict(self.latent_vectors(), verbose=0)
        step = getattr(self.model, "step", None)
        cols = step.sample_grid_columns(self.num_samples) if step is not None else None
        path = save_image_grid(images, self.out_dir / self.filename.format(epoch=epoch),
                               cols=cols, value_range=self.value_range,
                               label=self.label.format(epoch=epoch) if self.label else None)
        self.paths.append(path)
        return path


GENERATIVE_STEPS = ("gan", "wgan-gp", "vae")


def is_generative(step_class: Any) -> bool:
    """Whether ``predict(z)`` of a step maps latent vectors to images.

    The rule: a step class attribute ``generative`` decides when the step sets it;
    otherwise the known generative steps (``gan``, ``wgan-gp``, ``vae``) are, and
    any other step is when its config has a ``latent_dim`` field and one of its
    roles is a ``generator`` or a ``decoder``.
    """
    import attrs

    flag = getattr(step_class, "generative", None)
    if isinstance(flag, bool):
        return flag
    if step_class.name in GENERATIVE_STEPS:
        return True
    fields = {f.name for f in attrs.fields(step_class.config_class)}
    return "latent_dim" in fields and bool({"generator", "decoder"} & set(step_class.roles))


class HistoryFiles(keras.callbacks.Callback):
    """Write the history so far after every epoch: ``history.csv``, ``history.json``, ``loss.png``.

    ``title`` (e.g. the step's name) heads the loss plot.

    Records of an earlier run in ``out_dir`` (a resumed run) are kept up to the
    epoch this run starts from. An epoch stopped early (Ctrl-C) is written with
    the means over the batches it ran.

    Example::

        model.fit(x, y, epochs=5, callbacks=[HistoryFiles("run")])
    """

    def __init__(self, out_dir: str | os.PathLike, plot: bool = True,
                 title: str | None = None) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.plot = plot
        self.title = title
        self.records: list[dict[str, Any]] = []

    @property
    def json_path(self) -> Path:
        return self.out_dir / "history.json"

    def on_train_begin(self, logs: Any = None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.json_path.is_file():
            self.records = json.loads(self.json_path.read_text())

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        self.records = [r for r in self.records if r["epoch"] < epoch + 1] + [row]
        self.write()

    def write(self) -> None:
        self.json_path.write_text(json.dumps(self.records, indent=1))
        keys = list(dict.fromkeys(k for r in self.records for k in r))
        with open(self.out_dir / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.records)
        if self.plot and self.records:
            try:
                plot_history(self.records, self.out_dir / "loss.png", title=self.title)
            except ImportError:
                self.plot = False
                print("stepkit: matplotlib is not installed; no loss.png "
                      "(pip install matplotlib).", file=sys.stderr)


class StopOnInterrupt(keras.callbacks.Callback):
    """The first Ctrl-C (SIGINT) ends training after the current batch; a second one aborts.

    ``fit`` then returns normally, so the caller can save the model. Works only
    in the main thread (elsewhere it does nothing).

    Attributes:
        interrupted: whether training was stopped by SIGINT.

    Example::

        stop = StopOnInterrupt()
        model.fit(x, epochs=100, callbacks=[stop])
        model.save("model.keras")  # also after Ctrl-C
    """

    def __init__(self, message: str | None = None) -> None:
        super().__init__()
        self.interrupted = False
        self.message = message or "\nInterrupted: stopping after this batch (Ctrl-C again aborts)."
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.model.stop_training = True
        print(self.message, file=sys.stderr, flush=True)

    def on_train_begin(self, logs: Any = None) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_train_end(self, logs: Any = None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
