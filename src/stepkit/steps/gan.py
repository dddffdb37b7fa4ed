"""``gan``: the DCGAN step of Keras' "Customizing what happens in fit()" guide, and its family.

The defaults are the guide's GAN, number for number. The config composes the
usual parts (see :class:`GANConfig`): the loss (:mod:`~stepkit.steps.gan_losses`),
R1/R2/gradient penalties, lazy or not (:mod:`~stepkit.steps.gan_penalties`),
several discriminator updates per step, label noise and smoothing, DiffAugment
(:mod:`~stepkit.steps.gan_augment`), an EMA of the generator
(:mod:`~stepkit.steps.gan_ema`) and class conditioning; presets name good
combinations (:mod:`~stepkit.steps.gan_presets`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from stepkit.errors import DataStructureError
from stepkit.step import Batch, Step, StepContext
from stepkit.steps.gan_augment import diff_augment
from stepkit.steps.gan_config import GANConfig
from stepkit.steps.gan_ema import WeightAverage
from stepkit.steps.gan_heads import add_head_losses, rotate, split_output, turns_for
from stepkit.steps.gan_losses import (
    WITH_TARGETS,
    check_beta_1,
    check_compile,
    discriminator_loss,
    generated_labels,
    generator_loss,
)
from stepkit.steps.gan_networks import dcgan_discriminator, dcgan_generator, default_networks
from stepkit.steps.gan_penalties import Penalties
from stepkit.steps.gan_presets import PRESETS

__all__ = ["GAN", "GANConfig", "dcgan_discriminator", "dcgan_generator"]


class GAN(Step):
    """The guide's GAN: a discriminator on generated + real images, then the generator.

    By default the discriminator learns labels 1 (generated) and 0 (real) with
    ``label_noise * U[0, 1)`` added, through the loss given to ``compile()``; the
    generator learns to make it say 0 ("real"). Data is ``images`` or
    ``(images, labels)``; labels are used only with ``num_classes``.
    ``model(z)`` / ``predict(z)`` map latent vectors to images (with
    ``num_classes``: ``{"z": z, "label": labels}``; with ``ema_decay``: through
    the generator's averaged weights). ``config={"preset": "recommended"}`` is
    the configuration to start from (``stepkit info gan`` lists the presets).

    Example::

        gan = StepModel(step="gan")          # default networks, sized from the data
        gan.compile()                        # Adam(3e-4) for both, BCE from logits
        gan.fit(images, epochs=5)
        samples = gan.predict(keras.random.normal((16, 128)))
    """

    name = "gan"
    description = "DCGAN of the Keras guide: discriminator on fake+real, then generator."
    config_class = GANConfig
    roles = ("generator", "discriminator")
    tracked = ("d_loss", "g_loss")
    loss_kind = "step"
    data_kind = "images"
    generative = True
    # 16: twice the updates per epoch of 32 on the small default data; clearer digits.
    default_batch_size = 16
    presets = PRESETS

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        c = self.config
        self.penalties = Penalties(c.r1_gamma, c.r2_gamma, c.gp_lambda, c.penalty_every)
        self.ema = WeightAverage(c.ema_decay) if c.ema_decay is not None else None

    def default_optimizers(self):
        beta_1 = self.config.adam_beta_1  # Keras' 0.9 unless the config says otherwise
        return {"generator": keras.optimizers.Adam(3e-4, beta_1=beta_1),
                "discriminator": keras.optimizers.Adam(3e-4, beta_1=beta_1)}

    def default_loss(self):
        return keras.losses.BinaryCrossentropy(from_logits=True)

    # ------------------------------------------------------------ data and networks

    def check_data(self, batch: Batch) -> None:
        ok = batch.x is not None and not isinstance(batch.x, list | tuple | dict)
        if not ok or len(batch.x.shape) < 2:
            raise DataStructureError(
                f"Step {self.name!r} trains on images: pass fit(images) or a dataset of images "
                f"or (images, labels). Received a batch with {batch.describe()}."
            )
        StepContext.fail_on_sample_weight(self, batch)
        y = batch.y
        if self.config.num_classes and (y is None or isinstance(y, list | tuple | dict)
                                        or "int" not in str(y.dtype)):
            raise DataStructureError(
                f"Step {self.name!r} with num_classes={self.config.num_classes} trains on "
                "(images, integer labels in [0, num_classes)): pass fit(images, labels). "
                f"Received a batch with {batch.describe()} "
                f"(labels of dtype {getattr(y, 'dtype', None)})."
            )
        if self.config.rotation_weight and (len(batch.x.shape) != 4
                                            or batch.x.shape[1] != batch.x.shape[2]):
            raise DataStructureError(
                f"Step {self.name!r} with rotation_weight={self.config.rotation_weight} "
                "rotates images by quarter turns, so it needs square, channels-last images "
                f"(batch, side, side, channels). Received images of shape "
                f"{tuple(batch.x.shape)}. Crop or pad them square, or set rotation_weight=0.")
        if self.config.augment and keras.config.image_data_format() == "channels_first":
            raise DataStructureError(
                "The gan step's DiffAugment ('augment') takes channels-last images; Keras' "
                "image_data_format is 'channels_first'. Set it to 'channels_last', or set "
                "augment=''.")

    def default_networks(self, batch: Batch, missing):
        shape = tuple(batch.x.shape[1:])
        if len(shape) != 3 or shape[0] % 4 or shape[1] % 4:
            raise DataStructureError(
                f"The gan step's default networks need images of shape (height, width, "
                f"channels) with height and width divisible by 4. Received images of shape "
                f"{shape}. Pass your own networks={{'generator': ..., 'discriminator': ...}}."
            )
        c = self.config
        made = default_networks(c.loss, c.latent_dim, shape, c.num_classes,
                                classifier=bool(c.classifier_weight),
                                rotation=bool(c.rotation_weight))
        return {role: made[role] for role in missing}

    def _label_spec(self) -> Any:
        return keras.KerasTensor((None,), dtype="int32")

    def build_inputs(self, batch: Batch):
        images = batch.x
        if self.config.num_classes:
            images = {"image": batch.x, "label": self._label_spec()}
        return {"generator": self.call_spec(batch), "discriminator": images}

    def call_spec(self, batch: Batch):
        z = keras.KerasTensor((None, self.config.latent_dim))
        return {"z": z, "label": self._label_spec()} if self.config.num_classes else z

    def sample_inputs(self, n: int, seed: int) -> Any:
        classes = self.config.num_classes
        if not classes:
            return super().sample_inputs(n, seed)
        per_class = max(1, n // classes)  # one class per grid row
        z = np.random.default_rng(seed).standard_normal((per_class * classes,
                                                         self.config.latent_dim))
        labels = np.repeat(np.arange(classes, dtype="int32"), per_class)
        return {"z": z.astype("float32"), "label": labels}

    def sample_grid_columns(self, n: int) -> int | None:
        classes = self.config.num_classes
        return max(1, n // classes) if classes else None

    def build_state(self, ctx: StepContext) -> None:
        if self.ema is not None:
            self.ema.build(ctx, ctx.networks["generator"], "generator_ema")

    def call(self, ctx: StepContext, inputs: Any, training: bool = False) -> Any:
        if self.config.num_classes:
            if isinstance(inputs, list | tuple):
                inputs = dict(zip(("z", "label"), inputs, strict=True))
            inputs = {"z": inputs["z"], "label": self._labels(inputs["label"])}
        generator = ctx.networks["generator"]
        if self.ema is not None and not training:
            return self.ema.call(generator, inputs)
        return generator(inputs, training=training)

    # ------------------------------------------------------------ pieces of a step

    @staticmethod
    def _labels(y: Any) -> Any:
        return ops.reshape(ops.cast(y, "int32"), (-1,))

    def _unpack(self, ctx: StepContext, data: Any) -> tuple[Any, Any]:
        real, y, _ = ctx.unpack(data)
        return real, (self._labels(y) if self.config.num_classes else None)

    def _generate(self, ctx: StepContext, z: Any, labels: Any, training: bool) -> Any:
        g = ctx.networks["generator"]
        return g(z if labels is None else {"z": z, "label": labels}, training=training)

    def _discriminate(self, ctx: StepContext, x: Any, labels: Any,
                      training: bool = True) -> tuple[Any, dict[str, Any]]:
        """images -> (logits, {head: logits}), after DiffAugment in training (gan_heads)."""
        if training and self.config.augment:
            x = diff_augment(x, self.config.augment, ctx.uniform)
        out = ctx.networks["discriminator"](
            x if labels is None else {"image": x, "label": labels}, training=training)
        return split_output(self.name, self.config, out)

    def _critic(self, ctx: StepContext, labels: Any, training: bool = True):
        """images -> the discriminator's logits (after DiffAugment in training)."""
        return lambda x: self._discriminate(ctx, x, labels, training)[0]

    def _discriminate_with_turns(self, ctx: StepContext, images: list, labels: Any,
                                 turns: Any, training: bool) -> tuple[Any, dict[str, Any]]:
        """One discriminator pass on ``images`` (batches of ``n``, concatenated) and, with
        a rotation head, the last of them rotated by ``turns`` after them; returns the
        logits of ``images`` alone and the heads' logits of every row."""
        n, count = ctx.batch_size(images[0]), len(images)
        if self.config.rotation_weight:
            images = [*images, rotate(images[-1], turns)]
        both = None if labels is None else ops.concatenate([labels] * len(images), axis=0)
        logits, heads = self._discriminate(ctx, ops.concatenate(images, axis=0), both,
                                           training)
        return (logits[:count * n] if self.config.rotation_weight else logits), heads

    def _d_forward(self, ctx: StepContext, fake: Any, real: Any, labels: Any, turns: Any,
                   targets: Any, training: bool = True) -> Any:
        """The discriminator's loss on ``fake`` and ``real``, plus its heads' losses.

        One forward pass on ``[fake, real]`` (and ``real`` rotated by ``turns`` with
        a rotation head): the classifier and the rotation task learn from real
        images only.
        """
        n = ctx.batch_size(real)
        logits, heads = self._discriminate_with_turns(ctx, [fake, real], labels, turns,
                                                      training)
        loss = discriminator_loss(self.config.loss, ctx, logits, targets, n)
        return add_head_losses(self.config, loss, heads, labels, turns, slice(n, 2 * n), 2 * n)

    def _g_forward(self, ctx: StepContext, made: Any, labels: Any, turns: Any,
                   training: bool = True) -> Any:
        """The generator's loss on its images ``made``, plus its heads' losses."""
        n = ctx.batch_size(made)
        logits, heads = self._discriminate_with_turns(ctx, [made], labels, turns, training)
        loss = generator_loss(self.config.loss, ctx, logits)
        return add_head_losses(self.config, loss, heads, labels, turns, slice(0, n), n)

    def _slices(self, real: Any, labels: Any) -> list[tuple[Any, Any]]:
        """The (images, labels) of each discriminator update (see ``n_dis_batches``)."""
        k = self.config.n_dis
        if k == 1 or self.config.n_dis_batches == "same":
            return [(real, labels)] * k
        n = StepContext.batch_size(real)
        if isinstance(n, int):
            size = max(n // k, 1)
            starts = [min(i * size, n - size) for i in range(k)]
        else:  # a batch size known only when the step runs (TensorFlow graphs)
            size = ops.maximum(n // k, 1)
            starts = [ops.minimum(i * size, n - size) for i in range(k)]
        return [(real[s:s + size], None if labels is None else labels[s:s + size])
                for s in starts]

    def build(self, ctx: StepContext, batch: Batch) -> None:
        super().build(ctx, batch)
        if ctx.model.compiled:  # fit() and evaluate() build first, eagerly
            check_compile(self.name, self.config, ctx)

    def _train_discriminator(self, ctx: StepContext, real: Any, labels: Any) -> tuple:
        """One discriminator update on ``real``; returns (loss, batch size, generated)."""
        c, penalties = self.config, self.penalties
        n = ctx.batch_size(real)
        z = ctx.normal((n, c.latent_dim))
        fake = ops.cast(self._generate(ctx, z, labels, training=True), real.dtype)
        targets = (generated_labels(ctx, n, n, c.label_noise, c.label_smoothing, True)
                   if c.loss in WITH_TARGETS else None)
        eager = penalties.active and not penalties.lazy
        alpha = penalties.draw(ctx, real) if eager else None
        turns = turns_for(n) if c.rotation_weight else None
        critic = self._critic(ctx, labels)

        def loss_fn():
            loss = self._d_forward(ctx, fake, real, labels, turns, targets)
            if eager:
                loss = loss + ops.cast(penalties.total(ctx, critic, real, fake, alpha),
                                       loss.dtype)
            return loss

        return ctx.minimize("discriminator", loss_fn), n, fake

    def train_step(self, ctx: StepContext, data) -> None:
        check_beta_1(self.name, self.config, ctx.optimizers)  # compiled after building
        real, labels = self._unpack(ctx, data)
        slices = self._slices(real, labels)
        done = [self._train_discriminator(ctx, r, y) for r, y in slices]
        if self.penalties.lazy:  # on the last update's images
            (last_real, last_labels), fake = slices[-1], done[-1][2]
            self.penalties.lazy_update(ctx, self._critic(ctx, last_labels), last_real, fake)
        n = ctx.batch_size(real)
        z = ctx.normal((n, self.config.latent_dim))
        turns = turns_for(n) if self.config.rotation_weight else None

        def g_loss_fn():
            made = self._generate(ctx, z, labels, training=True)
            return self._g_forward(ctx, made, labels, turns)

        g_loss = ctx.minimize("generator", g_loss_fn)
        if self.ema is not None:
            self.ema.update(ctx.iterations)
        for d_loss, size, _ in done:
            ctx.track("d_loss", d_loss, size)
        ctx.track("g_loss", g_loss, n)

    def test_step(self, ctx: StepContext, data) -> None:
        c = self.config
        real, labels = self._unpack(ctx, data)
        n = ctx.batch_size(real)
        z = ctx.normal((n, c.latent_dim))
        fake = ops.cast(self._generate(ctx, z, labels, training=False), real.dtype)
        targets = generated_labels(ctx, n, n, c.label_noise, c.label_smoothing, False)
        turns = turns_for(n) if c.rotation_weight else None
        d_loss = self._d_forward(ctx, fake, real, labels, turns, targets, training=False)
        z2 = ctx.normal((n, c.latent_dim))
        made = self._generate(ctx, z2, labels, training=False)
        g_loss = self._g_forward(ctx, made, labels, turns, training=False)
        ctx.track("d_loss", d_loss + ctx.regularization_loss("discriminator"), n)
        ctx.track("g_loss", g_loss + ctx.regularization_loss("generator"), n)
