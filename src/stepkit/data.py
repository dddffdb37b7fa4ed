"""Offline data for the command line and examples: numpy arrays, never a download.

``load_data(spec)`` understands:

- ``None`` or ``"digits"``: scikit-learn's 8x8 handwritten digits (1,797 images,
  shipped inside scikit-learn), scaled to [0, 1] and resized to 28x28x1.
- a ``.npz`` file with the key ``x`` (images ``(n, h, w[, c])`` or vectors
  ``(n, d)``) and optionally ``y`` (one integer label per sample; float labels
  must be whole numbers).
- a folder of PNG/JPEG images, either flat (no labels) or with one sub-folder
  per class (labels are the sorted sub-folder names' indices).
- ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``, only when Keras has already
  cached the files under ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``).

Example::

    from stepkit.data import load_digits, load_data

    x, y = load_digits()                 # (1797, 28, 28, 1) float32 in [0, 1], int64 labels
    data = load_data("my_images.npz", limit=500)
    data.x.shape, data.y
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import attrs
import numpy as np

from stepkit.errors import StepkitError

DATA_KINDS = ("images", "labeled-images", "vectors")
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(StepkitError, ValueError):
    """The data given to the command line is missing, malformed or of the wrong kind."""


@attrs.frozen
class Data:
    """Arrays ready for ``fit``: ``x`` float32, ``y`` int64 labels or ``None``."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> str:
        labels = "no labels" if self.y is None else f"{len(np.unique(self.y))} classes"
        return f"{self.source}: {len(self.x)} samples of shape {self.x.shape[1:]}, {labels}"


def load_digits(image_size: int | None = 28) -> tuple[np.ndarray, np.ndarray]:
    """Scikit-learn's handwritten digits as images in [0, 1].

    Args:
        image_size: side of the returned square images; ``None`` keeps 8x8.

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(1797, image_size, image_size, 1)``,
        ``y`` int64 labels 0-9.

    Example::

        x, y = load_digits()
        assert x.shape == (1797, 28, 28, 1)
    """
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return resize_images(x, image_size), digits.target.astype("int64")


def resize_images(x: np.ndarray, image_size: int | None) -> np.ndarray:
    """Bilinear resize of ``(n, h, w, c)`` images to ``image_size`` squared (clipped to [0, 1])."""
    if image_size is None or x.shape[1:3] == (image_size, image_size):
        return x
    from scipy.ndimage import zoom

    factors = (1, image_size / x.shape[1], image_size / x.shape[2], 1)
    out = zoom(x, factors, order=1, grid_mode=True, mode="nearest")
    return np.clip(out, 0.0, 1.0).astype("float32")


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(
            f"{where}: images must have shape (n, height, width) or (n, height, width, "
            f"channels). Received shape {x.shape}."
        )
    return x


def _scale(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8 or (x.size and x.max() > 1.0):
        x = x / 255.0
    return x.astype("float32")


def load_npz(path: str | os.PathLike) -> Data:
    """Read ``x`` (and optional ``y``) from a ``.npz`` file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {str(path)!r} does not exist. Expected a .npz file with "
                        "key 'x' (and optionally 'y').")
    expected = ("Expected a file written by numpy.savez(path, x=samples, y=labels) with key "
                "'x' (and optionally 'y').")
    what = _not_npz(path)
    if what:
        raise DataError(f"Data file {str(path)!r} is not a readable .npz file: {what}. "
                        f"{expected}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001 - any failure means a malformed file
        raise DataError(f"Data file {str(path)!r} is not a readable .npz file ({exc}). "
                        f"{expected}") from None
    if "x" not in arrays:
        raise DataError(f"Data file {str(path)!r} has no key 'x'. Received keys: "
                        f"{sorted(arrays) or '(none)'}. Expected keys: 'x' (samples) and "
                        "optionally 'y' (integer labels).")
    x, y = arrays["x"], arrays.get("y")
    if x.ndim < 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"Data file {str(path)!r}: 'x' must be a non-empty numeric array of "
                        f"shape (n, ...). Received shape {x.shape}, dtype {x.dtype}.")
    if y is not None:
        y = np.asarray(y).reshape(len(y), -1) if y.ndim > 1 else y
        if len(y) != len(x) or (y.ndim == 2 and y.shape[1] != 1):
            raise DataError(f"Data file {str(path)!r}: 'y' must hold one label per sample "
                            f"of 'x'. Received x of shape {x.shape} and y of shape "
                            f"{arrays['y'].shape}.")
        y = _integer_labels(y.reshape(-1), str(path))
    return Data(_scale(x), y, str(path))


def _not_npz(path: Path) -> str | None:
    """What ``path`` holds instead of a zip archive (what numpy.savez writes), or ``None``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array (numpy.save); save with numpy.savez instead"
    if not head:
        return "it is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not the zip archive numpy.savez writes"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"it holds text ({first!r}...), not the zip archive numpy.savez writes"


def _integer_labels(y: np.ndarray, where: str) -> np.ndarray:
    """``y`` as int64 class indices; float labels must already be whole numbers."""
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise DataError(f"Data file {where!r}: 'y' must hold integer class labels. Received "
                        f"dtype {y.dtype}.")
    if np.issubdtype(y.dtype, np.floating):
        bad = y[~np.isfinite(y) | (y != np.round(y))]
        if bad.size:
            raise DataError(
                f"Data file {where!r}: 'y' holds non-integer values (e.g. {bad[0].item()!r}); "
                "stepkit fit trains classifiers on integer class labels 0, 1, 2, ... and does "
                "not round them. Save the class indices as integers, or train on continuous "
                "targets from Python: StepModel(net, step='supervised') with a regression loss."
            )
    y = y.astype("int64")
    if y.size and y.min() < 0:
        raise DataError(f"Data file {where!r}: class labels in 'y' must be 0 or more. Received "
                        f"{int(y.min())}.")
    return y


def load_image_folder(path: str | os.PathLike, image_size: int | None = 28) -> Data:
    """PNG/JPEG files from a folder; one sub-folder per class gives labels."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a test/CLI dependency
        raise DataError("Reading an image folder needs Pillow: pip install pillow") from None
    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"Image folder {str(root)!r} has no PNG/JPEG files. Expected image "
                        "files directly in it, or in one sub-folder per class.")
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB") if im.mode not in ("L", "1") else im.convert("L"))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"Image file {str(f)!r} could not be read ({exc}).") from None
    mode = "RGB" if any(im.mode == "RGB" for im in images) else "L"
    size = images[0].size if image_size is None else (image_size, image_size)
    x = np.stack([np.asarray(im.convert(mode).resize(size, Image.BILINEAR)) for im in images])
    x = _as_images(x.astype("float32") / 255.0, str(root))
    y = np.array([label for _, label in files], dtype="int64") if classes else None
    return Data(x, y, str(root))


def keras_datasets_dir() -> Path:
    """Where Keras caches its datasets: ``$KERAS_HOME/datasets`` (default ``~/.keras``)."""
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))) / "datasets"


def load_keras_dataset(name: str) -> Data:
    """The training split of a Keras dataset already in the local cache (never downloads)."""
    base = keras_datasets_dir()
    if name == "mnist":
        needed = [base / "mnist.npz"]
    elif name == "fashion_mnist":
        needed = [base / "fashion-mnist" / f for f in
                  ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz")]
    else:
        candidates = [base / "cifar-10-batches-py-target" / "cifar-10-batches-py",
                      base / "cifar-10-batches-py"]
        folder = next((c for c in candidates if (c / "data_batch_1").is_file()), candidates[0])
        needed = [folder / f"data_batch_{i}" for i in range(1, 6)]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DataError(
            f"Keras dataset {name!r} is not in the local cache (missing {missing[0]}). "
            f"stepkit never downloads: run `python -c \"import keras; "
            f"keras.datasets.{name}.load_data()\"` once with network access, or pass "
            "--data digits, a .npz file or an image folder."
        )
    if name == "mnist":
        with np.load(needed[0], allow_pickle=False) as f:
            x, y = f["x_train"], f["y_train"]
    elif name == "fashion_mnist":
        with gzip.open(needed[0], "rb") as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)
        with gzip.open(needed[1], "rb") as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(len(y), 28, 28)
    else:
        xs, ys = [], []
        for p in needed:
            with open(p, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # noqa: S301 - Keras' own cache
            xs.append(batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[b"labels"]))
        x, y = np.concatenate(xs), np.concatenate(ys)
    return Data(_as_images(_scale(x), name), y.astype("int64").reshape(-1), name)


def read_data(spec: str | os.PathLike | None = None, *,
              image_size: int | None = 28) -> Data:
    """Read the data ``spec`` names (see the module docstring), as stored.

    Raises:
        DataError: the file or folder is missing or malformed, or a Keras dataset
            is not cached.
    """
    name = None if spec is None else os.fspath(spec)
    if name in (None, "", "digits"):
        x, y = load_digits(image_size)
        return Data(x, y, "digits (scikit-learn)")
    if name in KERAS_DATASETS:
        return load_keras_dataset(name)
    if os.path.isdir(name):
        return load_image_folder(name, image_size)
    if name.endswith(".npz") or os.path.exists(name):
        return load_npz(name)
    raise DataError(
        f"Data {name!r} does not exist. --data takes 'digits' (the default), a .npz file "
        f"(keys 'x' and optional 'y'), an image folder, or a cached Keras dataset "
        f"({', '.join(KERAS_DATASETS)})."
    )


def prepare_data(data: Data, *, kind: str = "images", limit: int | None = None) -> Data:
    """``data`` in the shape ``kind`` wants, cut to its first ``limit`` samples.

    Raises:
        DataError: an unknown kind, vectors for an image step, or no labels for
            ``"labeled-images"``.
    """
    if kind not in DATA_KINDS:
        raise DataError(f"Unknown data kind {kind!r}. Valid kinds: {', '.join(DATA_KINDS)}.")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of samples. Received: {limit!r}.")
    x, y = data.x, data.y
    if limit is not None:
        x, y = x[:limit], None if y is None else y[:limit]
    if kind == "vectors":
        x = x.reshape(len(x), -1)
    elif x.ndim == 2:
        raise DataError(f"{data.source}: this step trains on images, but 'x' holds vectors of "
                        f"shape {x.shape}. Save images as (n, height, width[, channels]).")
    else:
        x = _as_images(x, data.source)
    if kind == "labeled-images" and y is None:
        raise DataError(f"{data.source}: this step needs labels, and the data has none. Add "
                        "'y' to the .npz file, or use one sub-folder per class.")
    return Data(x, y, data.source)


def load_data(spec: str | os.PathLike | None = None, *, kind: str = "images",
              image_size: int | None = 28, limit: int | None = None) -> Data:
    """Load the data ``spec`` names (see the module docstring) in the shape ``kind`` wants.

    The same as ``prepare_data(read_data(spec, image_size=...), kind=..., limit=...)``.

    Args:
        spec: ``None``/``"digits"``, a ``.npz`` path, an image folder or a cached
            Keras dataset name.
        kind: ``"images"`` (``x`` of shape ``(n, h, w, c)``; labels kept if any),
            ``"labeled-images"`` (the same, labels required) or ``"vectors"``
            (``x`` flattened to ``(n, d)``).
        image_size: side of the images made from the digits or an image folder.
        limit: keep only the first ``limit`` samples.

    Raises:
        DataError: the file or folder is missing or malformed, labels are missing
            for ``"labeled-images"``, or a Keras dataset is not cached.
    """
    if kind not in DATA_KINDS:
        raise DataError(f"Unknown data kind {kind!r}. Valid kinds: {', '.join(DATA_KINDS)}.")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of samples. Received: {limit!r}.")
    return prepare_data(read_data(spec, image_size=image_size), kind=kind, limit=limit)
