"""``vae``: a variational autoencoder, as a stepkit step.

The step of keras.io's "Variational AutoEncoder" example (Kingma and Welling
2014): the encoder gives ``(z_mean, z_log_var)``, a latent vector is sampled as
``z_mean + exp(z_log_var / 2) * eps`` with ``eps ~ N(0, 1)`` (``ctx.normal``),
and both networks learn ``reconstruction_loss + beta * kl_loss`` with ONE
optimizer (role ``vae``).

Example::

    import stepkit

    vae = stepkit.StepModel(step="vae", config={"latent_dim": 2}, seed=0)
    vae.compile()                          # Adam(1e-3) on encoder + decoder
    vae.fit(images, batch_size=64, epochs=10)
    images = vae.predict(keras.random.normal((16, 2)))   # decodes latent vectors
"""

from __future__ import annotations

import math

import attrs
import keras
import stepkit
from attrs import validators as v
from keras import layers, ops

__all__ = ["VAE", "VAEConfig", "dense_decoder", "dense_encoder"]
__version__ = "0.1.0"

RECONSTRUCTIONS = ("bce", "mse")


def _check_reconstruction(_inst, attribute, value) -> None:
    if value not in RECONSTRUCTIONS:
        raise ValueError(
            f"'{attribute.name}' must be one of {RECONSTRUCTIONS} (binary cross-entropy or "
            f"squared error, summed over each sample's features). Received: {value!r}"
        )


@attrs.frozen
class VAEConfig:
    """Settings of the ``vae`` step.

    Attributes:
        latent_dim: size of the latent vector (used by the default networks).
        beta: weight of the KL term (1 is the plain VAE, >1 a beta-VAE).
        reconstruction: ``"bce"`` (data in [0, 1], the keras.io example) or
            ``"mse"``; either is summed over a sample's features, averaged over
            the batch.

    Example::

        StepModel(step="vae", config={"latent_dim": 8, "beta": 4.0})
    """

    latent_dim: int = attrs.field(default=2, validator=[v.instance_of(int), v.gt(0)])
    beta: float = attrs.field(default=1.0, converter=float, validator=v.ge(0.0))
    reconstruction: str = attrs.field(default="bce", validator=_check_reconstruction)


def dense_encoder(shape: tuple[int, ...], latent_dim: int, units: int = 128) -> keras.Model:
    """A dense encoder from samples of ``shape`` to ``[z_mean, z_log_var]``."""
    inputs = keras.Input(shape=shape)
    h = layers.Dense(units, activation="relu")(layers.Flatten()(inputs))
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def dense_decoder(latent_dim: int, shape: tuple[int, ...], units: int = 128) -> keras.Model:
    """A dense decoder from latent vectors to samples of ``shape`` in [0, 1]."""
    return keras.Sequential([
        keras.Input(shape=(latent_dim,)),
        layers.Dense(units, activation="relu"),
        layers.Dense(math.prod(shape), activation="sigmoid"),
        layers.Reshape(shape),
    ], name="decoder")


class VAE(stepkit.Step):
    """Variational autoencoder: roles ``encoder`` and ``decoder``, one optimizer ``vae``.

    The encoder maps a batch to ``[z_mean, z_log_var]``; the decoder maps latent
    vectors to samples. Data is ``samples`` or ``(samples, labels)`` (labels are
    ignored). ``model(z)`` / ``predict(z)`` DECODE latent vectors; to reconstruct
    inputs use ``model.decoder(model.encoder(x)[0])``.

    Example::

        vae = StepModel({"encoder": enc, "decoder": dec}, step="vae")
        vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        vae.fit(images, epochs=10)
    """

    name = "vae"
    description = "Variational autoencoder: reconstruction + beta * KL, one optimizer."
    config_class = VAEConfig
    roles = ("encoder", "decoder")
    optimizer_roles = ("vae",)
    tracked = ("loss", "reconstruction_loss", "kl_loss")
    data_kind = "images"
    generative = True

    def default_optimizers(self):
        return {"vae": keras.optimizers.Adam(1e-3)}

    def trainable_variables(self, ctx: stepkit.StepContext, role: str):
        return [*ctx.networks["encoder"].trainable_variables,
                *ctx.networks["decoder"].trainable_variables]

    def check_data(self, batch: stepkit.Batch) -> None:
        x = batch.x
        if x is None or isinstance(x, list | tuple | dict) or len(x.shape) < 2:
            raise stepkit.DataStructureError(
                f"Step {self.name!r} trains on one array of samples: pass fit(samples) or a "
                f"dataset of samples or (samples, labels). Received a batch with "
                f"{batch.describe()}."
            )
        stepkit.StepContext.fail_on_sample_weight(self, batch)

    def default_networks(self, batch: stepkit.Batch, missing):
        shape = tuple(batch.x.shape[1:])
        made = {"encoder": dense_encoder(shape, self.config.latent_dim),
                "decoder": dense_decoder(self.config.latent_dim, shape)}
        return {role: made[role] for role in missing}

    def call_spec(self, batch: stepkit.Batch):
        # model(z) / predict(z) / export() decode latent vectors.
        return keras.KerasTensor((None, self.config.latent_dim))

    def build_inputs(self, batch: stepkit.Batch):
        return {"encoder": batch.x, "decoder": self.call_spec(batch)}

    def regularization_losses(self, ctx: stepkit.StepContext, role: str):
        # The one optimizer role "vae" trains both networks: both networks' penalties, as a
        # keras.Model holding both would add them (a frozen network's weights have none).
        if not self.trainable_variables(ctx, role):
            return []
        return [*ctx.networks["encoder"].losses, *ctx.networks["decoder"].losses]

    def call(self, ctx: stepkit.StepContext, inputs, training: bool = False):
        return ctx.networks["decoder"](inputs, training=training)

    def _noise(self, ctx, z_mean):
        """eps ~ N(0, 1) of the reparameterisation, from the model's seeded generator."""
        return ctx.normal(ops.shape(z_mean))

    def _losses(self, ctx, x, training):
        z_mean, z_log_var = ctx.networks["encoder"](x, training=training)
        z_mean = ops.cast(z_mean, "float32")
        z_log_var = ops.cast(z_log_var, "float32")
        z = z_mean + ops.exp(0.5 * z_log_var) * self._noise(ctx, z_mean)
        recon = ops.cast(ctx.networks["decoder"](z, training=training), "float32")
        target = ops.cast(x, "float32")
        n = ctx.batch_size(x)
        target, recon = ops.reshape(target, (n, -1)), ops.reshape(recon, (n, -1))
        if self.config.reconstruction == "bce":
            per_feature = keras.losses.binary_crossentropy(
                target[..., None], recon[..., None])
        else:
            per_feature = ops.square(target - recon)
        reconstruction_loss = ops.mean(ops.sum(per_feature, axis=1))
        kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        kl_loss = ops.mean(ops.sum(kl, axis=1))
        loss = reconstruction_loss + self.config.beta * kl_loss
        return loss, reconstruction_loss, kl_loss

    def train_step(self, ctx: stepkit.StepContext, data) -> None:
        x, _, _ = ctx.unpack(data)
        losses = ctx.minimize("vae", lambda: self._losses(ctx, x, training=True))
        self._report(ctx, x, *losses)

    def test_step(self, ctx: stepkit.StepContext, data) -> None:
        x, _, _ = ctx.unpack(data)
        loss, reconstruction_loss, kl_loss = self._losses(ctx, x, training=False)
        loss = loss + ctx.regularization_loss("vae")  # as in training, as Keras reports
        self._report(ctx, x, loss, reconstruction_loss, kl_loss)

    @staticmethod
    def _report(ctx, x, loss, reconstruction_loss, kl_loss):
        n = ctx.batch_size(x)
        ctx.track("loss", loss, n)
        ctx.track("reconstruction_loss", reconstruction_loss, n)
        ctx.track("kl_loss", kl_loss, n)


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(VAE)
