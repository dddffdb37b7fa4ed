"""``GANConfig``: the settings of the ``gan`` step, each validated where it is declared.

The defaults are the Keras guide's DCGAN (the step as it always was); every other
part is opt-in. Settings that only make sense together are checked together: a
loss without targets refuses label noise, the Wasserstein loss needs a penalty,
a lazy interval needs a penalty to apply.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from stepkit.steps.gan_augment import parse_policy
from stepkit.steps.gan_losses import LOSSES, WITH_TARGETS

N_DIS_BATCHES = ("split", "same")


def _check_loss(config: GANConfig, attribute: attrs.Attribute, loss: str) -> None:
    """the loss fits the other settings (targets, a penalty for 'wasserstein')"""
    if loss not in WITH_TARGETS and (config.label_noise or config.label_smoothing):
        raise ValueError(
            f"'loss' {loss!r} has no targets, so label_noise and label_smoothing must be 0 "
            f"(label_noise=0.05 is the default of the guide's 'bce' loss). Received: "
            f"label_noise={config.label_noise!r}, label_smoothing={config.label_smoothing!r}. "
            "Set label_noise=0 (and label_smoothing=0), or use a preset (`stepkit info gan`).")
    if loss == "wasserstein" and not (config.gp_lambda or config.r1_gamma):
        raise ValueError(
            "'loss' 'wasserstein' needs a penalty that keeps the critic Lipschitz: set "
            "gp_lambda (10 in Gulrajani et al. 2017) or r1_gamma. Received: "
            f"gp_lambda={config.gp_lambda!r}, r1_gamma={config.r1_gamma!r}.")


def _check_policy(config: GANConfig, attribute: attrs.Attribute, policy: str) -> None:
    """names from 'color', 'translation', 'cutout', comma-separated"""
    if not isinstance(policy, str):
        raise ValueError(f"'augment' must be a comma-separated string such as "
                         f"'translation,cutout'. Received: {policy!r}")
    parse_policy(policy)


def _check_penalty_every(config: GANConfig, attribute: attrs.Attribute, every: int) -> None:
    """an interval > 1 needs r1_gamma, r2_gamma or gp_lambda"""
    if every > 1 and not (config.r1_gamma or config.r2_gamma or config.gp_lambda):
        raise ValueError(
            f"'penalty_every' is {every}, but no penalty is on (r1_gamma, r2_gamma and "
            "gp_lambda are 0): set one of them, or leave penalty_every at 1.")


def _check_classifier(config: GANConfig, attribute: attrs.Attribute, weight: float) -> None:
    """an auxiliary classifier needs classes"""
    if weight and not config.num_classes:
        raise ValueError(
            f"'classifier_weight' is {weight}, but num_classes is not set: the auxiliary "
            "classifier (AC-GAN) predicts class labels. Set num_classes (and train on "
            "(images, labels)), or leave classifier_weight at 0.")


def _weight(default: float = 0.0) -> float:
    return attrs.field(default=default, converter=float, validator=v.ge(0.0))


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)


@attrs.frozen
class GANConfig:
    """Settings of the ``gan`` step.

    Attributes:
        latent_dim: size of the generator's input noise vector.
        label_noise: the discriminator's targets get ``label_noise * U[0, 1)``
            added (the guide's "important trick"); 0 turns it off.
        loss: the adversarial loss: 'bce' (the guide's, through compile()'s loss),
            'hinge', 'least-squares' or 'wasserstein' (needs gp_lambda or r1_gamma).
        label_smoothing: one-sided label smoothing: real images' targets move this
            far towards "generated" (Salimans et al. 2016); 'bce' and 'least-squares'.
        n_dis: discriminator updates per generator update.
        n_dis_batches: what each of the n_dis updates sees: 'split' (its own
            1/n_dis slice of the batch) or 'same' (the whole batch each time).
        r1_gamma: weight gamma of the R1 penalty gamma/2 E||grad D(real)||^2 (0: off).
        r2_gamma: weight gamma of the R2 penalty gamma/2 E||grad D(fake)||^2 (0: off).
        gp_lambda: weight lambda of the WGAN-GP gradient penalty (0: off).
        penalty_every: lazy regularisation: the penalties get an update of their
            own every penalty_every steps, weights times penalty_every (StyleGAN2);
            1: added to every discriminator update.
        augment: DiffAugment policy applied to real and generated images before
            the discriminator: comma-separated 'color', 'translation', 'cutout'.
        ema_decay: decay of an exponential moving average of the generator's
            weights, used by predict() and sample grids (None: off); at step t the
            decay is min(ema_decay, (1 + t) / (10 + t)), as in TensorFlow's EMA.
        num_classes: train on (images, integer labels) with class-conditional
            networks; predict() takes {'z': latent vectors, 'label': labels}.
        classifier_weight: weight of an auxiliary classifier's loss (AC-GAN, Odena
            et al. 2017; needs num_classes; 0: off): the discriminator also
            predicts the class of real images (cross-entropy times this weight),
            and the generator is trained to make its images classified as the
            class asked for. The discriminator then returns {'logit': (batch, 1),
            'classes': (batch, num_classes)}.
        rotation_weight: weight of the self-supervised rotation task (SS-GAN, Chen
            et al. 2019; square images; 0: off): the discriminator also predicts by
            how many quarter turns a real image was rotated (image i of a batch
            turns i mod 4 times; cross-entropy times this weight), and the
            generator is trained to make images whose rotation it recognises. The
            discriminator then returns {'logit': (batch, 1), 'rotation': (batch,
            4)} (and 'classes' with classifier_weight). The paper weighs the
            generator's term 0.2 and the discriminator's 1.0; here one weight
            serves both.
        adam_beta_1: beta_1 of the default optimizers (Adam, learning rate 3e-4, for
            both roles); 0.9 is Keras' default and the guide's, 0.5 is DCGAN's
            (Radford et al. 2016). Set to anything but 0.9, optimizers given to
            compile() must have the same beta_1 (else ConfigError).
    """

    latent_dim: int = attrs.field(default=128, validator=[v.instance_of(int), v.gt(0)])
    label_noise: float = attrs.field(default=0.05, converter=float, validator=v.ge(0.0))
    loss: str = attrs.field(default="bce", validator=[v.in_(LOSSES), _check_loss])
    label_smoothing: float = attrs.field(default=0.0, converter=float,
                                         validator=[v.ge(0.0), v.lt(1.0)])
    n_dis: int = attrs.field(default=1, validator=[v.instance_of(int), v.ge(1)])
    n_dis_batches: str = attrs.field(default="split", validator=v.in_(N_DIS_BATCHES))
    r1_gamma: float = _weight()
    r2_gamma: float = _weight()
    gp_lambda: float = _weight()
    penalty_every: int = attrs.field(default=1, validator=[v.instance_of(int), v.ge(1),
                                                           _check_penalty_every])
    augment: str = attrs.field(default="", validator=_check_policy)
    ema_decay: float | None = attrs.field(default=None, converter=_optional_float,
                                          validator=v.optional([v.gt(0.0), v.lt(1.0)]))
    num_classes: int | None = attrs.field(
        default=None, validator=v.optional([v.instance_of(int), v.ge(2)]))
    classifier_weight: float = attrs.field(default=0.0, converter=float,
                                           validator=[v.ge(0.0), _check_classifier])
    rotation_weight: float = _weight()
    adam_beta_1: float = attrs.field(default=0.9, converter=float,
                                     validator=[v.ge(0.0), v.lt(1.0)])
