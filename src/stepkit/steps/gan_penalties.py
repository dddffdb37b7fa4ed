"""Gradient penalties on a GAN's discriminator: R1, R2 and the WGAN-GP penalty.

- R1 (Mescheder, Geiger and Nowozin 2018, "Which Training Methods for GANs do
  actually Converge?"): ``gamma / 2 * E[||grad_x D(x)||^2]`` over real images;
- R2 (same paper): the same over generated images;
- gradient penalty (Gulrajani et al. 2017, WGAN-GP):
  ``lambda * E[(||grad_x D(x_hat)|| - 1)^2]`` at ``x_hat = x + alpha (g - x)``,
  ``alpha ~ U[0, 1)`` per image, between a real ``x`` and a generated ``g``.

``D`` here is what the discriminator's update differentiates: the
discriminator after any augmentation (the gradient is taken with respect to the
images before it, as StyleGAN2-ADA does). Each is a plain per-replica mean; the
framework divides it by the number of replicas. Lazy regularisation (Karras et
al. 2020, StyleGAN2, appendix B) is in :class:`Penalties`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import attrs
from keras import ops

Critic = Callable[[Any], Any]  # images -> logits


def squared_gradient_norms(ctx: Any, critic: Critic, x: Any) -> Any:
    """``||grad_x sum(critic(x))||^2`` per image, shape ``(batch,)``, float32, differentiable."""
    grads = ops.cast(ctx.input_gradients(lambda t: ops.cast(critic(t), "float32"), x),
                     "float32")
    return ops.sum(ops.square(grads), axis=tuple(range(1, len(grads.shape))))


def r1(ctx: Any, critic: Critic, real: Any, gamma: float) -> Any:
    """``gamma / 2 * E[||grad D(real)||^2]`` (Mescheder et al. 2018)."""
    return 0.5 * gamma * ops.mean(squared_gradient_norms(ctx, critic, real))


def r2(ctx: Any, critic: Critic, fake: Any, gamma: float) -> Any:
    """``gamma / 2 * E[||grad D(fake)||^2]`` (Mescheder et al. 2018)."""
    return 0.5 * gamma * ops.mean(squared_gradient_norms(ctx, critic, fake))


def gradient_penalty(ctx: Any, critic: Critic, real: Any, fake: Any, alpha: Any,
                     weight: float) -> Any:
    """``weight * E[(||grad D(x_hat)|| - 1)^2]``, ``x_hat = real + alpha (fake - real)``.

    ``alpha`` has shape ``(batch, 1, ..., 1)`` (Gulrajani et al. 2017).
    """
    mixed = real + alpha * (fake - real)
    norms = ops.sqrt(squared_gradient_norms(ctx, critic, mixed) + 1e-12)
    return weight * ops.mean(ops.square(norms - 1.0))


@attrs.frozen
class Penalties:
    """The active penalties of a config and their lazy interval.

    Attributes:
        r1_gamma: weight of R1 (0: off).
        r2_gamma: weight of R2 (0: off).
        gp_lambda: weight of the gradient penalty (0: off).
        every: apply them every ``every`` steps, each weight times ``every``, in
            an update of their own (lazy regularisation, StyleGAN2); 1: in every
            discriminator update, added to its loss.
    """

    r1_gamma: float = 0.0
    r2_gamma: float = 0.0
    gp_lambda: float = 0.0
    every: int = 1

    @property
    def active(self) -> bool:
        return bool(self.r1_gamma or self.r2_gamma or self.gp_lambda)

    @property
    def lazy(self) -> bool:
        return self.active and self.every > 1

    def draw(self, ctx: Any, real: Any) -> Any:
        """The interpolation weights ``alpha`` the gradient penalty needs (None if off)."""
        if not self.gp_lambda:
            return None
        shape = (ctx.batch_size(real),) + (1,) * (len(real.shape) - 1)
        return ctx.uniform(shape, dtype=real.dtype)

    def total(self, ctx: Any, critic: Critic, real: Any, fake: Any, alpha: Any,
              scale: float = 1.0) -> Any:
        """The sum of the active penalties, each weight times ``scale`` (float32 scalar)."""
        terms = []
        if self.r1_gamma:
            terms.append(r1(ctx, critic, real, self.r1_gamma * scale))
        if self.r2_gamma:
            terms.append(r2(ctx, critic, fake, self.r2_gamma * scale))
        if self.gp_lambda:
            terms.append(gradient_penalty(ctx, critic, real, fake, alpha,
                                          self.gp_lambda * scale))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def lazy_update(self, ctx: Any, critic: Critic, real: Any, fake: Any) -> None:
        """Every ``every`` steps (``ctx.iterations % every == 0``), one discriminator
        update on the penalties alone, each weight times ``every`` (StyleGAN2)."""
        def regularize():
            alpha = self.draw(ctx, real)
            with warnings.catch_warnings():
                # A gradient penalty does not depend on the last layer's bias: Keras skips
                # it with a warning ("Gradients do not exist"), which is expected here.
                warnings.filterwarnings("ignore", message="Gradients do not exist")
                loss = ctx.minimize(
                    "discriminator", lambda: self.total(ctx, critic, real, fake, alpha,
                                                        self.every), regularization=False)
            return ops.cast(loss, "float32")

        ctx.cond(ops.equal(ops.mod(ctx.iterations, self.every), 0), regularize,
                 lambda: ops.zeros((), "float32"))
