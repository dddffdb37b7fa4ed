"""Run in a subprocess by test_replicas.py: 2 logical CPU devices, MirroredStrategy."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import stepkit  # noqa: E402
from stepkit import StepModel  # noqa: E402


class TwoUpdates(stepkit.Step):
    """Two updates of one role per batch: each is one optimizer step on every replica."""

    name = "two-updates"

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        net = ctx.networks["network"]
        for _ in range(2):
            loss = ctx.minimize("network",
                                lambda: ops.mean(ops.square(net(x, training=True) - y)))
        ctx.track("loss", loss, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        ctx.track("loss", ops.mean(ops.square(ctx.networks["network"](x) - y)),
                  ctx.batch_size(x))


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(TwoUpdates)


stepkit.register_plugin(Plugin(), name="replicas-two-updates")


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype("float32")
    return x, (x @ rng.normal(size=(5, 1))).astype("float32")


def net():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(1)])


def run(step, strategy, config=None, **compile_kwargs):
    with strategy.scope():
        model = StepModel(net(), step=step, config=config, seed=1)
        model.compile(optimizer=keras.optimizers.SGD(0.05), **compile_kwargs)
    x, y = data()
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    return {"history": history, "weights": [w.numpy().tolist() for w in model.weights],
            "iterations": int(model.optimizer.iterations.numpy())}


def gan(strategy):
    images = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    with strategy.scope():
        model = StepModel(step="gan", config={"latent_dim": 8}, seed=1)
        model.compile()
    history = model.fit(images, batch_size=32, epochs=2, verbose=0).history
    noise = strategy.run(lambda: model._ctx.normal((4,)))
    per_replica = [t.numpy().tolist() for t in strategy.experimental_local_results(noise)]
    return {"history": history, "noise": per_replica,
            "iterations": {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()}}


one = tf.distribute.OneDeviceStrategy("/cpu:0")
two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": two.num_replicas_in_sync}
for name, kwargs in {
    "supervised": dict(loss="mse", metrics=["mae"]),
    "custom-loss": dict(metrics=["mae"]),
}.items():
    out[name] = {"one": run(name, one, **kwargs), "two": run(name, two, **kwargs)}
# Every loss form reduces to the plain mean on each replica: per-sample values
# (reduction=None) train and log exactly like "mse".
unreduced = {"loss": keras.losses.MeanSquaredError(reduction=None)}
out["two-updates"] = {"one": run("two-updates", one), "two": run("two-updates", two)}
out["custom-loss-unreduced"] = {"one": run("custom-loss", one, unreduced, metrics=["mae"]),
                                "two": run("custom-loss", two, unreduced, metrics=["mae"])}
out["gan"] = {"one": gan(one), "two": gan(two)}
json.dump(out, sys.stdout)
