"""``adversarial``: adversarial training with FGSM or PGD examples, for steps with labels.

Each training batch ``(x, y)`` is replaced by adversarial examples within an
L-infinity ball of radius ``epsilon`` around ``x`` that increase the loss the
step trains with:

- FGSM (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing
  Adversarial Examples"): ``x + epsilon * sign(grad_x L)``, one step;
- PGD (Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning
  Models Resistant to Adversarial Attacks"): from a uniform random start in the
  ball, ``steps`` steps ``x <- P(x + step_size * sign(grad_x L))``, where ``P``
  projects onto the ball (and onto ``[clip_min, clip_max]``).

The attack evaluates the step's own ``call`` (the network) with
``training=False``: dropout is off, batch normalisation uses and keeps its
moving statistics, and neither the weights nor the metrics change. The model
then trains on the adversarial batch (Madry et al.'s min-max objective), or,
with ``train_on="both"``, on the clean and the adversarial batch together
(Goodfellow et al.'s mixed objective with alpha = 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import keras
from attrs import validators as v
from keras import ops

from stepkit import losses
from stepkit.errors import DataStructureError, WrapperError
from stepkit.wrapper import Wrapper

__all__ = ["Adversarial", "AdversarialConfig", "adversarial_examples"]

METHODS = ("fgsm", "pgd")
TRAIN_ON = ("adversarial", "both")


def _optional_float(value: Any) -> float | None:
    return None if value is None or value == "None" else float(value)


@attrs.frozen
class AdversarialConfig:
    """Settings of the ``adversarial`` wrapper (distances in the inputs' own units).

    Attributes:
        method: ``"pgd"`` (Madry et al. 2018) or ``"fgsm"`` (Goodfellow et al. 2015).
        epsilon: radius of the L-infinity ball, > 0 (default 8/255: Madry et al.'s
            CIFAR-10 setting for inputs in [0, 1]; they use 0.3 on MNIST).
        step_size: size of each signed-gradient step (None: ``epsilon / 4`` for PGD,
            Madry et al.'s CIFAR-10 ratio; ``epsilon`` for FGSM).
        steps: PGD's number of steps (None: 7, Madry et al.'s CIFAR-10 training
            attack); FGSM takes one.
        random_start: start from a uniform draw in the ball (None: True for PGD,
            False for FGSM; FGSM with it is Wong, Rice & Kolter 2020's "fast" variant).
        clip_min: the lowest valid input (None: unbounded); the data must lie above
            it. The digits of ``stepkit.data`` are in [0, 1].
        clip_max: the highest valid input (None: unbounded).
        train_on: ``"adversarial"`` (Madry et al.: only the adversarial batch) or
            ``"both"`` (the clean and the adversarial batch in one batch of twice
            the size: Goodfellow et al.'s objective with alpha = 0.5).
    """

    method: str = attrs.field(default="pgd", validator=v.in_(METHODS))
    epsilon: float = attrs.field(default=8 / 255, converter=float, validator=v.gt(0.0))
    step_size: float | None = attrs.field(default=None, converter=_optional_float,
                                          validator=v.optional(v.gt(0.0)))
    steps: int | None = attrs.field(default=None,
                                    validator=v.optional([v.instance_of(int), v.ge(1)]))
    random_start: bool | None = attrs.field(default=None,
                                            validator=v.optional(v.instance_of(bool)))
    clip_min: float | None = attrs.field(default=None, converter=_optional_float)
    clip_max: float | None = attrs.field(default=None, converter=_optional_float)
    train_on: str = attrs.field(default="adversarial", validator=v.in_(TRAIN_ON))

    def __attrs_post_init__(self) -> None:
        if self.method == "fgsm" and self.steps not in (None, 1):
            raise ValueError(f"'steps' must be None or 1 with method='fgsm' (one step); use "
                             f"method='pgd' for several: {self.steps!r}")
        if None not in (self.clip_min, self.clip_max) and self.clip_min >= self.clip_max:
            raise ValueError(f"'clip_min' must be below clip_max={self.clip_max!r}: "
                             f"{self.clip_min!r}")

    @property
    def attack_steps(self) -> int:
        if self.method == "fgsm":
            return 1
        return 7 if self.steps is None else self.steps

    @property
    def attack_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return self.epsilon if self.method == "fgsm" else self.epsilon / 4

    @property
    def attack_random_start(self) -> bool:
        return self.method == "pgd" if self.random_start is None else self.random_start


def adversarial_examples(x: Any, loss: Callable[[Any], Any], config: AdversarialConfig,
                         input_gradients: Callable[[Callable[[Any], Any], Any], Any],
                         uniform: Callable[..., Any] | None = None) -> Any:
    """FGSM or PGD examples for a batch ``x`` (the attack of :class:`Adversarial`).

    Args:
        x: a float tensor ``(batch, ...)`` in the inputs' units.
        loss: the scalar to increase, as a function of the perturbed batch.
        config: epsilon, step size, steps, random start and input range.
        input_gradients: ``(fn, x) -> d sum(fn(x)) / dx`` (``ctx.input_gradients``).
        uniform: ``(shape, minval=, maxval=) -> draws`` (``ctx.uniform``); needed
            for a random start.

    Returns:
        A tensor shaped like ``x`` with no gradient to ``x``: every element within
        ``epsilon`` of ``x`` and within ``[clip_min, clip_max]`` when they are set.
    """
    x0 = ops.stop_gradient(x)
    eps = ops.cast(config.epsilon, x0.dtype)
    low, high = x0 - eps, x0 + eps
    if config.clip_min is not None:
        low = ops.maximum(low, ops.cast(config.clip_min, x0.dtype))
    if config.clip_max is not None:
        high = ops.minimum(high, ops.cast(config.clip_max, x0.dtype))
    adv = x0
    if config.attack_random_start:
        noise = uniform(ops.shape(x0), minval=-config.epsilon, maxval=config.epsilon)
        adv = ops.clip(x0 + ops.cast(noise, x0.dtype), low, high)
    step = ops.cast(config.attack_step_size, x0.dtype)
    for _ in range(config.attack_steps):
        grad = input_gradients(loss, adv)
        adv = ops.stop_gradient(ops.clip(adv + step * ops.sign(grad), low, high))
    return adv


class Adversarial(Wrapper):
    """Adversarial training (FGSM or PGD) of a step that trains on inputs and labels.

    Wraps steps whose loss compares the network's output on ``x`` with ``y``:
    the compiled loss (``loss_kind == "keras"``: ``supervised``), the step's loss
    (``"step"``) or a loss in its config (``custom-loss``). The attack increases
    that loss without sample weights (each example's own loss; a positive weight
    does not change the sign of its gradient). ``evaluate`` stays on clean data;
    measure robust accuracy on attacked data (``bench/bench_robustness.py``).

    Cost: ``steps`` extra forward and backward passes per batch (one for FGSM),
    and twice the batch with ``train_on="both"``.

    Example::

        model = StepModel(net, step="supervised", wrappers=[
            {"name": "adversarial", "epsilon": 0.1, "steps": 10, "clip_min": 0, "clip_max": 1}])

    Raises:
        WrapperError: the step has no such loss or generates data (``gan``).
        DataStructureError: the data has no labels, or ``x`` is not one float tensor.
    """

    name = "adversarial"
    description = "Adversarial training on FGSM or PGD examples (Madry et al. 2018)."
    config_class = AdversarialConfig
    per_role = False

    def check_step(self, step: Any) -> None:
        why = None
        if step.generative:
            why = "it generates data and has no labelled inputs to perturb"
        elif step.loss_kind == "none" and not _config_loss(step):
            why = ("its loss is not one it exposes (loss_kind 'none' and no `loss` in its "
                   "config), so the attack cannot increase it")
        if why:
            raise WrapperError(
                f"Wrapper 'adversarial' cannot wrap step {step.name!r}: {why}. It perturbs a "
                "network's inputs against their labels: use a step that trains on (x, y), "
                "such as 'supervised' or 'custom-loss'.")

    def check_data(self, batch: Any) -> None:
        x = batch.x
        problem = None
        if batch.y is None:
            problem = "needs labels: pass fit(x, y) or a dataset of (x, y[, sample_weight])"
        elif keras.tree.is_nested(x) or x is None:
            problem = "perturbs one input tensor x; several inputs are not supported"
        elif not _is_float(x):
            problem = f"perturbs float inputs; x has dtype {x.dtype}"
        if problem:
            raise DataStructureError(
                f"Wrapper 'adversarial' {problem}. Received a batch with {batch.describe()}.")

    def train_step(self, ctx: Any, data: Any, inner: Callable[[Any], None]) -> None:
        x, y, sample_weight = ctx.unpack(data)
        adv = self.examples(ctx, x, y)
        if self.config.train_on == "both":
            def both(a: Any, b: Any) -> Any:
                return ops.concatenate([a, b], axis=0)

            adv = both(x, adv)
            y = keras.tree.map_structure(both, y, y)
            if sample_weight is not None:
                sample_weight = keras.tree.map_structure(both, sample_weight, sample_weight)
        inner(keras.utils.pack_x_y_sample_weight(adv, y, sample_weight))

    def examples(self, ctx: Any, x: Any, y: Any) -> Any:
        """The adversarial examples of ``(x, y)`` at the current weights (see the module)."""
        fn = attack_loss(ctx)

        def loss(inputs: Any) -> Any:
            return fn(inputs, y, ctx.step.call(ctx, inputs, training=False))

        saved = [(var, ops.copy(var.value)) for var in ctx.model.metrics_variables]
        adv = adversarial_examples(x, loss, self.config, ctx.input_gradients, ctx.uniform)
        for var, value in saved:  # Keras' per-output loss trackers record compute_loss
            var.assign(value)
        return adv


def _config_loss(step: Any) -> Any:
    identifier = getattr(step.config, "loss", None)
    return None if identifier is None else losses.get(identifier)


def _is_float(x: Any) -> bool:
    return keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat"))


def attack_loss(ctx: Any) -> Callable[[Any, Any, Any], Any]:
    """``(x, y, y_pred) -> loss`` the step trains with: compiled, its own, or its config's."""
    step = ctx.step
    if step.loss_kind == "keras":
        return lambda x, y, y_pred: ctx.compute_loss(x, y, y_pred, None, training=False)
    if step.loss_kind == "step":
        return lambda x, y, y_pred: ctx.loss(y, y_pred)
    fn = _config_loss(step)
    return lambda x, y, y_pred: fn(y, y_pred)
