"""Run in a subprocess by test_wrappers_sam_ema.py: ``sam`` > ``ema`` on 1 and 2 logical CPUs."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from stepkit import StepModel  # noqa: E402

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 5)).astype("float32")
Y = (X @ rng.normal(size=(5, 1))).astype("float32")


def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                                keras.layers.Dense(1)])
        model = StepModel(net, step="supervised", seed=1,
                          wrappers=[{"name": "sam", "rho": 0.5}, {"name": "ema", "decay": 0.5}])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(X, Y, batch_size=32, epochs=2, shuffle=False, verbose=0,
                        validation_data=(X[:32], Y[:32])).history
    return {"history": history, "weights": [w.numpy().tolist() for w in model.weights],
            "predict": model.predict(X[:8], verbose=0).tolist()}


two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert two.num_replicas_in_sync == 2
json.dump([run(tf.distribute.OneDeviceStrategy("/cpu:0")), run(two)], sys.stdout)
