"""SAM and ASAM written by hand as a ``keras.Model`` train step, in each backend's guide style.

The references the ``sam`` wrapper is compared with: keras-io's "Customizing
what happens in fit()" for TensorFlow (``tf.GradientTape``), JAX (a stateless
``train_step(state, data)``) and PyTorch (``loss.backward()``), with SAM's two
passes (Foret et al. 2021) written out: the gradient ``g`` at ``w``, then
``e = rho * g / (||g|| + 1e-12)`` (ASAM, Kwon et al. 2021:
``e = rho * T^2 g / (||T g|| + 1e-12)`` with ``T = |w| + eta``), then the
gradient at ``w + e`` applied to ``w``. The loss is the mean squared error; the
``loss`` reported is the first pass's.
"""

from __future__ import annotations

import keras

BACKEND = keras.backend.backend()


class _SAMBase(keras.Model):
    def __init__(self, network, rho=0.05, eta=None):
        super().__init__()
        self.network = network
        self.rho = rho
        self.eta = eta  # None: SAM; a float: ASAM
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]


if BACKEND == "tensorflow":
    import tensorflow as tf

    class SAMModel(_SAMBase):
        def _loss_and_grads(self, x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
            return loss, tape.gradient(loss, self.trainable_variables)

        def train_step(self, data):
            x, y = data
            variables = self.trainable_variables
            loss, grads = self._loss_and_grads(x, y)
            t = [1.0 if self.eta is None else tf.abs(w) + self.eta for w in variables]
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(ti * g))
                                     for ti, g in zip(t, grads, strict=True)]))
            saved = [tf.identity(w) for w in variables]
            for w, ti, g in zip(variables, t, grads, strict=True):
                w.assign_add(self.rho * ti * ti * g / (norm + 1e-12))
            _, sharp = self._loss_and_grads(x, y)
            for w, value in zip(variables, saved, strict=True):
                w.assign(value)
            self.optimizer.apply(sharp, variables)
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

elif BACKEND == "jax":
    import jax
    import jax.numpy as jnp

    class SAMModel(_SAMBase):
        def loss_and_updates(self, trainable, non_trainable, x, y):
            y_pred, non_trainable = self.stateless_call(trainable, non_trainable, x,
                                                        training=True)
            return jnp.mean(jnp.square(y_pred - y)), non_trainable

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_variables, metrics_variables = state
            x, y = data
            grad_fn = jax.value_and_grad(self.loss_and_updates, has_aux=True)
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            t = [1.0 if self.eta is None else jnp.abs(w) + self.eta for w in trainable]
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(ti * g))
                                for ti, g in zip(t, grads, strict=True)))
            perturbed = [w + self.rho * ti * ti * g / (norm + 1e-12)
                         for w, ti, g in zip(trainable, t, grads, strict=True)]
            (_, non_trainable), sharp = grad_fn(perturbed, non_trainable, x, y)
            trainable, optimizer_variables = self.optimizer.stateless_apply(
                optimizer_variables, sharp, trainable)
            metrics_variables = self.loss_tracker.stateless_update_state(metrics_variables, loss)
            logs = {"loss": self.loss_tracker.stateless_result(metrics_variables)}
            return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

elif BACKEND == "torch":
    import torch

    class SAMModel(_SAMBase):
        def _loss_and_grads(self, x, y, params):
            self.zero_grad()
            loss = torch.mean(torch.square(self(x, training=True) - y))
            loss.backward()
            return loss, [p.grad.clone() for p in params]

        def train_step(self, data):
            x, y = data
            variables = self.trainable_weights
            params = [w.value for w in variables]
            loss, grads = self._loss_and_grads(x, y, params)
            with torch.no_grad():
                t = [1.0 if self.eta is None else torch.abs(p) + self.eta for p in params]
                norm = torch.sqrt(sum(torch.sum(torch.square(ti * g))
                                      for ti, g in zip(t, grads, strict=True)))
                saved = [p.clone() for p in params]
                for p, ti, g in zip(params, t, grads, strict=True):
                    p.add_(self.rho * ti * ti * g / (norm + 1e-12))
            _, sharp = self._loss_and_grads(x, y, params)
            with torch.no_grad():
                for p, value in zip(params, saved, strict=True):
                    p.copy_(value)
                self.optimizer.apply(sharp, variables)
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}
