"""DiffAugment: differentiable augmentation of the images a GAN's discriminator sees.

Zhao, Liu, Lin, Zhu and Han, "Differentiable Augmentation for Data-Efficient GAN
Training" (NeurIPS 2020). Real and generated images are augmented the same way
before every discriminator call (in its update and in the generator's), with
transformations through which gradients flow to the generator. This is the
authors' reference code (``DiffAugment_pytorch.py``) in ``keras.ops``, for
channels-last images ``(batch, height, width, channels)``:

- ``color``: brightness ``x + (u - 0.5)``, saturation ``(x - mean_c) * 2u + mean_c``,
  contrast ``(x - mean_hwc) * (u + 0.5) + mean_hwc``, each with its own
  ``u ~ U[0, 1)`` per image (``mean_c``: over channels; ``mean_hwc``: over the image);
- ``translation``: a shift by a whole number of pixels in ``[-r, r]`` along each
  axis, ``r = round(size / 8)``, with zeros shifted in;
- ``cutout``: one square of half the image's side set to 0, centred at a random
  pixel (clipped at the borders).

Example::

    x = diff_augment(images, "translation,cutout", ctx.uniform)  # in a step
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5

Uniform = Callable[..., Any]  # ctx.uniform: (shape, dtype=...) -> U[0, 1) draws


def parse_policy(policy: str) -> tuple[str, ...]:
    """The names in a comma-separated ``policy`` (``""``: none).

    Raises:
        ValueError: a name is not one of :data:`POLICIES`, or is given twice.
    """
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown or len(set(names)) != len(names):
        problem = f"unknown augmentation(s) {unknown}" if unknown else "a repeated augmentation"
        raise ValueError(
            f"'augment' has {problem}; valid: {', '.join(POLICIES)}, comma-separated (e.g. "
            f"'translation,cutout'), or '' for none. Received: {policy!r}")
    return names


def diff_augment(x: Any, policy: str, uniform: Uniform) -> Any:
    """``x`` (``(batch, h, w, c)``) through the augmentations of ``policy``, in its order.

    ``uniform(shape, dtype=...)`` draws ``U[0, 1)`` noise (``ctx.uniform``). The
    result has ``x``'s shape and dtype and is differentiable in ``x``.
    """
    x = ops.convert_to_tensor(x)
    for name in parse_policy(policy):
        x = _AUGMENTATIONS[name](x, uniform)
    return x


def _per_image(x: Any, uniform: Uniform) -> Any:
    return uniform((ops.shape(x)[0], 1, 1, 1), dtype=x.dtype)


def color(x: Any, uniform: Uniform) -> Any:
    """Random brightness, saturation and contrast, one draw of each per image."""
    x = ops.convert_to_tensor(x)
    x = x + (_per_image(x, uniform) - 0.5)
    mean = ops.mean(x, axis=-1, keepdims=True)
    x = (x - mean) * (_per_image(x, uniform) * 2.0) + mean
    mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (_per_image(x, uniform) + 0.5) + mean


def _draw_int(uniform: Uniform, n: Any, count: int) -> Any:
    """Integers uniform in ``[0, count)``, shape ``(n,)``, as float32."""
    return ops.minimum(ops.floor(uniform((n,), dtype="float32") * count), count - 1.0)


def _shift_matrix(size: int, shift: Any, dtype: str) -> Any:
    """``(n, size, size)``: ``M[b, i, k] = 1`` where ``k == i + shift[b]`` (zeros outside)."""
    idx = ops.arange(size, dtype="float32")
    target = idx[None, :, None] + shift[:, None, None]
    return ops.cast(ops.equal(idx[None, None, :], target), dtype)


def translation(x: Any, uniform: Uniform, ratio: float = TRANSLATION_RATIO) -> Any:
    """Shift each image by whole pixels in ``[-r, r]`` per axis, ``r = int(size * ratio + 0.5)``.

    ``out[b, i, j] = x[b, i + dy, j + dx]``, 0 where that falls outside the image.
    """
    x = ops.convert_to_tensor(x)
    n, (h, w) = ops.shape(x)[0], x.shape[1:3]
    rh, rw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _draw_int(uniform, n, 2 * rh + 1) - rh
    dx = _draw_int(uniform, n, 2 * rw + 1) - rw
    x = ops.einsum("bik,bkwc->biwc", _shift_matrix(h, dy, x.dtype), x)
    return ops.einsum("bjl,bhlc->bhjc", _shift_matrix(w, dx, x.dtype), x)


def _band(size: int, cut: int, centre: Any) -> Any:
    """``(n, size)``: 1 on ``[centre - cut // 2, centre - cut // 2 + cut)``."""
    idx = ops.arange(size, dtype="float32")[None, :]
    start = centre[:, None] - float(cut // 2)
    return ops.logical_and(idx >= start, idx < start + cut)


def cutout(x: Any, uniform: Uniform, ratio: float = CUTOUT_RATIO) -> Any:
    """Zero one ``int(h * ratio + 0.5)`` x ``int(w * ratio + 0.5)`` square per image.

    Its centre is uniform over ``[0, h + 1 - cut_h % 2) x [0, w + 1 - cut_w % 2)``,
    as in the reference code; the square is clipped at the borders.
    """
    x = ops.convert_to_tensor(x)
    n, (h, w) = ops.shape(x)[0], x.shape[1:3]
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    rows = _band(h, ch, _draw_int(uniform, n, h + 1 - ch % 2))
    cols = _band(w, cw, _draw_int(uniform, n, w + 1 - cw % 2))
    hole = ops.logical_and(rows[:, :, None], cols[:, None, :])
    return x * ops.cast(ops.logical_not(hole), x.dtype)[..., None]


_AUGMENTATIONS = {"color": color, "translation": translation, "cutout": cutout}
