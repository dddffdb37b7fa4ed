"""Kernel distance between two feature distributions (KID; Bińkowski et al. 2018).

KID is the unbiased estimate of the squared maximum mean discrepancy (MMD^2)
with the cubic polynomial kernel ``k(x, y) = (x . y / d + 1)^3``, from
"Demystifying MMD GANs" (Bińkowski, Sutherland, Arbel, Gretton; ICLR 2018).
For features ``X`` (m of them) and ``Y`` (n):

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1))
            + sum_{i != j} k(y_i, y_j) / (n (n - 1))
            - 2 sum_{i, j} k(x_i, y_j) / (m n)

It is unbiased, so it can be slightly negative when the two sets come from one
distribution. By default it is computed exactly over all features; with
``num_subsets`` it is the paper's variant: the mean over that many random
subsets of ``subset_size`` samples of each set (drawn without replacement,
seeded). Sums are taken in blocks of 1024 rows, in float64.

Example::

    kid = KernelDistance(feature_extractor="digits")
    kid.update_state(real_images, generated_images)
    float(kid.result())
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stepkit.metrics.features import as_features, get_feature_extractor

BLOCK = 1024


def polynomial_kernel(x: Any, y: Any) -> np.ndarray:
    """``(x . y / d + 1)^3`` for ``(m, d)`` and ``(n, d)`` features: an ``(m, n)`` matrix."""
    x, y = np.asarray(x, "float64"), np.asarray(y, "float64")
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _kernel_sum(x: np.ndarray, y: np.ndarray, off_diagonal: bool) -> float:
    """Sum of ``k(x_i, y_j)``; with ``off_diagonal`` (``x is y``), leave out ``i == j``."""
    total = 0.0
    for start in range(0, len(x), BLOCK):
        block = polynomial_kernel(x[start:start + BLOCK], y)
        total += block.sum()
        if off_diagonal:
            rows = np.arange(len(block))
            total -= block[rows, start + rows].sum()
    return float(total)


def mmd2_unbiased(x: Any, y: Any) -> float:
    """The unbiased MMD^2 of ``(m, d)`` and ``(n, d)`` features with the cubic kernel.

    Raises:
        ValueError: fewer than 2 samples in a set, or widths that differ.
    """
    x, y = np.asarray(x, "float64"), np.asarray(y, "float64")
    if len(x) < 2 or len(y) < 2 or x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError("KID needs two sets of at least 2 features each, of one width (N, d). "
                         f"Received shapes {x.shape} and {y.shape}.")
    m, n = len(x), len(y)
    return (_kernel_sum(x, x, True) / (m * (m - 1)) + _kernel_sum(y, y, True) / (n * (n - 1))
            - 2.0 * _kernel_sum(x, y, False) / (m * n))


def kernel_distance(real: Any, generated: Any, num_subsets: int | None = None,
                    subset_size: int = 1000, seed: int = 0) -> float:
    """KID between two sets of ``(N, d)`` features.

    Args:
        real: features of real samples, ``(m, d)``.
        generated: features of generated samples, ``(n, d)``.
        num_subsets: ``None``: the exact estimate over all features; else the
            mean over ``num_subsets`` random subsets (Bińkowski et al. used 100
            subsets of 1000).
        subset_size: samples per subset, at most ``min(m, n)``.
        seed: the subsets' seed.

    Returns:
        The unbiased MMD^2 (units: the kernel's, i.e. cubed normalised dot products).
    """
    if num_subsets is None:
        return mmd2_unbiased(real, generated)
    real, generated = np.asarray(real, "float64"), np.asarray(generated, "float64")
    size = min(subset_size, len(real), len(generated))
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                            generated[rng.choice(len(generated), size, replace=False)])
              for _ in range(num_subsets)]
    return float(np.mean(values))


class KernelDistance(keras.metrics.Metric):
    """KID between real and generated samples, accumulated over batches.

    ``update_state(real, generated)`` adds a batch of real and/or generated
    samples (either may be ``None``); ``result()`` is :func:`kernel_distance`
    over all features so far. The features themselves are kept (float64 numpy,
    ``O(N d)`` memory); the exact estimate takes ``O(N^2 d)`` time.

    Like :class:`~stepkit.metrics.FrechetDistance` it runs eagerly, on every
    Keras backend: use it in callbacks and evaluation loops.

    Args:
        feature_extractor: ``"digits"``, ``"inception"``, a callable mapping
            samples to ``(N, d)`` features, or ``None`` (inputs are features).
        num_subsets: ``None`` (default): exact over all features; else the
            paper's mean over random subsets.
        subset_size: samples per subset.
        seed: the subsets' seed.
        name: the metric's name (the key in logs).

    Raises:
        ValueError: (``result``) fewer than 2 samples of a set.

    Example::

        kid = KernelDistance()                   # inputs are features
        kid.update_state(np.random.randn(200, 8), np.random.randn(200, 8))
        float(kid.result())                      # close to 0
    """

    def __init__(self, feature_extractor: Any = None, num_subsets: int | None = None,
                 subset_size: int = 1000, seed: int = 0, name: str = "kid",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if num_subsets is not None and (num_subsets < 1 or subset_size < 2):
            raise ValueError("num_subsets must be positive and subset_size at least 2. "
                             f"Received num_subsets={num_subsets!r}, subset_size={subset_size!r}.")
        self._spec = feature_extractor if isinstance(feature_extractor, str) else None
        self.feature_extractor = get_feature_extractor(feature_extractor)
        self.num_subsets, self.subset_size, self.seed = num_subsets, subset_size, seed
        self._real: list[np.ndarray] = []
        self._generated: list[np.ndarray] = []

    def update_state(self, real: Any = None, generated: Any = None,
                     sample_weight: Any = None) -> None:
        if sample_weight is not None:
            raise ValueError("KernelDistance does not take sample_weight. Received one.")
        for store, x in ((self._real, real), (self._generated, generated)):
            if x is not None:
                store.append(as_features(self.feature_extractor, x))

    def result(self) -> Any:
        sets = []
        for what, store in (("real", self._real), ("generated", self._generated)):
            n = sum(len(f) for f in store)
            if n < 2:
                raise ValueError(f"KernelDistance needs at least 2 {what} samples; it has {n}. "
                                 "Call update_state(real, generated) first.")
            sets.append(np.concatenate(store))
        value = kernel_distance(*sets, num_subsets=self.num_subsets,
                                subset_size=self.subset_size, seed=self.seed)
        return keras.ops.convert_to_tensor(value, dtype="float32")

    def reset_state(self) -> None:
        self._real, self._generated = [], []

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "feature_extractor": self._spec,
                "num_subsets": self.num_subsets, "subset_size": self.subset_size,
                "seed": self.seed}
