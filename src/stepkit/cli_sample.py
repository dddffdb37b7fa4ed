"""``stepkit sample``: a grid of images from a trained generative step.

Example::

    stepkit sample runs/gan-20250101-120000 --n 64 --out grid.png
    stepkit sample model.keras --n 16 --seed 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stepkit.cli_settings import UsageError, epochs_done


def sample_inputs(model: Any, n: int, seed: int) -> Any:
    """What ``stepkit sample`` feeds ``model.predict``: the step's ``sample_inputs(n, seed)``.

    The same inputs :class:`~stepkit.callbacks.SampleGrid` draws, so
    ``stepkit sample RUN`` (64 samples, seed 0) repeats the run's last grid; a
    conditional step's inputs carry class labels, one class per row.
    """
    try:
        return model.step.sample_inputs(n, seed)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _model_file(path: str) -> Path:
    p = Path(path)
    file = p / "model.keras" if p.is_dir() else p
    if not file.is_file() or file.suffix != ".keras":
        raise UsageError(f"{path!r} is neither a run folder holding model.keras (written by "
                         "stepkit fit) nor a .keras file.")
    return file


def run_sample(source: str, *, n: int = 64, out: str = "samples.png", seed: int = 0,
               cols: int | None = None) -> int:
    """Write a grid of ``n`` samples of the model in ``source`` (a run folder or .keras file)."""
    if n < 1 or (cols is not None and cols < 1):
        raise UsageError(f"--n and --cols must be positive. Received --n {n}, --cols {cols}.")
    file = _model_file(source)
    if Path(out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UsageError(f"--out {out!r} must end in .png or .jpg.")

    from stepkit.callbacks import is_generative, save_image_grid
    from stepkit.saving import load_model

    model = load_model(file)
    if not is_generative(type(model.step)):
        raise UsageError(f"Step {model.step.name!r} is not generative: its predict() does not "
                         "turn latent vectors into images, so there is nothing to sample. "
                         "Generative steps: gan, wgan-gp, vae, or any step with "
                         "generative = True.")
    images = model.predict(sample_inputs(model, n, seed), verbose=0)
    done = epochs_done(file.parent) if file.name == "model.keras" else 0
    if cols is None:
        cols = model.step.sample_grid_columns(n)
    path = save_image_grid(images, out, cols=cols, label=f"epoch {done}" if done else None)
    print(f"stepkit: wrote {n} samples of step {model.step.name!r} (seed {seed}) to {path}",
          flush=True)
    return 0
