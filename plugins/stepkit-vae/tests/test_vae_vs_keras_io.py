"""``vae`` against keras.io's Variational AutoEncoder ``train_step``, number for number.

The reference is keras.io's ``VAE(keras.Model)`` (examples/generative/vae):
one tape over encoder and decoder, binary cross-entropy summed over the pixels
plus the KL term, ``self.trainable_weights`` updated by one optimizer. Noise is
made equal by reading eps from one table in both: the step below overrides
only ``_noise``.
"""

import keras
import numpy as np
import pytest
import stepkit
import tensorflow as tf
from keras import ops
from sklearn.datasets import load_digits

from stepkit_vae import VAE

LATENT, BATCH, EPOCHS = 2, 16, 10
IMAGES = (load_digits().images[:48] / 16.0).astype("float32")  # 3 batches of (16, 8, 8)
EPS = tf.constant(np.random.default_rng(0).normal(size=(3 * EPOCHS + 1, BATCH, LATENT)),
                  dtype="float32")  # one row per training step (and one for evaluation)


class TableVAE(VAE):
    """``vae`` drawing eps from ``EPS`` (row ``ctx.iterations``)."""

    name = "vae-noise-table"

    def _noise(self, ctx, z_mean):
        return ops.take(EPS, ctx.iterations, axis=0)


class _Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TableVAE)


stepkit.register_plugin(_Plugin(), name="test-vae-noise-table")


class KerasIOVAE(keras.Model):
    """keras.io's VAE ``train_step`` (sampling with the table's eps); optionally + ``losses``."""

    def __init__(self, encoder, decoder, add_model_losses=False):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.add_model_losses = add_model_losses
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def train_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        epsilon = tf.gather(EPS, self.step_count)
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(data)
            z = z_mean + ops.exp(0.5 * z_log_var) * epsilon
            reconstruction = self.decoder(z)
            reconstruction_loss = ops.mean(ops.sum(
                keras.losses.binary_crossentropy(data[..., None], reconstruction[..., None]),
                axis=(1, 2)))
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            total_loss = reconstruction_loss + kl_loss
            if self.add_model_losses:  # what keras.Model.compute_loss adds
                total_loss = total_loss + ops.sum(self.losses)
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        self.step_count.assign_add(1)
        return {"loss": total_loss}


def networks(reg=None):
    x = keras.Input((8, 8))
    h = keras.layers.Dense(16, activation="relu", kernel_regularizer=reg)(
        keras.layers.Flatten()(x))
    encoder = keras.Model(x, [keras.layers.Dense(LATENT, kernel_regularizer=reg)(h),
                              keras.layers.Dense(LATENT, kernel_regularizer=reg)(h)])
    decoder = keras.Sequential([
        keras.Input((LATENT,)), keras.layers.Dense(16, activation="relu", kernel_regularizer=reg),
        keras.layers.Dense(64, activation="sigmoid", kernel_regularizer=reg),
        keras.layers.Reshape((8, 8))])
    return encoder, decoder


def twins(reg=None, add_model_losses=False):
    keras.utils.set_random_seed(0)
    (e, d), (e_ref, d_ref) = networks(reg), networks(reg)
    e_ref.set_weights(e.get_weights())
    d_ref.set_weights(d.get_weights())
    vae = stepkit.StepModel({"encoder": e, "decoder": d}, step=TableVAE.name,
                            config={"latent_dim": LATENT}, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    ref = KerasIOVAE(e_ref, d_ref, add_model_losses)
    ref.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae, ref


def gap(a, b):
    return max(float(np.abs(u - w).max()) for u, w in zip(a.get_weights(), b.get_weights(),
                                                          strict=True))


def fit_both(vae, ref):
    for model in (vae, ref):
        model.fit(IMAGES, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)


def test_equals_keras_io():
    vae, ref = twins()
    fit_both(vae, ref)
    assert gap(vae.encoder, ref.encoder) == 0.0
    assert gap(vae.decoder, ref.decoder) == 0.0


def test_both_networks_are_regularised_at_full_strength():
    l2 = keras.regularizers.L2(1e-2)
    vae, ref = twins(l2, add_model_losses=True)
    fit_both(vae, ref)
    assert gap(vae.encoder, ref.encoder) == 0.0
    assert gap(vae.decoder, ref.decoder) == 0.0
    # Evaluation reports the loss as training does: with both networks' penalties.
    logs = vae.evaluate(IMAGES, batch_size=BATCH, verbose=0, return_dict=True)
    penalty = sum(float(ops.sum(n.losses)) for n in (vae.encoder, vae.decoder))
    assert penalty > 0.01
    assert logs["loss"] - logs["reconstruction_loss"] - logs["kl_loss"] == pytest.approx(
        penalty, rel=1e-4)


def test_a_frozen_encoder_adds_no_penalty():
    vae, _ = twins(keras.regularizers.L2(1e-2))
    vae.encoder.trainable = False
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = vae.evaluate(IMAGES, batch_size=BATCH, verbose=0, return_dict=True)
    penalty = float(ops.sum(vae.decoder.losses))
    assert logs["loss"] - logs["reconstruction_loss"] - logs["kl_loss"] == pytest.approx(
        penalty, rel=1e-4)
