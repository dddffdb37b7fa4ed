"""Loading saved StepModels safely."""

from __future__ import annotations

import os
from typing import Any

import keras


def load_model(path: str | os.PathLike, *, compile: bool = True) -> Any:
    """Load a ``.keras`` file saved from a :class:`stepkit.StepModel`.

    The step is looked up by its registered name among the installed steps;
    nothing named in the file is imported. ``safe_mode`` stays on.

    Raises:
        ValueError: ``path`` is not a ``.keras`` file (legacy HDF5 is refused).
        stepkit.UnknownStepError: the file's step is not installed.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"stepkit loads only the Keras v3 format (a file ending in '.keras'). Received: "
            f"{path!r}. Legacy HDF5 (.h5) and SavedModel files are refused: they can run "
            "code from the file. Re-save the model with model.save('name.keras')."
        )
    import stepkit.model  # noqa: F401 - registers StepModel with Keras

    return keras.saving.load_model(path, compile=compile, safe_mode=True)
