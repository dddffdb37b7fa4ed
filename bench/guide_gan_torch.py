"""The torch guide GAN of ``tests/guide_models.py`` without its wasted backward pass.

Written the way the PyTorch guide writes a step (``zero_grad()``,
``loss.backward()``, ``optimizer.apply`` under ``torch.no_grad()``), the GAN's
discriminator loss also back-propagates through the generator that made the
fake images, although only the discriminator is updated (the TensorFlow guide's
tape never watches that generator call). This subclass makes those images under
``torch.no_grad()``: the same updates, without the generator's backward pass. It
is the fastest hand-written torch GAN step ``bench_backends.py`` compares with.
"""

from __future__ import annotations

import guide_models
import torch
from keras import ops


class NoGradFakeGAN(guide_models.GAN):
    """``guide_models.GAN`` (torch) whose discriminator step does not differentiate G."""

    def train_step(self, real_images):
        if isinstance(real_images, tuple):
            real_images = real_images[0]
        batch_size = real_images.shape[0]
        random_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
        with torch.no_grad():  # the one change: the D step needs no gradient through G
            generated_images = self.generator(random_latent_vectors)
        real_images = ops.convert_to_tensor(real_images)
        combined_images = torch.concat([generated_images, real_images], axis=0)
        device = combined_images.device
        labels = torch.concat([torch.ones((batch_size, 1), device=device),
                               torch.zeros((batch_size, 1), device=device)], axis=0)
        labels += 0.05 * self._draw("uniform", labels.shape)
        self.zero_grad()
        predictions = self.discriminator(combined_images)
        d_loss = self.loss_fn(labels, predictions)
        d_loss.backward()
        grads = [v.value.grad for v in self.discriminator.trainable_weights]
        with torch.no_grad():
            self.d_optimizer.apply(grads, self.discriminator.trainable_weights)
        random_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
        misleading_labels = torch.zeros((batch_size, 1), device=device)
        self.zero_grad()
        predictions = self.discriminator(self.generator(random_latent_vectors))
        g_loss = self.loss_fn(misleading_labels, predictions)
        g_loss.backward()
        grads = [v.value.grad for v in self.generator.trainable_weights]
        with torch.no_grad():
            self.g_optimizer.apply(grads, self.generator.trainable_weights)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(),
                "g_loss": self.g_loss_tracker.result()}
