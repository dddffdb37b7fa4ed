"""``SampleQuality``: FID, KID and class recognition of a generative step, logged each epoch."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stepkit.metrics.features import as_features, get_feature_extractor
from stepkit.metrics.frechet import feature_statistics, frechet_distance
from stepkit.metrics.kernel import kernel_distance
from stepkit.metrics.recognition import recognised_classes, requested_labels

METRICS = ("fid", "kid", "class_recognition", "distinct_classes")


class SampleQuality(keras.callbacks.Callback):
    """Log the quality of a generative step's samples after each epoch: ``fid``, ``kid``, ...

    At the end of an epoch it draws ``n_samples`` samples with the step's
    ``sample_inputs(n_samples, seed)`` and ``model.predict`` (the same inputs every
    epoch), and writes into the epoch's logs:

    - ``"fid"``: :func:`~stepkit.metrics.frechet.frechet_distance` between the
      features of ``real_images`` and of the samples (Heusel et al. 2017);
    - ``"kid"``: :func:`~stepkit.metrics.kernel.kernel_distance`, exact over all
      features unless ``kid_subsets`` is given (Bińkowski et al. 2018);
    - ``"class_recognition"``: for a conditional step (its sampling inputs carry
      labels, see :func:`~stepkit.metrics.recognition.requested_labels`), the
      fraction of samples the classifier assigns to the requested class. Added
      automatically when a classifier is available;
    - ``"distinct_classes"`` (only when asked for): how many classes the
      classifier recognises among the samples (mode collapse).

    Placed before ``History`` (Keras adds ``History`` last) and before
    ``TensorBoard``, ``CSVLogger`` or stepkit's ``HistoryFiles``, the values
    appear in ``model.history.history``, TensorBoard's epoch scalars and the files.
    The real images' features are computed once, when training begins.

    Args:
        real_images: ``(N, H, W[, C])`` images in the generator's value range
            (usually [0, 1]); at least 2.
        metrics: any of ``"fid"``, ``"kid"``, ``"class_recognition"``,
            ``"distinct_classes"``.
        n_samples: samples drawn per evaluation.
        feature_extractor: ``"digits"`` (default), ``"inception"``, or a callable
            mapping images to ``(N, d)`` features.
        classifier: for class recognition; default: the digits classifier when
            ``feature_extractor`` is ``"digits"``, else none.
        seed: seed of the sampling inputs.
        every: evaluate after every ``every`` epochs (and after the last one);
            other epochs log nothing.
        batch_size: batch size of ``model.predict``.
        kid_subsets: ``None`` (exact KID) or the number of subsets of
            ``min(1000, n)`` samples.

    Attributes:
        records: ``{"epoch": ..., "fid": ..., ...}`` for each evaluation.

    Raises:
        ValueError: an unknown metric, fewer than 2 real images or samples, or
            class metrics without a classifier.
        stepkit.metrics.MissingWeightsError: ``"inception"`` without its weights on disk.

    Example::

        from stepkit.metrics import SampleQuality

        model = StepModel(step="gan")
        model.compile()
        model.fit(images, epochs=10, callbacks=[SampleQuality(images)])
        model.history.history["fid"]      # one value per epoch
    """

    def __init__(self, real_images: Any, metrics: tuple[str, ...] | list[str] = ("fid", "kid"),
                 n_samples: int = 1000, feature_extractor: Any = "digits",
                 classifier: Any = None, seed: int = 0, every: int = 1, batch_size: int = 256,
                 kid_subsets: int | None = None) -> None:
        super().__init__()
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ValueError(f"Unknown sample-quality metrics {unknown or metrics!r}. Valid "
                             f"choices: {', '.join(map(repr, METRICS))}.")
        if n_samples < 2 or every < 1 or len(real_images) < 2:
            raise ValueError("SampleQuality needs n_samples >= 2, every >= 1 and at least 2 "
                             f"real images. Received n_samples={n_samples!r}, every={every!r}, "
                             f"{len(real_images)} real images.")
        self.real_images = real_images
        self.metrics = tuple(metrics)
        self.n_samples, self.seed, self.every = n_samples, seed, every
        self.batch_size, self.kid_subsets = batch_size, kid_subsets
        self.feature_extractor = get_feature_extractor(feature_extractor)
        if classifier is None and feature_extractor == "digits":
            classifier = self.feature_extractor
        self.classifier = classifier
        if self.classifier is None and {"class_recognition", "distinct_classes"} & set(metrics):
            raise ValueError("Class recognition needs a classifier: pass SampleQuality(..., "
                             "classifier=...) or feature_extractor='digits'.")
        self.records: list[dict[str, Any]] = []
        self._real: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None
        self._epochs: int | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        self._epochs = (self.params or {}).get("epochs")
        self.real_features()

    def real_features(self) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Features of the real images ``(N, d)`` and their mean and covariance (cached)."""
        if self._real is None:
            f = as_features(self.feature_extractor, self.real_images)
            self._real = f, feature_statistics(f)
        return self._real

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        last = self._epochs is not None and epoch + 1 == self._epochs
        if (epoch + 1) % self.every and not last:
            return
        values = self.evaluate()
        if logs is not None:
            logs.update(values)
        self.records.append({"epoch": epoch + 1, **values})

    def evaluate(self) -> dict[str, float]:
        """Draw the samples now and compute every metric: ``{"fid": ..., "kid": ...}``."""
        step = getattr(self.model, "step", None)
        if step is None:
            raise ValueError("SampleQuality draws samples with model.step.sample_inputs: it "
                             f"needs a StepModel. Received a {type(self.model).__name__}.")
        inputs = step.sample_inputs(self.n_samples, self.seed)
        images = self.model.predict(inputs, batch_size=self.batch_size, verbose=0)
        values: dict[str, float] = {}
        if {"fid", "kid"} & set(self.metrics):
            real, stats = self.real_features()
            fake = as_features(self.feature_extractor, images)
            if "fid" in self.metrics:
                values["fid"] = frechet_distance(*stats, *feature_statistics(fake))
            if "kid" in self.metrics:
                values["kid"] = kernel_distance(real, fake, num_subsets=self.kid_subsets,
                                                subset_size=1000, seed=self.seed)
        labels = requested_labels(inputs)
        if labels is None and "class_recognition" in self.metrics:
            raise ValueError(f"class_recognition needs a conditional step, whose sampling inputs "
                             f"carry labels; step {step.name!r} draws none. Leave it out of "
                             "metrics (conditional steps report it anyway).")
        if self.classifier is not None and (labels is not None
                                            or "distinct_classes" in self.metrics):
            classes = recognised_classes(images, self.classifier)
            if labels is not None:
                values["class_recognition"] = float(np.mean(classes == labels))
            if "distinct_classes" in self.metrics:
                values["distinct_classes"] = float(len(np.unique(classes)))
        return values
