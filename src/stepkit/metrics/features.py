"""Feature extractors for FID and KID, all offline: the shipped digits classifier, InceptionV3.

A feature extractor is any callable mapping ``(N, ...)`` samples to ``(N, d)``
features. Two come with stepkit:

- ``"digits"``: the penultimate layer (64 units) of the small digits classifier
  shipped in this package (:class:`~stepkit.metrics.digits.DigitsClassifier`),
  for small grayscale images in [0, 1];
- ``"inception"``: the 2048 average-pooled features of
  ``keras.applications.InceptionV3(include_top=False, pooling="avg")``, for
  natural images in [0, 1]. stepkit never downloads its weights: they must be
  in the Keras cache already (``$KERAS_HOME/models``, default ``~/.keras/models``)
  or given as a file.

Images of another size or channel count are resized bilinearly with
``keras.ops.image.resize`` (to 28x28 or 299x299) and converted to grey (mean of
the channels) or RGB (the grey channel repeated).

Note that Keras' InceptionV3 is not the TensorFlow graph of Heusel et al.'s
reference FID code, so its figures are comparable with each other, not with
published FID values.

Example::

    extract = get_feature_extractor("digits")
    extract(images).shape            # (N, 64)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from stepkit.data import keras_datasets_dir
from stepkit.errors import StepkitError

EXTRACTORS = ("digits", "inception")
INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_FEATURES = 2048


class MissingWeightsError(StepkitError, FileNotFoundError):
    """A feature extractor's weights are not on disk (stepkit never downloads them)."""


def keras_models_dir() -> Path:
    """Where ``keras.utils.get_file`` caches model weights: ``$KERAS_HOME/models``."""
    return keras_datasets_dir().parent / "models"


def inception_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """The InceptionV3 (no top) weights file to load: ``weights`` or the Keras cache's copy.

    Raises:
        MissingWeightsError: the file is not there; the message says how to get it.
    """
    path = Path(weights) if weights is not None else keras_models_dir() / INCEPTION_WEIGHTS
    if path.is_file():
        return path
    where = "the file given" if weights is not None else "the Keras cache"
    raise MissingWeightsError(
        f"InceptionV3 weights for FID/KID are not in {where}: {str(path)!r} does not exist. "
        "stepkit never downloads. Either fetch them once with network access: python -c "
        "\"import keras; keras.applications.InceptionV3(include_top=False, weights='imagenet')\" "
        f"(it saves {INCEPTION_WEIGHTS} under $KERAS_HOME/models, default ~/.keras/models), "
        "or pass the file: inception_features(weights='path/to/" + INCEPTION_WEIGHTS + "'), "
        "or use feature_extractor='digits' for small grayscale images.")


def to_rgb_images(images: Any, image_size: int) -> Any:
    """``(N, H, W[, C])`` images in [0, 1] as ``(N, image_size, image_size, 3)`` float32.

    Raises:
        ValueError: not ``(N, H, W)`` or ``(N, H, W, C)`` with C in 1, 3.
    """
    from keras import ops

    x = ops.cast(ops.convert_to_tensor(images), "float32")
    if len(x.shape) == 3:
        x = ops.expand_dims(x, -1)
    if len(x.shape) != 4 or x.shape[-1] not in (1, 3):
        raise ValueError("InceptionV3 features need images of shape (N, height, width) or "
                         f"(N, height, width, 1 or 3). Received shape {tuple(x.shape)}.")
    if x.shape[-1] == 1:
        x = ops.repeat(x, 3, axis=-1)
    if tuple(x.shape[1:3]) != (image_size, image_size):
        x = ops.image.resize(x, (image_size, image_size), interpolation="bilinear")
    return x


class InceptionFeatures:
    """InceptionV3 pool features of images in [0, 1]: ``(N, 2048)`` float64.

    Images are resized to ``image_size`` (299, InceptionV3's own size; at least
    75), made RGB and scaled to [-1, 1] with
    ``keras.applications.inception_v3.preprocess_input``.

    Args:
        weights: the ``..._notop.h5`` weights file; default: the Keras cache's.
        image_size: the side the images are resized to.
        batch_size: images per forward pass.

    Raises:
        MissingWeightsError: the weights file is not on disk.

    Example::

        extract = InceptionFeatures()     # weights from ~/.keras/models
        extract(images).shape             # (N, 2048)
    """

    name = "inception"
    num_features = INCEPTION_FEATURES

    def __init__(self, weights: str | os.PathLike | None = None, image_size: int = 299,
                 batch_size: int = 32) -> None:
        import keras

        path = inception_weights_path(weights)
        if image_size < 75:
            raise ValueError(f"InceptionV3 needs images of at least 75x75. Received "
                             f"image_size={image_size!r}.")
        self.model = keras.applications.InceptionV3(
            include_top=False, weights=str(path), input_shape=(image_size, image_size, 3),
            pooling="avg")
        self.image_size = image_size
        self.batch_size = batch_size

    def __call__(self, images: Any) -> np.ndarray:
        import keras

        out = []
        for start in range(0, len(images), self.batch_size):
            x = to_rgb_images(images[start:start + self.batch_size], self.image_size)
            x = keras.applications.inception_v3.preprocess_input(x * 255.0)
            out.append(self.model.predict_on_batch(x))
        return (np.concatenate(out) if out else np.zeros((0, INCEPTION_FEATURES))).astype(
            "float64")


def inception_features(weights: str | os.PathLike | None = None,
                       image_size: int = 299) -> InceptionFeatures:
    """The InceptionV3 feature extractor (see :class:`InceptionFeatures`); never downloads."""
    return InceptionFeatures(weights, image_size=image_size)


@functools.lru_cache(maxsize=1)
def _shared_digits_classifier() -> Any:
    from stepkit.metrics.digits import DigitsClassifier

    return DigitsClassifier()


def digits_features() -> Any:
    """The shipped digits classifier as a feature extractor: ``(N, 64)`` features.

    One classifier is loaded per process and shared.
    """
    return _shared_digits_classifier()


def get_feature_extractor(spec: Any) -> Any:
    """``"digits"``, ``"inception"``, a callable or ``None`` (inputs are features) -> extractor.

    Raises:
        ValueError: an unknown name or something that is not callable.
        MissingWeightsError: ``"inception"`` without its weights on disk.
    """
    if spec is None or (callable(spec) and not isinstance(spec, str)):
        return spec
    if spec == "digits":
        return digits_features()
    if spec == "inception":
        return inception_features()
    raise ValueError(f"Unknown feature extractor {spec!r}. Valid choices: "
                     f"{', '.join(map(repr, EXTRACTORS))}, a callable mapping samples to "
                     "(N, d) features, or None when the inputs already are features.")


def as_features(extractor: Any, samples: Any) -> np.ndarray:
    """``extractor(samples)`` (or ``samples`` when ``extractor`` is None) as ``(N, d)`` float64.

    Raises:
        ValueError: the features are not a 2-D array.
    """
    if extractor is None:
        from keras import ops

        f = np.asarray(ops.convert_to_numpy(samples) if not isinstance(samples, np.ndarray)
                       else samples, dtype="float64")
    else:
        f = np.asarray(extractor(samples), dtype="float64")
    if f.ndim != 2:
        source = "the samples" if extractor is None else "the feature extractor's output"
        raise ValueError(f"FID/KID need features of shape (N, d); {source} has shape "
                         f"{f.shape}. Pass feature_extractor='digits' or 'inception' for "
                         "images, or flatten the features.")
    return f
