"""``gan``: the DCGAN step of Keras' "Customizing what happens in fit()" guide."""

from __future__ import annotations

import attrs
import keras
from attrs import validators as v
from keras import layers, ops

from stepkit.errors import DataStructureError
from stepkit.step import Batch, Step, StepContext


@attrs.frozen
class GANConfig:
    """Settings of the ``gan`` step.

    Attributes:
        latent_dim: size of the generator's input noise vector.
        label_noise: the discriminator's targets get ``label_noise * U[0, 1)``
            added (the guide's "important trick"); 0 turns it off.
    """

    latent_dim: int = attrs.field(default=128, validator=[v.instance_of(int), v.gt(0)])
    label_noise: float = attrs.field(default=0.05, converter=float, validator=v.ge(0.0))


def dcgan_generator(latent_dim: int, shape: tuple[int, int, int]) -> keras.Model:
    """The guide's generator, for ``shape`` = (height, width, channels) divisible by 4."""
    h, w, c = shape
    return keras.Sequential([
        keras.Input(shape=(latent_dim,)),
        layers.Dense((h // 4) * (w // 4) * 128),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Reshape((h // 4, w // 4, 128)),
        layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(c, (7, 7), padding="same", activation="sigmoid"),
    ], name="generator")


def dcgan_discriminator(shape: tuple[int, int, int]) -> keras.Model:
    """The guide's discriminator: one logit per image."""
    return keras.Sequential([
        keras.Input(shape=shape),
        layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(128, (3, 3), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.GlobalMaxPooling2D(),
        layers.Dense(1),
    ], name="discriminator")


class GAN(Step):
    """The guide's GAN: a discriminator on generated + real images, then the generator.

    The discriminator learns labels 1 (generated) and 0 (real) with
    ``label_noise * U[0, 1)`` added; the generator learns to make the
    discriminator say 0 ("real"). Data is ``images`` or ``(images, labels)``;
    labels are ignored. ``model(z)`` / ``predict(z)`` map latent vectors to images.

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

    def default_optimizers(self):
        return {"generator": keras.optimizers.Adam(3e-4),
                "discriminator": keras.optimizers.Adam(3e-4)}

    def default_loss(self):
        return keras.losses.BinaryCrossentropy(from_logits=True)

    def check_data(self, batch: Batch) -> None:
        ok = batch.x is not None and not isinstance(batch.x, list | tuple | dict)
        if not ok or len(batch.x.shape) < 2:
            raise DataStructureError(
                f"Step {self.name!r} trains on images: pass fit(images) or a dataset of images "
                f"or (images, labels). Received a batch with {batch.describe()}."
            )
        StepContext.fail_on_sample_weight(self, batch)

    def default_networks(self, batch: Batch, missing):
        shape = tuple(batch.x.shape[1:])
        if len(shape) != 3 or shape[0] % 4 or shape[1] % 4:
            raise DataStructureError(
                f"The gan step's default networks need images of shape (height, width, "
                f"channels) with height and width divisible by 4. Received images of shape "
                f"{shape}. Pass your own networks={{'generator': ..., 'discriminator': ...}}."
            )
        made = {"generator": dcgan_generator(self.config.latent_dim, shape),
                "discriminator": dcgan_discriminator(shape)}
        return {role: made[role] for role in missing}

    def build_inputs(self, batch: Batch):
        return {"generator": self.call_spec(batch), "discriminator": batch.x}

    def call_spec(self, batch: Batch):
        return keras.KerasTensor((None, self.config.latent_dim))

    def _losses(self, ctx: StepContext, real, training: bool):
        g, d = ctx.networks["generator"], ctx.networks["discriminator"]
        n = ctx.batch_size(real)
        z = ctx.normal((n, self.config.latent_dim))
        fake = ops.cast(g(z, training=training), real.dtype)
        combined = ops.concatenate([fake, real], axis=0)
        labels = ops.concatenate([ops.ones((n, 1)), ops.zeros((n, 1))], axis=0)
        if training and self.config.label_noise:
            labels = labels + self.config.label_noise * ctx.uniform(ops.shape(labels))

        def d_loss_fn():
            return ctx.loss(labels, d(combined, training=training))

        z2 = ctx.normal((n, self.config.latent_dim))
        misleading = ops.zeros((n, 1))

        def g_loss_fn():
            return ctx.loss(misleading, d(g(z2, training=training), training=training))

        return n, d_loss_fn, g_loss_fn

    def train_step(self, ctx: StepContext, data) -> None:
        real, _, _ = ctx.unpack(data)
        n, d_loss_fn, g_loss_fn = self._losses(ctx, real, training=True)
        d_loss = ctx.minimize("discriminator", d_loss_fn)
        g_loss = ctx.minimize("generator", g_loss_fn)
        ctx.track("d_loss", d_loss, n)
        ctx.track("g_loss", g_loss, n)

    def test_step(self, ctx: StepContext, data) -> None:
        real, _, _ = ctx.unpack(data)
        n, d_loss_fn, g_loss_fn = self._losses(ctx, real, training=False)
        ctx.track("d_loss", d_loss_fn() + ctx.regularization_loss("discriminator"), n)
        ctx.track("g_loss", g_loss_fn() + ctx.regularization_loss("generator"), n)
