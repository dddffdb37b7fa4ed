"""``wgan-gp``: Wasserstein GAN with gradient penalty, as a stepkit step.

Gulrajani et al., "Improved Training of Wasserstein GANs" (2017): the critic
takes ``n_critic`` updates for each generator update, and its loss carries a
penalty ``gp_weight * (||grad critic(x_hat)|| - 1)^2`` on random interpolations
``x_hat`` between real and generated samples.

Example::

    import stepkit

    gan = stepkit.StepModel(step="wgan-gp", config={"latent_dim": 32}, seed=0)
    gan.compile()                       # Adam(1e-4, beta_1=0.0, beta_2=0.9) per role
    gan.fit(images, batch_size=64, epochs=10)
    samples = gan.predict(keras.random.normal((16, 32)))
"""

from __future__ import annotations

import math

import attrs
import keras
import stepkit
from attrs import validators as v
from keras import layers, ops

__all__ = ["WGANGP", "WGANGPConfig", "critic_mlp", "generator_mlp"]
__version__ = "0.1.0"


# --8<-- [start:config]
@attrs.frozen
class WGANGPConfig:
    """Settings of the ``wgan-gp`` step.

    Attributes:
        latent_dim: size of the generator's input noise vector.
        n_critic: critic updates per generator update.
        gp_weight: weight lambda of the gradient penalty.

    Example::

        StepModel(step="wgan-gp", config={"n_critic": 5, "gp_weight": 10.0})
    """

    latent_dim: int = attrs.field(default=64, validator=[v.instance_of(int), v.gt(0)])
    n_critic: int = attrs.field(default=5, validator=[v.instance_of(int), v.gt(0)])
    gp_weight: float = attrs.field(default=10.0, converter=float, validator=v.ge(0.0))
# --8<-- [end:config]


def generator_mlp(latent_dim: int, shape: tuple[int, ...], units: int = 128) -> keras.Model:
    """A small dense generator from ``latent_dim`` noise to samples of ``shape`` in [0, 1]."""
    return keras.Sequential([
        keras.Input(shape=(latent_dim,)),
        layers.Dense(units),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Dense(units),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Dense(math.prod(shape), activation="sigmoid"),
        layers.Reshape(shape),
    ], name="generator")


def critic_mlp(shape: tuple[int, ...], units: int = 128) -> keras.Model:
    """A small dense critic: one unbounded score per sample (no batch norm, as WGAN-GP asks)."""
    return keras.Sequential([
        keras.Input(shape=shape),
        layers.Flatten(),
        layers.Dense(units),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Dense(units),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Dense(1),
    ], name="critic")


# --8<-- [start:step-class]
class WGANGP(stepkit.Step):
    """WGAN-GP: ``n_critic`` critic updates per generator update, with a gradient penalty.

    Roles ``generator`` and ``critic``, each with its own optimizer. Data is
    ``samples`` or ``(samples, labels)`` (labels are ignored). ``model(z)`` and
    ``predict(z)`` map latent vectors to samples.

    Example::

        gan = StepModel({"generator": g, "critic": c}, step="wgan-gp")
        gan.compile(optimizer={"generator": keras.optimizers.Adam(1e-4),
                               "critic": keras.optimizers.Adam(1e-4)})
        gan.fit(images, epochs=5)
    """

    name = "wgan-gp"
    description = "WGAN-GP: n_critic critic updates per generator update, gradient penalty."
    config_class = WGANGPConfig
    roles = ("generator", "critic")
    tracked = ("c_loss", "g_loss", "gp", "w_distance")
    data_kind = "images"
    generative = True
    # --8<-- [end:step-class]

    # --8<-- [start:defaults]
    def default_optimizers(self):
        return {role: keras.optimizers.Adam(1e-4, beta_1=0.0, beta_2=0.9)
                for role in self.roles}
    # --8<-- [end:defaults]

    # --8<-- [start:data]
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
        made = {"generator": generator_mlp(self.config.latent_dim, shape),
                "critic": critic_mlp(shape)}
        return {role: made[role] for role in missing}

    def call_spec(self, batch: stepkit.Batch):
        # model(z) / predict(z) / export() take latent vectors.
        return keras.KerasTensor((None, self.config.latent_dim))

    def build_inputs(self, batch: stepkit.Batch):
        return {"generator": self.call_spec(batch), "critic": batch.x}

    def call(self, ctx: stepkit.StepContext, inputs, training: bool = False):
        return ctx.networks["generator"](inputs, training=training)
    # --8<-- [end:data]

    # --8<-- [start:losses]
    def _critic_loss(self, ctx, real, fake, alpha, training):
        critic = ctx.networks["critic"]

        def score(x):
            return ops.cast(critic(x, training=training), "float32")

        real_score = ops.mean(score(real))
        fake_score = ops.mean(score(fake))
        w_distance = real_score - fake_score
        mixed = real + alpha * (fake - real)
        grads = ctx.input_gradients(score, mixed)
        axes = tuple(range(1, len(grads.shape)))
        norm = ops.sqrt(ops.sum(ops.square(grads), axis=axes) + 1e-12)
        gp = ops.mean(ops.square(norm - 1.0))
        # -fake_score is the generator's loss on these fakes: reported without another pass.
        return -w_distance + self.config.gp_weight * gp, gp, w_distance, -fake_score

    def _generator_loss(self, ctx, z, dtype, training):
        fake = ops.cast(ctx.networks["generator"](z, training=training), dtype)
        return -ops.mean(ops.cast(ctx.networks["critic"](fake, training=training), "float32"))
    # --8<-- [end:losses]

    # --8<-- [start:noise]
    def _noise(self, ctx, real):
        n = ctx.batch_size(real)
        alpha_shape = (n,) + (1,) * (len(real.shape) - 1)
        z = ctx.normal((n, self.config.latent_dim))
        alpha = ctx.uniform(alpha_shape, dtype=real.dtype)  # U[0, 1) per sample
        z_gen = ctx.normal((n, self.config.latent_dim))
        return n, z, alpha, z_gen
    # --8<-- [end:noise]

    # --8<-- [start:train-step]
    def train_step(self, ctx: stepkit.StepContext, data) -> None:
        real, _, _ = ctx.unpack(data)
        n, z, alpha, z_gen = self._noise(ctx, real)
        generator = ctx.networks["generator"]

        def critic_loss_fn():
            fake = ops.cast(generator(z, training=True), real.dtype)
            return self._critic_loss(ctx, real, fake, alpha, training=True)

        c_loss, gp, w_distance, fake_loss = ctx.minimize("critic", critic_loss_fn)

        k = self.config.n_critic
        update_generator = ops.equal(ops.mod(ctx.iterations, k), k - 1)

        def generator_update():
            loss = ctx.minimize("generator",
                                lambda: self._generator_loss(ctx, z_gen, real.dtype, True))
            return ops.cast(loss, "float32")

        def critic_fakes_loss():  # no generator pass of its own: nothing runs or updates
            return fake_loss + ctx.regularization_loss("generator")

        g_loss = ctx.cond(update_generator, generator_update, critic_fakes_loss)
        ctx.track("c_loss", c_loss, n)
        ctx.track("gp", gp, n)
        ctx.track("w_distance", w_distance, n)
        ctx.track("g_loss", g_loss, n)
    # --8<-- [end:train-step]

    # --8<-- [start:test-step]
    def test_step(self, ctx: stepkit.StepContext, data) -> None:
        real, _, _ = ctx.unpack(data)
        n, z, alpha, _ = self._noise(ctx, real)
        fake = ops.cast(ctx.networks["generator"](z, training=False), real.dtype)
        c_loss, gp, w_distance, g_loss = self._critic_loss(ctx, real, fake, alpha,
                                                            training=False)
        # As in training, and as Keras reports a loss: with each network's regularisation.
        ctx.track("c_loss", c_loss + ctx.regularization_loss("critic"), n)
        ctx.track("gp", gp, n)
        ctx.track("w_distance", w_distance, n)
        ctx.track("g_loss", g_loss + ctx.regularization_loss("generator"), n)
    # --8<-- [end:test-step]


# --8<-- [start:hook]
@stepkit.hookimpl
def stepkit_register_steps(register):
    register(WGANGP)
# --8<-- [end:hook]
