"""The small digits classifier that ships with stepkit, for sample-quality metrics offline.

It plays the part InceptionV3 plays for natural images (Heusel et al. 2017): its
64-unit penultimate layer gives the features of FID and KID, its logits tell which
digit a sample looks like (class recognition, mode collapse). It is trained on
scikit-learn's handwritten digits as ``stepkit.data.load_digits()`` returns them
(28x28x1 in [0, 1]) by ``scripts/train_digits_classifier.py`` in the repository;
the held-out accuracy of the shipped weights is recorded in
``digits_classifier.json`` next to them.

Example::

    from stepkit.data import load_digits
    from stepkit.metrics import DigitsClassifier

    x, y = load_digits()
    clf = DigitsClassifier()
    clf.features(x[:10]).shape          # (10, 64)
    clf.predict_classes(x[:10])         # digits 0-9
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
WEIGHTS_PATH = HERE / "digits_classifier.weights.h5"
RECORD_PATH = HERE / "digits_classifier.json"
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
NUM_FEATURES = 64


def digits_classifier_network(kernel_initializer: str = "glorot_uniform") -> Any:
    """The classifier's network: three stride-2 convolutions, 64 tanh features, 10 logits.

    Input ``(N, 28, 28, 1)`` float in [0, 1]; outputs ``[features (N, 64), logits (N, 10)]``;
    the features lie in [-1, 1] (tanh), so no unit is dead and KID's kernel stays O(1).
    About 28,000 weights (≈ 110 KB as float32). ``kernel_initializer="zeros"``
    skips random initialisation when weights are loaded next (on JAX each random
    kernel shape costs a compilation).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, name="images")
    x = inputs
    for i, width in enumerate((16, 32, 64)):
        x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
                          kernel_initializer=kernel_initializer, name=f"conv{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    features = layers.Dense(NUM_FEATURES, activation="tanh",
                            kernel_initializer=kernel_initializer, name="features")(x)
    logits = layers.Dense(NUM_CLASSES, kernel_initializer=kernel_initializer, name="logits")(
        layers.Dropout(0.2, name="dropout")(features))
    return keras.Model(inputs, [features, logits], name="digits_classifier")


def held_out_split(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of ``n`` samples; the last share of a seeded permutation.

    The rule ``scripts/train_digits_classifier.py`` used; ``digits_classifier.json``
    records its ``fraction`` and ``seed``.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_held = int(round(n * fraction))
    return order[:-n_held], order[-n_held:]


def training_record() -> dict[str, Any]:
    """What ``digits_classifier.json`` records: held-out accuracy, split, epochs, versions."""
    return json.loads(RECORD_PATH.read_text())


def to_digit_images(images: Any) -> Any:
    """``images`` as the classifier's input: ``(N, 28, 28, 1)`` float32.

    ``(N, H, W)`` gains a channel; several channels are averaged to grey;
    another size is resized bilinearly with ``keras.ops.image.resize``. Values
    should lie in [0, 1] like ``stepkit.data.load_digits()``.

    Raises:
        ValueError: ``images`` is not ``(N, H, W)`` or ``(N, H, W, C)``.
    """
    from keras import ops

    x = ops.cast(ops.convert_to_tensor(images), "float32")
    if len(x.shape) == 3:
        x = ops.expand_dims(x, -1)
    if len(x.shape) != 4:
        raise ValueError("The digits classifier takes images of shape (N, height, width) or "
                         f"(N, height, width, channels). Received shape {tuple(x.shape)}.")
    if x.shape[-1] != 1:
        x = ops.mean(x, axis=-1, keepdims=True)
    if tuple(x.shape[1:3]) != IMAGE_SHAPE[:2]:
        x = ops.image.resize(x, IMAGE_SHAPE[:2], interpolation="bilinear")
    return x


class DigitsClassifier:
    """The shipped digits classifier: features for FID/KID, logits for class recognition.

    Args:
        weights: a ``.weights.h5`` file of :func:`digits_classifier_network`;
            default: the file shipped in this package.
        batch_size: images per forward pass.

    Attributes:
        name: ``"digits"``.
        num_features: 64, the width of the penultimate layer.
        model: the Keras model, outputs ``[features, logits]``.

    Raises:
        FileNotFoundError: the weights file does not exist.

    Example::

        clf = DigitsClassifier()
        f = clf.features(images)          # (N, 64) float64
        classes = clf.predict_classes(images)
    """

    name = "digits"
    num_features = NUM_FEATURES

    def __init__(self, weights: str | Path | None = None, batch_size: int = 256) -> None:
        path = Path(weights) if weights is not None else WEIGHTS_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"The digits classifier's weights {str(path)!r} do not exist. The file ships "
                "with stepkit (reinstall it), or train one with "
                "scripts/train_digits_classifier.py and pass DigitsClassifier(weights=PATH).")
        self.model = digits_classifier_network(kernel_initializer="zeros")
        self.model.load_weights(path)
        self.batch_size = batch_size

    def _outputs(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        n = len(images)
        feats, logits = [], []
        for start in range(0, n, self.batch_size):
            f, g = self.model.predict_on_batch(
                to_digit_images(images[start:start + self.batch_size]))
            feats.append(f)
            logits.append(g)
        if not feats:
            return np.zeros((0, NUM_FEATURES)), np.zeros((0, NUM_CLASSES))
        return (np.concatenate(feats).astype("float64"),
                np.concatenate(logits).astype("float64"))

    def features(self, images: Any) -> np.ndarray:
        """Penultimate-layer features: ``(N, 64)`` float64 (see :func:`to_digit_images`)."""
        return self._outputs(images)[0]

    def __call__(self, images: Any) -> np.ndarray:
        """The same as :meth:`features`, so the classifier is a feature extractor."""
        return self.features(images)

    def logits(self, images: Any) -> np.ndarray:
        """Unnormalised class scores: ``(N, 10)`` float64."""
        return self._outputs(images)[1]

    def predict_classes(self, images: Any) -> np.ndarray:
        """The recognised digit of each image: ``(N,)`` int64 in 0-9."""
        return self.logits(images).argmax(axis=-1)
