"""What a classifier recognises in generated samples: the requested class, how many classes.

- :func:`class_recognition_rate`: for a conditional generator, the fraction of
  samples the classifier assigns to the class that was asked for (the
  "classification accuracy" of conditional GAN papers, e.g. Odena et al. 2017).
- :func:`distinct_classes`: how many different classes appear among the
  samples, a plain sign of mode collapse (a collapsed generator of digits makes
  one or two).

The classifier is the shipped digits classifier by default; any object with a
``predict_classes(images)`` method, a Keras model returning class scores, or a
callable returning ``(N, classes)`` scores works.

Example::

    inputs = model.step.sample_inputs(100, seed=0)   # {"z": ..., "label": ...}
    images = model.predict(inputs)
    class_recognition_rate(images, requested_labels(inputs))
    distinct_classes(images)                          # 10 for a healthy digits GAN
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stepkit.metrics.features import digits_features

LABEL_KEYS = ("label", "labels", "y", "class", "classes")


def requested_labels(inputs: Any) -> np.ndarray | None:
    """The class labels in a step's sampling inputs, or ``None`` (not conditional).

    Understands ``(z, labels)`` pairs and dicts with a ``"label"`` (or
    ``"labels"``, ``"y"``, ``"class"``, ``"classes"``) key, as a conditional
    step's ``sample_inputs(n, seed)`` returns them. Labels are ``(N,)`` or
    ``(N, 1)`` integers, or ``(N, classes)`` one-hot rows.
    """
    labels = None
    if isinstance(inputs, dict):
        labels = next((inputs[k] for k in LABEL_KEYS if k in inputs), None)
    elif isinstance(inputs, list | tuple) and len(inputs) == 2:
        labels = inputs[1]
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=-1)
    return labels.reshape(len(labels)).astype("int64")


def recognised_classes(images: Any, classifier: Any = None) -> np.ndarray:
    """The class the classifier gives each image: ``(N,)`` int64.

    Raises:
        ValueError: the classifier's scores are not ``(N, classes)``.
    """
    classifier = digits_features() if classifier is None else classifier
    if hasattr(classifier, "predict_classes"):
        return np.asarray(classifier.predict_classes(images)).astype("int64")
    import keras

    if isinstance(classifier, keras.Model):
        scores = classifier.predict(images, verbose=0)
    else:
        scores = classifier(images)
    scores = np.asarray(keras.ops.convert_to_numpy(scores))
    if scores.ndim != 2 or len(scores) != len(images):
        raise ValueError(f"A classifier for class recognition must return (N, classes) scores "
                         f"for N images. Received shape {scores.shape} for {len(images)} images.")
    return scores.argmax(axis=-1).astype("int64")


def class_recognition_rate(images: Any, labels: Any, classifier: Any = None) -> float:
    """Fraction of ``images`` the classifier assigns to the requested ``labels`` (0 to 1).

    Args:
        images: ``(N, ...)`` generated samples.
        labels: ``(N,)`` requested classes (or one-hot ``(N, classes)``).
        classifier: default: the shipped digits classifier.

    Raises:
        ValueError: the counts of images and labels differ.
    """
    labels = requested_labels((None, labels))
    if labels is None or len(labels) != len(images) or not len(images):
        count = "no labels" if labels is None else f"{len(labels)} labels"
        raise ValueError(f"class_recognition_rate needs one requested label per image. Received "
                         f"{len(images)} images and {count}.")
    return float(np.mean(recognised_classes(images, classifier) == labels))


def distinct_classes(images: Any, classifier: Any = None) -> int:
    """How many different classes the classifier recognises among ``images``."""
    return int(len(np.unique(recognised_classes(images, classifier))))
