"""The benchmark workloads and the three ways of training each of them.

Workloads (scikit-learn's digits, tiny networks):

* ``mlp``: 64 -> Dense(64) -> Dense(64) -> Dense(10) logits, batch 32.
* ``cnn``: 16x16x1 -> Conv(8) -> MaxPool -> Conv(16) -> GlobalAvgPool -> Dense(10), batch 32.
* ``gan``: the DCGAN networks of :mod:`stepkit.steps.gan` on 8x8x1 digits, latent 16,
  batch 16.

Contenders, all on the same networks (same initial weights) and the same
``tf.data`` pipeline:

* ``stepkit``: ``StepModel(net, step="supervised")`` /
  ``StepModel({"generator": g, "discriminator": d}, step="gan")`` and ``fit``.
* ``keras``: the functional net compiled directly / the Keras guide's
  ``GAN(keras.Model)`` subclass (:mod:`bench.guide_gan`), and ``fit``.
* ``tf.function``: a hand-written ``tf.function`` loop (the floor for TensorFlow).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

try:  # run as a script from bench/ or imported as bench.workloads
    from guide_gan import GuideGAN
except ImportError:  # pragma: no cover
    from bench.guide_gan import GuideGAN

CONTENDERS = ("stepkit", "keras", "tf.function")
WORKLOADS = ("mlp", "cnn", "gan")
LATENT = 16
SEED = 1337


def _dcgan_builders():
    """stepkit's ``dcgan_generator`` and ``dcgan_discriminator``, without importing stepkit.

    The Keras and tf.function contenders must not pay for importing stepkit (the
    memory benchmark compares processes), so unless stepkit is already imported
    the two functions are compiled from the source of ``stepkit/steps/gan.py``.
    """
    if "stepkit" in sys.modules:
        from stepkit.steps.gan import dcgan_discriminator, dcgan_generator

        return dcgan_generator, dcgan_discriminator
    package = importlib.util.find_spec("stepkit").submodule_search_locations[0]
    tree = ast.parse((Path(package) / "steps" / "gan.py").read_text())
    wanted = ("dcgan_generator", "dcgan_discriminator")
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"keras": keras, "layers": keras.layers}
    exec(compile(ast.Module(body=body, type_ignores=[]), "stepkit/steps/gan.py", "exec"),
         namespace)
    return namespace["dcgan_generator"], namespace["dcgan_discriminator"]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype("float32"), d.target.astype("int32")


def dataset(workload: str) -> tf.data.Dataset:
    """An endless, shuffled-once dataset of batches for ``workload``."""
    x, y = _digits()
    if workload == "mlp":
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).repeat()
    images = x.reshape(-1, 8, 8, 1)
    if workload == "cnn":
        images = tf.image.resize(images, (16, 16)).numpy()
        return (tf.data.Dataset.from_tensor_slices((images, y))
                .batch(32, drop_remainder=True).repeat())
    if workload == "gan":
        return tf.data.Dataset.from_tensor_slices(images).batch(16, drop_remainder=True).repeat()
    raise ValueError(f"Unknown workload {workload!r}. Valid: {', '.join(WORKLOADS)}.")


def networks(workload: str) -> dict[str, keras.Model]:
    """Fresh networks with the same initial weights on every call."""
    keras.utils.set_random_seed(SEED)
    if workload == "mlp":
        inp = keras.Input((64,))
        h = keras.layers.Dense(64, activation="relu")(inp)
        h = keras.layers.Dense(64, activation="relu")(h)
        return {"network": keras.Model(inp, keras.layers.Dense(10)(h), name="mlp")}
    if workload == "cnn":
        inp = keras.Input((16, 16, 1))
        h = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inp)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return {"network": keras.Model(inp, keras.layers.Dense(10)(h), name="cnn")}
    dcgan_generator, dcgan_discriminator = _dcgan_builders()
    return {"generator": dcgan_generator(LATENT, (8, 8, 1)),
            "discriminator": dcgan_discriminator((8, 8, 1))}


def _supervised_compile(spe: int) -> dict:
    return dict(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], steps_per_execution=spe, jit_compile=False)


def clocks() -> tuple[float, float]:
    """(wall, CPU) seconds; CPU is this process' time on every thread."""
    return time.perf_counter(), time.process_time()


class _Timer(keras.callbacks.Callback):
    """Clocks at the first batch (the data iterator exists) and at the end of the epoch."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.begin = clocks()

    def on_epoch_end(self, epoch, logs=None):
        self.end = clocks()


class Contender:
    """One way of training one workload. ``setup``, ``first`` (trace), then ``run``."""

    def __init__(self, name: str, workload: str, spe: int) -> None:
        if name not in CONTENDERS:
            raise ValueError(f"Unknown contender {name!r}. Valid: {', '.join(CONTENDERS)}.")
        self.name, self.workload, self.spe = name, workload, spe
        self.ds = dataset(workload)
        self.nets = networks(workload)  # built outside every timing

    # ------------------------------------------------------------ Keras fit()

    def setup(self) -> None:
        """Create and compile the model (timed as ``setup``)."""
        gan, spe = self.workload == "gan", self.spe
        if self.name == "stepkit":
            from stepkit import StepModel
        if self.name == "tf.function":
            self._floor_setup()
        elif self.name == "stepkit" and gan:
            self.model = StepModel(dict(self.nets), step="gan", config={"latent_dim": LATENT},
                                   seed=SEED)
            self.model.compile(optimizer={"generator": keras.optimizers.Adam(3e-4),
                                          "discriminator": keras.optimizers.Adam(3e-4)},
                               steps_per_execution=spe, jit_compile=False)
        elif self.name == "stepkit":
            self.model = StepModel(self.nets["network"], step="supervised")
            self.model.compile(**_supervised_compile(spe))
        elif gan:
            self.model = GuideGAN(self.nets["discriminator"], self.nets["generator"], LATENT,
                                  seed=SEED)
            self.model.compile(keras.optimizers.Adam(3e-4), keras.optimizers.Adam(3e-4),
                               keras.losses.BinaryCrossentropy(from_logits=True),
                               steps_per_execution=spe)
        else:
            self.model = self.nets["network"]
            self.model.compile(**_supervised_compile(spe))

    def run_fn(self, steps: int):
        """``run(steps)`` as a function of no argument."""
        return lambda: self.run(steps)

    def first(self) -> None:
        """The first execution: builds optimizers, traces, runs ``spe`` steps."""
        self.run(self.spe)

    def run(self, steps: int) -> dict[str, float]:
        """Train ``steps`` steps; wall and CPU seconds of the loop and of the whole call."""
        if self.name == "tf.function":
            return self._floor_run(steps)
        timer = _Timer()
        t0 = clocks()
        self.model.fit(self.ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        return _times(t0, timer.begin, timer.end)

    # ------------------------------------------------------------ the floor

    def _floor_setup(self) -> None:
        if self.workload == "gan":
            self._floor_gan_setup()
            return
        net = self.nets["network"]
        opt = keras.optimizers.Adam(1e-3)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def step(data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = loss_fn(y, net(x, training=True))
            grads = tape.gradient(loss, net.trainable_variables)
            opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
            return loss

        self._make_execution(step)

    def _floor_gan_setup(self) -> None:
        g, d = self.nets["generator"], self.nets["discriminator"]
        d_opt, g_opt = keras.optimizers.Adam(3e-4), keras.optimizers.Adam(3e-4)
        loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        seeds = keras.random.SeedGenerator(SEED)

        def step(real):
            n = tf.shape(real)[0]
            fake = g(keras.random.normal((n, LATENT), seed=seeds))
            combined = tf.concat([fake, real], axis=0)
            labels = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
            labels += 0.05 * keras.random.uniform(tf.shape(labels), seed=seeds)
            with tf.GradientTape() as tape:
                d_loss = loss_fn(labels, d(combined))
            grads = tape.gradient(d_loss, d.trainable_weights)
            d_opt.apply_gradients(zip(grads, d.trainable_weights, strict=True))
            z = keras.random.normal((n, LATENT), seed=seeds)
            with tf.GradientTape() as tape:
                g_loss = loss_fn(tf.zeros((n, 1)), d(g(z)))
            grads = tape.gradient(g_loss, g.trainable_weights)
            g_opt.apply_gradients(zip(grads, g.trainable_weights, strict=True))
            return d_loss + g_loss

        self._make_execution(step)

    def _make_execution(self, step) -> None:
        spe = self.spe

        @tf.function(jit_compile=False, reduce_retracing=True)
        def execution(iterator):
            if spe == 1:
                return step(next(iterator))
            loss = tf.constant(0.0)
            for _ in tf.range(spe):
                loss = step(next(iterator))
            return loss

        self._execution = execution

    def _floor_run(self, steps: int) -> dict[str, float]:
        t0 = clocks()
        iterator = iter(self.ds)
        t1 = clocks()
        loss = None
        for _ in range(max(1, steps // self.spe)):
            loss = self._execution(iterator)
        float(loss)  # wait for the last step
        return _times(t0, t1, clocks())


def _times(start, begin, end) -> dict[str, float]:
    return {"loop_wall": end[0] - begin[0], "loop_cpu": end[1] - begin[1],
            "call_wall": end[0] - start[0], "call_cpu": end[1] - start[1]}
