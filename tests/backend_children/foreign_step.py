"""Child: a step that calls TensorFlow directly, trained on the backend of KERAS_BACKEND."""

import keras
import numpy as np
import tensorflow as tf

import stepkit
from stepkit import StepModel
from stepkit.registry import register_plugin


class TFStep(stepkit.Step):
    name = "calls-tensorflow"

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        net = ctx.networks["network"]

        def loss_fn():
            return tf.reduce_mean(tf.square(net(x, training=True) - y))  # the bad call

        ctx.track("loss", ctx.minimize("network", loss_fn), ctx.batch_size(x))

    def test_step(self, ctx, data):
        pass


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TFStep)


register_plugin(Plugin(), "calls-tensorflow")
model = StepModel(keras.Sequential([keras.layers.Dense(1)]), step="calls-tensorflow")
model.compile(optimizer="sgd")
try:
    model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), verbose=0)
except Exception as e:  # the parent checks the message
    print(f"{type(e).__name__}: {e}")
else:
    print("TRAINED")
