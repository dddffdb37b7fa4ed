"""``wgan-gp`` against a hand-written keras.io-style WGAN-GP, number for number.

The reference is keras.io's ``WGAN(keras.Model)`` (examples/generative/wgan_gp)
with stepkit's two deliberate corrections (interpolation weight alpha ~ U[0, 1)
as in Gulrajani et al. 2017, where keras.io draws it from N(0, 1); an epsilon
inside the gradient norm's square root) and with stepkit's schedule (one critic
update per step, the generator every ``n_critic``-th step). Noise is made equal
by reading it from one table in both: the step below overrides only ``_noise``.
The generator has batch normalisation, so its moving statistics say which
training-mode passes ran.
"""

import keras
import numpy as np
import pytest
import stepkit
import tensorflow as tf
from keras import ops
from sklearn.datasets import load_digits

from stepkit_wgan_gp import WGANGP

LATENT, BATCH, STEPS = 8, 16, 87
IMAGES = (load_digits().images[:48] / 16.0).astype("float32")  # 3 batches of (16, 8, 8)
RNG = np.random.default_rng(0)
NOISE = {k: tf.constant(v) for k, v in {  # one row per training step
    "z": RNG.normal(size=(STEPS, BATCH, LATENT)).astype("float32"),
    "alpha": RNG.uniform(size=(STEPS, BATCH, 1, 1)).astype("float32"),
    "z_gen": RNG.normal(size=(STEPS, BATCH, LATENT)).astype("float32"),
}.items()}


class TableWGANGP(WGANGP):
    """``wgan-gp`` drawing its noise from ``NOISE`` (row ``ctx.iterations``)."""

    name = "wgan-gp-noise-table"

    def _noise(self, ctx, real):
        row = ctx.iterations
        n = ctx.batch_size(real)
        z, alpha, z_gen = (ops.take(NOISE[k], row, axis=0) for k in ("z", "alpha", "z_gen"))
        return n, z, alpha, z_gen


class _Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TableWGANGP)


stepkit.register_plugin(_Plugin(), name="test-wgan-gp-noise-table")


class KerasIOWGAN(keras.Model):
    """keras.io's WGAN-GP ``train_step``, with the schedule and noise of the module docstring."""

    def __init__(self, critic, generator, n_critic, gp_weight=10.0):
        super().__init__()
        self.critic, self.generator = critic, generator
        self.n_critic, self.gp_weight = n_critic, gp_weight
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def compile(self, c_optimizer, g_optimizer):
        super().compile(jit_compile=False)
        self.c_optimizer, self.g_optimizer = c_optimizer, g_optimizer

    def gradient_penalty(self, real, fake, alpha):
        interpolated = real + alpha * (fake - real)
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            pred = self.critic(interpolated, training=True)
        grads = gp_tape.gradient(pred, [interpolated])[0]
        norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2]) + 1e-12)
        return tf.reduce_mean((norm - 1.0) ** 2)

    def train_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        z, alpha, z_gen = (tf.gather(NOISE[k], self.step_count) for k in ("z", "alpha", "z_gen"))
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.critic(real, training=True)
            fake_logits = self.critic(fake, training=True)
            c_cost = tf.reduce_mean(fake_logits) - tf.reduce_mean(real_logits)
            c_loss = c_cost + self.gp_weight * self.gradient_penalty(real, fake, alpha)
        grads = tape.gradient(c_loss, self.critic.trainable_variables)
        self.c_optimizer.apply_gradients(zip(grads, self.critic.trainable_variables,
                                             strict=True))

        def generator_step():
            with tf.GradientTape() as tape:
                g_loss = -tf.reduce_mean(self.critic(self.generator(z_gen, training=True),
                                                     training=True))
            grads = tape.gradient(g_loss, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables,
                                                 strict=True))
            return g_loss

        k = self.n_critic
        g_loss = tf.cond(self.step_count % k == k - 1, generator_step,
                         lambda: -tf.reduce_mean(fake_logits))
        self.step_count.assign_add(1)
        return {"c_loss": c_loss, "g_loss": g_loss}


def networks():
    generator = keras.Sequential([
        keras.Input((LATENT,)), keras.layers.Dense(32), keras.layers.BatchNormalization(),
        keras.layers.LeakyReLU(0.2), keras.layers.Dense(64, activation="sigmoid"),
        keras.layers.Reshape((8, 8))], name="generator")
    critic = keras.Sequential([
        keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(32),
        keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)], name="critic")
    return generator, critic


def twins(n_critic):
    keras.utils.set_random_seed(0)
    (g, c), (g_ref, c_ref) = networks(), networks()
    g_ref.set_weights(g.get_weights())
    c_ref.set_weights(c.get_weights())
    gan = stepkit.StepModel({"generator": g, "critic": c}, step=TableWGANGP.name,
                            config={"latent_dim": LATENT, "n_critic": n_critic}, seed=0)
    gan.compile(optimizer={r: keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9)
                           for r in ("generator", "critic")})
    ref = KerasIOWGAN(c_ref, g_ref, n_critic)
    ref.compile(keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9),
                keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9))
    return gan, ref


def moving_stats(generator):
    bn = next(layer for layer in generator.layers
              if isinstance(layer, keras.layers.BatchNormalization))
    return np.concatenate([bn.moving_mean.numpy(), bn.moving_variance.numpy()])


def gap(a, b):
    return max(float(np.abs(u - w).max()) for u, w in zip(a.get_weights(), b.get_weights(),
                                                          strict=True))


def test_one_critic_step_per_generator_step_equals_keras_io_after_87_updates():
    gan, ref = twins(n_critic=1)
    gan.fit(IMAGES, batch_size=BATCH, epochs=STEPS // 3, shuffle=False, verbose=0)
    ref.fit(IMAGES, batch_size=BATCH, epochs=STEPS // 3, shuffle=False, verbose=0)
    assert int(gan.optimizers["generator"].iterations) == STEPS
    assert int(ref.g_optimizer.iterations) == STEPS
    assert gap(gan.generator, ref.generator) == 0.0  # moving statistics included
    assert gap(gan.critic, ref.critic) == 0.0


@pytest.mark.parametrize("n_critic", [3])
def test_batch_norm_statistics_move_only_in_the_passes_that_train(n_critic):
    """Step by step: the moving statistics follow the reference's exactly.

    On a critic-only step the generator runs once in training mode (the critic's
    fakes, as on keras.io); on a generator step once more (its update). Reporting
    g_loss adds no pass: before, a third training-mode pass moved the statistics
    on every critic-only step.
    """
    gan, ref = twins(n_critic)
    gan.build_from_data(IMAGES[:BATCH])
    before = moving_stats(gan.generator)
    for step in range(2 * n_critic):
        batch = IMAGES[BATCH * (step % 3): BATCH * (step % 3 + 1)]
        gan.reset_metrics()  # so that the logs are this step's values
        logs = gan.train_on_batch(batch, return_dict=True)
        ref_logs = ref.train_on_batch(batch, return_dict=True)
        now = moving_stats(gan.generator)
        np.testing.assert_array_equal(now, moving_stats(ref.generator))
        assert gap(gan.critic, ref.critic) == 0.0 and gap(gan.generator, ref.generator) == 0.0
        assert not np.array_equal(now, before)  # the critic's fakes, every step
        before = now
        assert int(gan.optimizers["generator"].iterations) == (step + 1) // n_critic
        for key in ("g_loss", "c_loss"):
            assert logs[key] == pytest.approx(float(ref_logs[key]), rel=1e-6), (step, key)


class TrainingPasses(keras.layers.Layer):
    """Counts the calls in training mode (run eagerly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = 0

    def call(self, x, training=None):
        self.count += bool(training)
        return x


def test_g_loss_on_critic_steps_costs_no_generator_pass():
    """A critic-only step runs the generator once (the critic's fakes); a generator step twice."""
    counter = TrainingPasses()
    generator = keras.Sequential([keras.Input((LATENT,)), counter, keras.layers.Dense(64),
                                  keras.layers.Reshape((8, 8))])
    _, critic = networks()
    gan = stepkit.StepModel({"generator": generator, "critic": critic}, step="wgan-gp",
                            config={"latent_dim": LATENT, "n_critic": 2}, seed=0)
    gan.compile(run_eagerly=True)
    passes = []
    for _ in range(4):
        before = counter.count
        gan.train_on_batch(IMAGES[:BATCH])
        passes.append(counter.count - before)
    assert passes == [1, 2, 1, 2]
