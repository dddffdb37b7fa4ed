"""The adversarial losses of the ``gan`` step, on the discriminator's logits.

``bce`` is the Keras guide's form (the step's default): the discriminator learns
the label 1 for generated and 0 for real images through the loss given to
``compile()`` (by default ``BinaryCrossentropy(from_logits=True)``), and the
generator learns the label 0. The other forms are the standard definitions, on
logits ``d`` where a high value means "real":

- ``hinge`` (Lim and Ye 2017; Miyato et al. 2018, SNGAN; Brock et al. 2019, BigGAN):
  ``L_D = E[relu(1 - d_real)] + E[relu(1 + d_fake)]``, ``L_G = -E[d_fake]``;
- ``least-squares`` (Mao et al. 2017, LSGAN, with the codes a=0, b=c=1):
  ``L_D = 1/2 E[(d_real - 1)^2] + 1/2 E[d_fake^2]``, ``L_G = 1/2 E[(d_fake - 1)^2]``;
- ``wasserstein`` (Arjovsky et al. 2017; Gulrajani et al. 2017):
  ``L_D = E[d_fake] - E[d_real]``, ``L_G = -E[d_fake]``.

Label noise (the guide's trick) and one-sided label smoothing (Salimans et al.
2016) change the targets of the forms that have targets (``bce``,
``least-squares``): in the guide's coding (1 = generated) a target is
``label + label_noise * U[0, 1)``, where a real image's label is
``label_smoothing`` instead of 0; ``least-squares`` aims its "real" score at
1 minus that target.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from stepkit.errors import ConfigError

KERAS_BETA_1 = 0.9  # keras.optimizers.Adam's default

LOSSES = ("bce", "hinge", "least-squares", "wasserstein")
WITH_TARGETS = ("bce", "least-squares")


def generated_labels(ctx: Any, n_fake: Any, n_real: Any, label_noise: float,
                     label_smoothing: float, training: bool) -> Any:
    """``(n_fake + n_real, 1)`` targets in the guide's coding: generated first, then real.

    Generated images have the label 1, real ones ``label_smoothing`` (in training;
    0 otherwise); ``label_noise * U[0, 1)`` is added in training.
    """
    real = ops.zeros((n_real, 1))
    if training and label_smoothing:
        real = real + label_smoothing
    labels = ops.concatenate([ops.ones((n_fake, 1)), real], axis=0)
    if training and label_noise:
        labels = labels + label_noise * ctx.uniform(ops.shape(labels))
    return labels


def _f32(x: Any) -> Any:
    return ops.cast(x, "float32")


def discriminator_loss(kind: str, ctx: Any, logits: Any, labels: Any, n_fake: Any) -> Any:
    """The discriminator's loss on ``logits`` of ``[generated; real]`` images.

    ``labels`` (from :func:`generated_labels`) are used by the forms with targets.
    """
    if kind == "bce":
        return ctx.loss(labels, logits)
    fake, real = _f32(logits[:n_fake]), _f32(logits[n_fake:])
    if kind == "hinge":
        return ops.mean(ops.relu(1.0 - real)) + ops.mean(ops.relu(1.0 + fake))
    if kind == "least-squares":
        target = 1.0 - _f32(labels)  # the "real" score each image should get
        return (0.5 * ops.mean(ops.square(real - target[n_fake:]))
                + 0.5 * ops.mean(ops.square(fake - target[:n_fake])))
    if kind == "wasserstein":
        return ops.mean(fake) - ops.mean(real)
    raise ValueError(f"Unknown GAN loss {kind!r}. Valid losses: {', '.join(LOSSES)}.")


def generator_loss(kind: str, ctx: Any, logits: Any) -> Any:
    """The generator's loss on the discriminator's ``logits`` of generated images."""
    if kind == "bce":
        return ctx.loss(ops.zeros((ops.shape(logits)[0], 1)), logits)
    fake = _f32(logits)
    if kind == "least-squares":
        return 0.5 * ops.mean(ops.square(fake - 1.0))
    if kind in ("hinge", "wasserstein"):
        return -ops.mean(fake)
    raise ValueError(f"Unknown GAN loss {kind!r}. Valid losses: {', '.join(LOSSES)}.")


def classification_loss(labels: Any, class_logits: Any) -> Any:
    """The auxiliary classifier's loss (AC-GAN, Odena et al. 2017): mean cross-entropy.

    ``labels``: integer classes, shape ``(batch,)``; ``class_logits``: ``(batch,
    num_classes)``. Computed in float32.
    """
    return ops.mean(keras.losses.sparse_categorical_crossentropy(
        labels, _f32(class_logits), from_logits=True))


def check_compile(step: str, config: Any, ctx: Any) -> None:
    """Refuse a compile() loss or optimizer the config ignores or cannot use (at build).

    Raises ConfigError: a loss given to compile() with ``loss`` other than 'bce'
    (it would be ignored); one that refuses the targets above 1 that
    ``label_noise`` makes (torch's probability-form BCE); an optimizer whose
    ``beta_1`` is not the config's ``adam_beta_1`` when that is not Keras' 0.9.
    """
    check_beta_1(step, config, ctx.optimizers)
    if config.loss != "bce":
        given = (ctx.model.get_compile_config() or {}).get("loss")
        if given is not None:
            raise ConfigError(
                f"Step {step!r} with loss={config.loss!r} computes its own loss, so "
                f"compile(loss=...) would be ignored. Received: compile(loss={given!r}). "
                "Remove loss= from compile(), or set loss='bce' to use it.")
    elif config.label_noise:
        try:  # targets reach 1 + label_noise: torch's probability-form BCE refuses them
            ctx.loss(ops.full((1, 1), 1.0 + config.label_noise), ops.full((1, 1), 0.5))
        except Exception as e:  # noqa: BLE001 - whatever the backend raises
            raise ConfigError(
                f"Step {step!r}: label_noise={config.label_noise} makes the "
                f"discriminator's targets reach {1.0 + config.label_noise}, and the loss "
                f"given to compile() refuses targets above 1 on the "
                f"{keras.backend.backend()} backend ({type(e).__name__}: {str(e)[:120]}). "
                "Fix: compile() without loss= (BinaryCrossentropy(from_logits=True), on a "
                "discriminator that ends in logits), or set label_noise=0."
            ) from e


def check_beta_1(step: str, config: Any, optimizers: Any) -> None:
    """``adam_beta_1`` other than Keras' 0.9 sets the default optimizers' beta_1: refuse
    optimizers given to compile() that would silently not have it."""
    if config.adam_beta_1 == KERAS_BETA_1:
        return
    for role, optimizer in optimizers.items():
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        beta_1 = getattr(inner, "beta_1", None)
        if beta_1 is None or abs(float(beta_1) - config.adam_beta_1) > 1e-12:
            got = f"beta_1={beta_1}" if beta_1 is not None else "no beta_1"
            raise ConfigError(
                f"Step {step!r} with adam_beta_1={config.adam_beta_1} (its default optimizers' "
                f"beta_1), but the {role!r} optimizer given to compile() is "
                f"{type(inner).__name__} with {got}. Give it beta_1={config.adam_beta_1}, "
                f"set adam_beta_1={KERAS_BETA_1} to keep your optimizer as it is, or leave "
                "optimizer= out of compile().")
