"""Pictures of a run: labelled sample grids, an animation across epochs, loss curves.

Example::

    grid = add_label(image_grid(images), "epoch 3")      # a title strip above the tiles
    save_animation(sorted(Path("samples").glob("epoch-*.png")), "samples/progress.gif")
    plot_history(json.load(open("history.json")), "loss.png", title="gan")
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def add_label(grid: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    """``grid`` (uint8 ``(H, W, c)``) with a white strip of ``height`` pixels and ``text`` on top.

    Example::

        labelled = add_label(image_grid(images), "epoch 3")
    """
    from PIL import Image, ImageDraw

    grid = np.asarray(grid, dtype="uint8")
    channels = grid.shape[-1]
    strip = Image.new("L", (grid.shape[1], height), 255)
    ImageDraw.Draw(strip).text((3, height // 2), text, fill=0, anchor="lm",
                               font=_font(max(8, height - 4)))
    top = np.asarray(strip, dtype="uint8")[..., None]
    top = np.repeat(top, min(channels, 3), axis=-1)
    if channels == 4:  # opaque alpha
        top = np.concatenate([top, np.full(top.shape[:2] + (1,), 255, "uint8")], axis=-1)
    return np.concatenate([top, grid], axis=0)


def save_animation(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                   ms_per_frame: int = 400, hold_last_ms: int = 2000) -> Path | None:
    """An animated GIF of the images at ``paths``, in order; ``None`` when ``paths`` is empty.

    The last frame stays up for ``hold_last_ms``, and the animation loops.
    """
    from PIL import Image

    paths = [Path(p) for p in paths]
    if not paths:
        return None
    frames = []
    for p in paths:
        with Image.open(p) as im:
            frames.append(im.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=256))
    size = frames[-1].size
    frames = [f if f.size == size else f.resize(size) for f in frames]
    durations = [ms_per_frame] * (len(frames) - 1) + [hold_last_ms]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return out


def plot_history(records: list[dict[str, Any]], path: str | os.PathLike,
                 title: str | None = None) -> Path:
    """A PNG of every logged value per epoch, one panel each (its ``val_`` curve dashed).

    Each value gets its own panel and y-axis, so values of very different scales
    (a loss of 0.7 and a gradient penalty of 50) stay readable; epochs are whole
    numbers on the x-axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = [k for k in dict.fromkeys(k for r in records for k in r)
             if k != "epoch" and not k.startswith("val_")]
    names = names or ["(nothing logged)"]
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{title}: training history" if title else "training history")
    epochs = [r["epoch"] for r in records]
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(epochs, [r.get(name, np.nan) for r in records], marker=".", label=name)
        if any(f"val_{name}" in r for r in records):
            ax.plot(epochs, [r.get(f"val_{name}", np.nan) for r in records], "--", marker=".",
                    label=f"val_{name}")
            ax.legend()
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path
