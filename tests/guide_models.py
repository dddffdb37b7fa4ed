"""keras-io's "Customizing what happens in fit()" models, as each backend's guide writes them.

``custom_train_step_in_{tensorflow,jax,torch}.py``: a ``tf.GradientTape``; a stateless
``train_step(state, data)`` with ``jax.value_and_grad`` and ``optimizer.stateless_apply``;
``zero_grad()``, ``loss.backward()`` and ``optimizer.apply`` under ``torch.no_grad()``.
The references stepkit's steps are compared with (tests) and timed against (bench):

- ``supervised_model(network)``: the first example with sample weights (``compute_loss``
  and the compiled metrics); ``compile(optimizer=..., loss=..., metrics=...)``.
- ``custom_loss_model(network)``: "Going lower-level" (own ``loss_tracker``, ``mae_metric``,
  ``MeanSquaredError``); ``compile(optimizer=...)``.
- ``gan_model(generator, discriminator, latent_dim)``: the GAN (the JAX and torch ones
  write the TF guide's algorithm in their guide's style); ``compile(d_optimizer,
  g_optimizer, loss_fn)``. Its noise comes from ``keras.random`` and ``SeedGenerator(seed)``;
  ``noise="stepkit"`` turns the same seeds into numbers as stepkit's ``gan`` step does
  (``stepkit.backend.stateless_normal/uniform``; the same numbers on JAX), so the two can
  be compared on every backend. Only that conversion is borrowed.

As in the guides, loss trackers average batches without weighting them by batch size
(``fit`` weights them): compare with full batches.
"""

from __future__ import annotations

import keras
from keras import ops

BACKEND = keras.backend.backend()


class _LowerLevel(keras.Model):
    """The lower-level example's state: its own loss, loss tracker and MAE metric."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
        self.loss_fn = keras.losses.MeanSquaredError()

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]


class _GAN(keras.Model):
    """The guide's GAN: its constructor, ``metrics`` and ``compile``."""

    def __init__(self, discriminator, generator, latent_dim, seed=1337, noise="keras"):
        super().__init__()
        if noise not in ("keras", "stepkit"):
            raise ValueError(f"noise must be 'keras' or 'stepkit'. Received: {noise!r}")
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.noise = noise
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(self, d_optimizer, g_optimizer, loss_fn, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    def _draw(self, kind, shape):
        if self.noise == "keras":
            fn = keras.random.normal if kind == "normal" else keras.random.uniform
            return fn(shape, seed=self.seed_generator)
        from stepkit import backend

        fn = backend.stateless_normal if kind == "normal" else backend.stateless_uniform
        return fn(shape, ops.cast(self.seed_generator.next(), "int32"))


if BACKEND == "tensorflow":
    import tensorflow as tf

    class SupervisedModel(keras.Model):
        def train_step(self, data):
            if len(data) == 3:
                x, y, sample_weight = data
            else:
                sample_weight = None
                x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)  # Forward pass
                loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
            trainable_vars = self.trainable_variables
            gradients = tape.gradient(loss, trainable_vars)
            self.optimizer.apply(gradients, trainable_vars)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred, sample_weight=sample_weight)
            return {m.name: m.result() for m in self.metrics}

    class CustomLossModel(_LowerLevel):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)  # Forward pass
                loss = self.loss_fn(y, y_pred)
            trainable_vars = self.trainable_variables
            gradients = tape.gradient(loss, trainable_vars)
            self.optimizer.apply(gradients, trainable_vars)
            self.loss_tracker.update_state(loss)
            self.mae_metric.update_state(y, y_pred)
            return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    class GAN(_GAN):
        def train_step(self, real_images):
            if isinstance(real_images, tuple):
                real_images = real_images[0]
            batch_size = tf.shape(real_images)[0]
            random_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
            generated_images = self.generator(random_latent_vectors)
            combined_images = tf.concat([generated_images, real_images], axis=0)
            labels = tf.concat([tf.ones((batch_size, 1)), tf.zeros((batch_size, 1))], axis=0)
            # Add random noise to the labels - important trick!
            labels += 0.05 * self._draw("uniform", tf.shape(labels))
            with tf.GradientTape() as tape:
                predictions = self.discriminator(combined_images)
                d_loss = self.loss_fn(labels, predictions)
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply(grads, self.discriminator.trainable_weights)
            random_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
            misleading_labels = tf.zeros((batch_size, 1))
            with tf.GradientTape() as tape:
                predictions = self.discriminator(self.generator(random_latent_vectors))
                g_loss = self.loss_fn(misleading_labels, predictions)
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply(grads, self.generator.trainable_weights)
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(),
                    "g_loss": self.g_loss_tracker.result()}

elif BACKEND == "jax":
    import jax

    class SupervisedModel(keras.Model):
        def compute_loss_and_updates(self, trainable_variables, non_trainable_variables,
                                     metrics_variables, x, y, sample_weight, training=False):
            y_pred, non_trainable_variables = self.stateless_call(
                trainable_variables, non_trainable_variables, x, training=training)
            loss, (trainable_variables, non_trainable_variables, metrics_variables) = (
                self.stateless_compute_loss(
                    trainable_variables, non_trainable_variables, metrics_variables, x=x, y=y,
                    y_pred=y_pred, sample_weight=sample_weight, training=training))
            return loss, (y_pred, non_trainable_variables, metrics_variables)

        def train_step(self, state, data):
            (trainable_variables, non_trainable_variables, optimizer_variables,
             metrics_variables) = state
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
            (loss, (y_pred, non_trainable_variables, metrics_variables)), grads = grad_fn(
                trainable_variables, non_trainable_variables, metrics_variables, x, y,
                sample_weight, training=True)
            trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
                optimizer_variables, grads, trainable_variables)
            new_metrics_vars = []
            logs = {}
            for metric in self.metrics:
                start = len(new_metrics_vars)
                this_metric_vars = metrics_variables[start:start + len(metric.variables)]
                if metric.name == "loss":
                    this_metric_vars = metric.stateless_update_state(
                        this_metric_vars, loss, sample_weight=sample_weight)
                else:
                    this_metric_vars = metric.stateless_update_state(
                        this_metric_vars, y, y_pred, sample_weight=sample_weight)
                logs[metric.name] = metric.stateless_result(this_metric_vars)
                new_metrics_vars += this_metric_vars
            return logs, (trainable_variables, non_trainable_variables, optimizer_variables,
                          new_metrics_vars)

    class CustomLossModel(_LowerLevel):
        def compute_loss_and_updates(self, trainable_variables, non_trainable_variables,
                                     x, y, sample_weight, training=False):
            y_pred, non_trainable_variables = self.stateless_call(
                trainable_variables, non_trainable_variables, x, training=training)
            loss = self.loss_fn(y, y_pred, sample_weight=sample_weight)
            return loss, (y_pred, non_trainable_variables)

        def train_step(self, state, data):
            (trainable_variables, non_trainable_variables, optimizer_variables,
             metrics_variables) = state
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
            (loss, (y_pred, non_trainable_variables)), grads = grad_fn(
                trainable_variables, non_trainable_variables, x, y, sample_weight,
                training=True)
            trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
                optimizer_variables, grads, trainable_variables)
            loss_tracker_vars = metrics_variables[:len(self.loss_tracker.variables)]
            mae_metric_vars = metrics_variables[len(self.loss_tracker.variables):]
            loss_tracker_vars = self.loss_tracker.stateless_update_state(
                loss_tracker_vars, loss, sample_weight=sample_weight)
            mae_metric_vars = self.mae_metric.stateless_update_state(
                mae_metric_vars, y, y_pred, sample_weight=sample_weight)
            logs = {"loss": self.loss_tracker.stateless_result(loss_tracker_vars),
                    "mae": self.mae_metric.stateless_result(mae_metric_vars)}
            return logs, (trainable_variables, non_trainable_variables, optimizer_variables,
                          loss_tracker_vars + mae_metric_vars)

    class GAN(_GAN):
        def compile(self, d_optimizer, g_optimizer, loss_fn, **kwargs):
            super().compile(d_optimizer, g_optimizer, loss_fn, **kwargs)
            # The JAX trainer's state holds `self.optimizer`'s variables only: build both
            # optimizers and keep their variables in the model's non-trainable state.
            d_optimizer.build(self.discriminator.trainable_variables)
            g_optimizer.build(self.generator.trainable_variables)
            self.gan_optimizer_variables = [*d_optimizer.variables, *g_optimizer.variables]

        def train_step(self, state, data):
            (trainable_variables, non_trainable_variables, optimizer_variables,
             metrics_variables) = state
            real_images = data[0] if isinstance(data, tuple) else data
            batch_size = real_images.shape[0]
            # Each network and optimizer gets its own values out of the model's state.
            values = dict(zip(map(id, self.trainable_variables), trainable_variables,
                              strict=True))
            values.update(zip(map(id, self.non_trainable_variables), non_trainable_variables,
                              strict=True))

            def get(variables):
                return [values[id(v)] for v in variables]

            def put(variables, new):
                values.update(zip(map(id, variables), new, strict=True))

            d, g = self.discriminator, self.generator
            # Random draws advance the seed generator: run them in a StatelessScope.
            seed = self.seed_generator.state
            with keras.StatelessScope(state_mapping=[(seed, values[id(seed)])]) as scope:
                random_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
                label_noise = self._draw("uniform", (2 * batch_size, 1))
                more_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
            put([seed], [scope.get_current_value(seed)])
            generated_images, g_non_trainable = g.stateless_call(
                get(g.trainable_variables), get(g.non_trainable_variables),
                random_latent_vectors)
            put(g.non_trainable_variables, g_non_trainable)
            combined_images = ops.concatenate([generated_images, real_images], axis=0)
            labels = ops.concatenate(
                [ops.ones((batch_size, 1)), ops.zeros((batch_size, 1))], axis=0)
            # Add random noise to the labels - important trick!
            labels += 0.05 * label_noise

            def d_loss_fn(d_trainable, d_non_trainable):
                predictions, d_non_trainable = d.stateless_call(
                    d_trainable, d_non_trainable, combined_images)
                return self.loss_fn(labels, predictions), d_non_trainable

            (d_loss, d_non_trainable), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
                get(d.trainable_variables), get(d.non_trainable_variables))
            put(d.non_trainable_variables, d_non_trainable)
            d_trainable, d_opt = self.d_optimizer.stateless_apply(
                get(self.d_optimizer.variables), grads, get(d.trainable_variables))
            put(d.trainable_variables, d_trainable)
            put(self.d_optimizer.variables, d_opt)
            misleading_labels = ops.zeros((batch_size, 1))

            def g_loss_fn(g_trainable, g_non_trainable, d_non_trainable):
                generated, g_non_trainable = g.stateless_call(
                    g_trainable, g_non_trainable, more_latent_vectors)
                predictions, d_non_trainable = d.stateless_call(
                    d_trainable, d_non_trainable, generated)
                loss = self.loss_fn(misleading_labels, predictions)
                return loss, (g_non_trainable, d_non_trainable)

            (g_loss, (g_non_trainable, d_non_trainable)), grads = jax.value_and_grad(
                g_loss_fn, has_aux=True)(get(g.trainable_variables),
                                         get(g.non_trainable_variables), d_non_trainable)
            put(g.non_trainable_variables, g_non_trainable)
            put(d.non_trainable_variables, d_non_trainable)
            g_trainable, g_opt = self.g_optimizer.stateless_apply(
                get(self.g_optimizer.variables), grads, get(g.trainable_variables))
            put(g.trainable_variables, g_trainable)
            put(self.g_optimizer.variables, g_opt)
            n = len(self.d_loss_tracker.variables)
            d_vars = self.d_loss_tracker.stateless_update_state(metrics_variables[:n], d_loss)
            g_vars = self.g_loss_tracker.stateless_update_state(metrics_variables[n:], g_loss)
            logs = {"d_loss": self.d_loss_tracker.stateless_result(d_vars),
                    "g_loss": self.g_loss_tracker.stateless_result(g_vars)}
            return logs, (get(self.trainable_variables), get(self.non_trainable_variables),
                          optimizer_variables, d_vars + g_vars)

elif BACKEND == "torch":
    import torch

    class SupervisedModel(keras.Model):
        def train_step(self, data):
            if len(data) == 3:
                x, y, sample_weight = data
            else:
                sample_weight = None
                x, y = data
            self.zero_grad()
            y_pred = self(x, training=True)  # Forward pass
            loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
            loss.backward()
            trainable_weights = [v for v in self.trainable_weights]
            gradients = [v.value.grad for v in trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(gradients, trainable_weights)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred, sample_weight=sample_weight)
            return {m.name: m.result() for m in self.metrics}

    class CustomLossModel(_LowerLevel):
        def train_step(self, data):
            x, y = data
            self.zero_grad()
            y_pred = self(x, training=True)  # Forward pass
            loss = self.loss_fn(y, y_pred)
            loss.backward()
            trainable_weights = [v for v in self.trainable_weights]
            gradients = [v.value.grad for v in trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(gradients, trainable_weights)
            self.loss_tracker.update_state(loss)
            self.mae_metric.update_state(y, y_pred)
            return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    class GAN(_GAN):
        def train_step(self, real_images):
            if isinstance(real_images, tuple):
                real_images = real_images[0]
            batch_size = real_images.shape[0]
            random_latent_vectors = self._draw("normal", (batch_size, self.latent_dim))
            generated_images = self.generator(random_latent_vectors)
            real_images = ops.convert_to_tensor(real_images)
            combined_images = torch.concat([generated_images, real_images], axis=0)
            device = combined_images.device
            labels = torch.concat([torch.ones((batch_size, 1), device=device),
                                   torch.zeros((batch_size, 1), device=device)], axis=0)
            # Add random noise to the labels - important trick!
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


def _functional(cls, network):
    """``cls(inputs, outputs)`` over ``network``, as the guides build their models."""
    inputs = keras.Input(shape=network.input_shape[1:])
    return cls(inputs, network(inputs))


def supervised_model(network):
    """The guide's first example (with sample weights), wrapping ``network``'s weights."""
    return _functional(SupervisedModel, network)


def custom_loss_model(network):
    """The guide's lower-level example (own MSE, loss tracker and MAE), over ``network``."""
    return _functional(CustomLossModel, network)


def gan_model(generator, discriminator, latent_dim, *, seed=1337, noise="keras"):
    """The guide's GAN; ``noise="stepkit"`` draws what stepkit's ``gan`` step draws."""
    return GAN(discriminator=discriminator, generator=generator, latent_dim=latent_dim,
               seed=seed, noise=noise)
