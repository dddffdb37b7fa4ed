"""Fréchet distance between two feature distributions (FID; Heusel et al. 2017).

The Fréchet (2-Wasserstein) distance between the Gaussians fitted to two sets of
features, ``N(mu1, S1)`` and ``N(mu2, S2)``:

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

With InceptionV3 pool features it is the FID of "GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium" (Heusel et al., NeurIPS 2017).
The trace of the matrix square root is computed stably as the sum of the square
roots of the eigenvalues of the symmetric matrix ``S1^{1/2} S2 S1^{1/2}`` (which
has the eigenvalues of ``S1 S2``), in float64 with ``numpy.linalg.eigh``; tiny
negative eigenvalues from rounding are clipped to 0.

Example::

    fid = FrechetDistance(feature_extractor="digits")
    fid.update_state(real_images, generated_images)
    float(fid.result())
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stepkit.metrics.features import as_features, get_feature_extractor


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` in float64.

    Args:
        mu1: the first mean, shape ``(d,)``.
        sigma1: the first covariance matrix, shape ``(d, d)``, symmetric PSD.
        mu2: the second mean, shape ``(d,)``.
        sigma2: the second covariance matrix, shape ``(d, d)``, symmetric PSD.

    Returns:
        The squared Fréchet distance (units: squared feature units), ``>= 0``.

    Raises:
        ValueError: the shapes do not match.
    """
    mu1, mu2 = np.asarray(mu1, "float64"), np.asarray(mu2, "float64")
    s1, s2 = np.asarray(sigma1, "float64"), np.asarray(sigma2, "float64")
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError("frechet_distance needs means of shape (d,) and covariances of shape "
                         f"(d, d). Received mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {s2.shape}.")
    root1 = _psd_sqrt((s1 + s1.T) / 2)
    inner = root1 @ ((s2 + s2.T) / 2) @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt), 0.0)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``(N, d)`` features, float64."""
    f = np.asarray(features, "float64")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def intra_class_frechet_distance(real: Any, real_labels: Any, generated: Any,
                                 generated_labels: Any) -> float:
    """Intra-class FID: the mean over classes of the Fréchet distance within each class.

    For each class ``c`` in ``real_labels``, the Fréchet distance between the
    features of the real samples of class ``c`` and of the samples generated for
    class ``c`` (Miyato and Koyama 2018, "cGANs with Projection Discriminator").
    Unlike the FID of all samples, it grows when a conditional generator makes
    few distinct images per class (collapse within a class).

    Args:
        real: real features, shape ``(N, d)``.
        real_labels: their integer classes, shape ``(N,)``.
        generated: generated features, shape ``(M, d)``.
        generated_labels: the class each was generated for, shape ``(M,)``.

    Returns:
        The mean squared Fréchet distance over the classes of ``real_labels``.

    Raises:
        ValueError: a class with fewer than 2 real or generated samples, or
            labels whose length is not the number of feature rows.
    """
    real, generated = np.asarray(real), np.asarray(generated)
    real_labels = np.asarray(real_labels).reshape(-1)
    generated_labels = np.asarray(generated_labels).reshape(-1)
    if len(real_labels) != len(real) or len(generated_labels) != len(generated):
        raise ValueError(
            "intra_class_frechet_distance needs one label per feature row. Received "
            f"{len(real)} real rows with {len(real_labels)} labels and {len(generated)} "
            f"generated rows with {len(generated_labels)} labels.")
    distances = []
    for c in np.unique(real_labels):
        a, b = real[real_labels == c], generated[generated_labels == c]
        if len(a) < 2 or len(b) < 2:
            raise ValueError(
                f"intra_class_frechet_distance needs at least 2 real and 2 generated samples "
                f"of each class; class {c} has {len(a)} real and {len(b)} generated.")
        distances.append(frechet_distance(*feature_statistics(a), *feature_statistics(b)))
    return float(np.mean(distances))


class _Moments:
    """Running count, sum and sum of outer products of features (float64, shifted).

    The sums are taken of ``x - shift`` with ``shift`` the first batch's mean,
    which keeps the covariance free of cancellation when the mean is large.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift = self.total = self.outer = None

    def add(self, f: np.ndarray) -> None:
        if not len(f):
            return
        if self.shift is None:
            self.shift = f.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.outer = np.zeros((f.shape[1], f.shape[1]))
        elif f.shape[1] != self.shift.shape[0]:
            raise ValueError(f"Features of width {f.shape[1]} cannot join features of width "
                             f"{self.shift.shape[0]} accumulated before.")
        c = f - self.shift
        self.n += len(f)
        self.total += c.sum(axis=0)
        self.outer += c.T @ c

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.total / self.n
        cov = (self.outer - self.n * np.outer(m, m)) / (self.n - 1)
        return m + self.shift, cov


class FrechetDistance(keras.metrics.Metric):
    """FID-style Fréchet distance between real and generated samples, accumulated over batches.

    ``update_state(real, generated)`` adds a batch of real and/or generated
    samples (either may be ``None``); ``result()`` returns the Fréchet distance
    between the Gaussians fitted to all features so far. Only the count, the sum
    and the sum of outer products of each set's features are kept (float64
    numpy arrays, ``O(d^2)`` memory), so the result does not depend on how the
    samples were split into batches. Each set needs at least 2 samples.

    The metric runs eagerly (its state is numpy, not Keras variables): use it in
    callbacks (:class:`~stepkit.metrics.SampleQuality`) and evaluation loops,
    not in ``compile(metrics=...)``. It works on every Keras backend.

    Args:
        feature_extractor: ``"digits"`` (the shipped digits classifier,
            64 features), ``"inception"`` (InceptionV3 pool features, 2048),
            a callable mapping ``(N, ...)`` samples to ``(N, d)`` features, or
            ``None``: the inputs already are ``(N, d)`` features.
        name: the metric's name (the key in logs).

    Raises:
        ValueError: (``result``) fewer than 2 samples of a set; (``update_state``)
            features that are not ``(N, d)`` or change width.

    Example::

        fid = FrechetDistance()                  # inputs are features
        fid.update_state(np.random.randn(500, 8), np.random.randn(500, 8) + 1)
        float(fid.result())                      # about 8 (= ||mu1 - mu2||^2)
    """

    def __init__(self, feature_extractor: Any = None, name: str = "fid", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self._spec = feature_extractor if isinstance(feature_extractor, str) else None
        self.feature_extractor = get_feature_extractor(feature_extractor)
        self._real, self._generated = _Moments(), _Moments()

    def update_state(self, real: Any = None, generated: Any = None,
                     sample_weight: Any = None) -> None:
        if sample_weight is not None:
            raise ValueError("FrechetDistance does not take sample_weight. Received one.")
        for moments, x in ((self._real, real), (self._generated, generated)):
            if x is not None:
                moments.add(as_features(self.feature_extractor, x))

    def result(self) -> Any:
        for what, moments in (("real", self._real), ("generated", self._generated)):
            if moments.n < 2:
                raise ValueError(f"FrechetDistance needs at least 2 {what} samples; it has "
                                 f"{moments.n}. Call update_state(real, generated) first.")
        value = frechet_distance(*self._real.statistics(), *self._generated.statistics())
        return keras.ops.convert_to_tensor(value, dtype="float32")

    def reset_state(self) -> None:
        self._real, self._generated = _Moments(), _Moments()

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "feature_extractor": self._spec}
