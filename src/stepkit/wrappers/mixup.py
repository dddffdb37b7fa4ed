"""``mixup``: MixUp (Zhang, Cisse, Dauphin & Lopez-Paz 2018) for classification steps.

Per batch, ``lam ~ Beta(alpha, alpha)`` and a random permutation ``perm`` of
the batch; the step trains on ``x_mix = lam * x + (1 - lam) * x[perm]`` with
the loss ``lam * L(y, f(x_mix)) + (1 - lam) * L(y[perm], f(x_mix))``
(sample weights follow their samples). For cross-entropy this equals the
paper's mixed one-hot targets ``lam * y + (1 - lam) * y[perm]``, since the loss
is linear in the targets, so it works with sparse integer labels too.

``lam`` is drawn from the model's seeded generator (``ctx.normal`` and
``ctx.uniform``) as the ratio of two Gamma draws, each by Marsaglia & Tsang
(2000, "A simple method for generating gamma variables") over 16 candidates at
once (a draw fails with probability below 1e-20); the permutation is the
``argsort`` of uniform draws. Only these two ops are used, so the same draws
come out with and without XLA, on every backend, and on each replica its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import keras
from attrs import validators as v
from keras import ops

from stepkit.errors import DataStructureError, WrapperError, WrapperStackError
from stepkit.wrapper import Wrapper

__all__ = ["MixUp", "MixUpConfig", "beta_sample", "mixup_parameters"]

CANDIDATES = 16  # Marsaglia-Tsang accepts >= 95% of draws for shape >= 1


@attrs.frozen
class MixUpConfig:
    """Settings of the ``mixup`` wrapper.

    Attributes:
        alpha: ``lam ~ Beta(alpha, alpha)``, alpha > 0 (0.2 in Zhang et al. 2018 on
            ImageNet; larger values mix more strongly).
    """

    alpha: float = attrs.field(default=0.2, converter=float, validator=v.gt(0.0))


def _log_gamma(normal: Any, uniform: Any, boost: Any, shape: float) -> Any:
    """log of Gamma(shape) draws from ``CANDIDATES`` normal/uniform candidates (axis 0)."""
    a = shape + 1.0 if shape < 1.0 else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    t = 1.0 + c * normal
    vol = t * t * t
    positive = ops.greater(vol, 0.0)
    log_v = ops.log(ops.where(positive, vol, 1.0))
    accept = ops.logical_and(
        positive, ops.less(ops.log(uniform), 0.5 * normal * normal + d - d * vol + d * log_v))
    first = ops.expand_dims(ops.argmax(ops.cast(accept, "int32"), axis=0), 0)
    log_g = math.log(d) + ops.squeeze(ops.take_along_axis(log_v, first, axis=0), 0)
    if shape < 1.0:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        log_g = log_g + ops.log(1.0 - boost) / shape
    return log_g


def beta_sample(normal: Callable[..., Any], uniform: Callable[..., Any], shape: Sequence[int],
                alpha: float, beta: float) -> Any:
    """Float32 draws of Beta(alpha, beta) of ``shape``, from normal and uniform draws.

    ``Beta(a, b) = X / (X + Y)`` with ``X ~ Gamma(a)``, ``Y ~ Gamma(b)``, computed
    from their logarithms so that small ``a``, ``b`` neither underflow nor divide
    0 by 0.

    Args:
        normal: ``shape -> standard normal draws`` (``ctx.normal``).
        uniform: ``shape -> U[0, 1) draws`` (``ctx.uniform``).
        shape: the draws' shape.
        alpha, beta: the distribution's parameters, > 0.
    """
    shape = tuple(shape)
    z = normal((2, CANDIDATES, *shape))
    u = uniform((2, CANDIDATES, *shape))
    boost = uniform((2, *shape))
    log_x = _log_gamma(z[0], u[0], boost[0], alpha)
    log_y = _log_gamma(z[1], u[1], boost[1], beta)
    return ops.sigmoid(log_x - log_y)


def mixup_parameters(normal: Callable[..., Any], uniform: Callable[..., Any], batch_size: Any,
                     alpha: float) -> tuple[Any, Any]:
    """MixUp's ``(lam, perm)`` for one batch: a float32 scalar and an int permutation.

    Draws, in this order: ``lam`` with :func:`beta_sample` (one normal, two
    uniform draws), then ``perm = argsort(uniform((batch_size,)))``.
    """
    lam = beta_sample(normal, uniform, (), alpha, alpha)
    perm = ops.argsort(uniform((batch_size,)))
    return lam, perm


def mix(t: Any, lam: Any, perm: Any) -> Any:
    """``lam * t + (1 - lam) * t[perm]`` along the batch axis, in ``t``'s dtype."""
    lam = ops.cast(lam, t.dtype)
    return lam * t + (1 - lam) * ops.take(t, perm, axis=0)


class MixUp(Wrapper):
    """MixUp of inputs and of the compiled loss for a step with inputs and labels.

    It mixes what the step trains on and the loss it computes with
    ``ctx.compute_loss`` (the loss given to ``compile()``), so it wraps steps
    whose ``loss_kind`` is ``"keras"`` (``supervised``). ``evaluate`` and
    ``predict`` are unchanged. The training metrics compare the predictions on
    mixed inputs with the labels of the first images. Under
    ``MirroredStrategy`` each replica draws its own ``lam`` and permutation of
    its part of the batch.

    Example::

        model = StepModel(net, step="supervised", wrappers=[{"name": "mixup", "alpha": 0.2}])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    Raises:
        WrapperError: the step's loss is not the compiled loss.
        WrapperStackError: ``mixup`` is stacked outside ``adversarial``.
        DataStructureError: the batch has no labels, several outputs, or inputs
            that are not float tensors.
    """

    name = "mixup"
    description = "MixUp (Zhang et al. 2018): train on convex mixes of pairs of examples."
    config_class = MixUpConfig
    per_role = False

    def __init__(self, config: Any = None, roles: Any = None) -> None:
        super().__init__(config, roles)
        self._pending: tuple[Any, Any] | None = None

    def check_step(self, step: Any) -> None:
        if step.loss_kind != "keras" or step.generative:
            raise WrapperError(
                f"Wrapper 'mixup' cannot wrap step {step.name!r}: it mixes the loss given to "
                f"compile() (steps with loss_kind 'keras'), and {step.name!r} has loss_kind "
                f"{step.loss_kind!r}{' and generates data' if step.generative else ''}. Use "
                "step 'supervised' with compile(loss=...).")

    def check_stack(self, stack: Sequence[Wrapper]) -> None:
        names = [w.name for w in stack]
        if "adversarial" in names and names.index("adversarial") > names.index(self.name):
            raise WrapperStackError(
                f"Wrappers 'mixup' and 'adversarial' in the order {names}: with 'mixup' outside, "
                "the attack would perturb mixed inputs against the mixed loss, around points "
                "that are no data. Put 'adversarial' first (['adversarial', 'mixup']): the "
                "attack on the clean batch, then MixUp of the adversarial examples.")

    def check_data(self, batch: Any) -> None:
        problem = None
        if batch.y is None:
            problem = "needs labels: pass fit(x, y) or a dataset of (x, y[, sample_weight])"
        elif keras.tree.is_nested(batch.y):
            problem = ("supports one output: Keras' per-output loss trackers would record "
                       "each half of the mixed loss")
        elif not all(keras.backend.standardize_dtype(t.dtype).startswith(("float", "bfloat"))
                     for t in keras.tree.flatten(batch.x)):
            problem = "mixes float inputs; x has another dtype"
        if problem:
            raise DataStructureError(
                f"Wrapper 'mixup' {problem}. Received a batch with {batch.describe()}.")

    def draw(self, ctx: Any, batch_size: Any) -> tuple[Any, Any]:
        """``(lam, perm)`` for one batch from the model's generator (:func:`mixup_parameters`)."""
        return mixup_parameters(ctx.normal, ctx.uniform, batch_size, self.config.alpha)

    def train_step(self, ctx: Any, data: Any, inner: Callable[[Any], None]) -> None:
        x, y, sample_weight = ctx.unpack(data)
        lam, perm = self.draw(ctx, ctx.batch_size(x))
        mixed = keras.tree.map_structure(lambda t: mix(t, lam, perm), x)
        self._pending = (lam, perm)
        try:
            inner(keras.utils.pack_x_y_sample_weight(mixed, y, sample_weight))
        finally:
            self._pending = None

    def compute_loss(self, ctx: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any,
                     inner: Callable[..., Any]) -> Any:
        if self._pending is None:  # evaluation, or an attack outside this wrapper
            return inner(x, y, y_pred, sample_weight)
        lam, perm = self._pending
        swapped = None if sample_weight is None else ops.take(sample_weight, perm, axis=0)
        first = inner(x, y, y_pred, sample_weight)
        second = inner(x, ops.take(y, perm, axis=0), y_pred, swapped)
        lam = ops.cast(lam, first.dtype)
        return lam * first + (1 - lam) * second
