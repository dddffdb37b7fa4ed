"""One process of ``bench_backends.py``: everything it measures on one Keras backend.

The backend is fixed per process (``KERAS_BACKEND``, set by the parent with the
thread settings). The child first measures what a user of this backend sees
(phase ``fresh``): the time to import Keras and stepkit, then a ``StepModel``
``gan`` built, compiled and trained for its first step (tracing or compilation
included), then a few steps, and the peak RSS of the process at that point,
before anything else is built. Then (phase ``ratio``) it times ``StepModel``
against the hand-written guide models of ``tests/guide_models.py`` on the same
networks: models built in alternating order (time to first step), then blocks
of training in alternating order (A, B, B, A, ...). One JSON line on stdout.

Usage (by the parent)::

    KERAS_BACKEND=jax python bench/_backend_child.py '{"threads": 1, ...}'
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time

T_START = time.perf_counter()
SEED = 1337
# tests/guide_models.py: the keras-io guide's subclasses for the current backend.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def peak_mib() -> float:
    """Peak RSS of this process so far (``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def set_threads(backend: str, n: int) -> None:
    """``n`` intra- and inter-op threads (JAX: XLA_FLAGS, set by the parent); 0: defaults."""
    if not n:
        return
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    elif backend == "torch":
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only before torch's first parallel work
            pass


def data(workload: str, image: int):
    """scikit-learn's digits: (x, y) for ``mlp``; images zoomed to image x image for ``gan``."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    if workload == "mlp":
        return x, d.target.astype("int32")
    from scipy.ndimage import zoom

    images = zoom(x.reshape(-1, 8, 8), (1, image / 8, image / 8), order=1)
    return np.clip(images, 0.0, 1.0)[..., None].astype("float32"), None


_INITIAL: dict[str, dict] = {}  # workload -> role -> the first networks' initial weights


def networks(workload: str, s: dict) -> dict:
    """Fresh networks, with the same initial weights on every call.

    The weights of the first call are copied into later ones rather than seeded
    with ``keras.utils.set_random_seed``, which imports TensorFlow (when
    installed) on every backend and would count it in the JAX and torch memory.
    """
    import keras

    if workload == "mlp":
        inp = keras.Input((64,))
        h = keras.layers.Dense(64, activation="relu")(inp)
        h = keras.layers.Dense(64, activation="relu")(h)
        nets = {"network": keras.Model(inp, keras.layers.Dense(10)(h), name="mlp")}
    else:
        from stepkit.steps.gan import dcgan_discriminator, dcgan_generator

        shape = (s["image"], s["image"], 1)
        nets = {"generator": dcgan_generator(s["latent"], shape),
                "discriminator": dcgan_discriminator(shape)}
    if workload not in _INITIAL:
        _INITIAL[workload] = {role: net.get_weights() for role, net in nets.items()}
    for role, net in nets.items():
        net.set_weights(_INITIAL[workload][role])
    return nets


def build(contender: str, workload: str, s: dict):
    """A compiled model: ``stepkit`` (StepModel), ``guide`` (the guide's subclass) or
    ``guide_nograd`` (torch ``gan`` only: ``bench/guide_gan_torch.py``)."""
    import keras

    nets = networks(workload, s)
    if workload == "mlp":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if contender == "stepkit":
            from stepkit import StepModel

            model = StepModel(nets["network"], step="supervised")
        else:
            import guide_models

            model = guide_models.supervised_model(nets["network"])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        return model
    if contender == "stepkit":
        from stepkit import StepModel

        model = StepModel(nets, step="gan", config={"latent_dim": s["latent"]}, seed=SEED)
        model.compile(optimizer={"generator": keras.optimizers.Adam(3e-4),
                                 "discriminator": keras.optimizers.Adam(3e-4)})
        return model
    if contender == "guide_nograd":
        from guide_gan_torch import NoGradFakeGAN

        model = NoGradFakeGAN(nets["discriminator"], nets["generator"], s["latent"], seed=SEED)
    else:
        import guide_models

        model = guide_models.gan_model(nets["generator"], nets["discriminator"], s["latent"],
                                       seed=SEED)
    model.compile(keras.optimizers.Adam(3e-4), keras.optimizers.Adam(3e-4),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    return model


class Trainer:
    """A model and its data; ``run(steps)`` times the loop of one ``fit`` call."""

    def __init__(self, contender: str, workload: str, s: dict, arrays) -> None:
        import numpy as np

        self.workload, self.s, (x, y) = workload, s, arrays
        reps = -(-s["steps"][workload] * s["batch"][workload] // len(x))  # one epoch: all steps
        self.x = np.concatenate([x] * reps) if reps > 1 else x
        self.y = np.concatenate([y] * reps) if reps > 1 and y is not None else y
        self.model = build(contender, workload, s)

    def run(self, steps: int) -> tuple[float, float]:
        """(wall, CPU) seconds per step, from batch 0's begin to the end of the epoch."""
        import keras

        class Timer(keras.callbacks.Callback):
            batches = 0

            def on_train_batch_begin(self, batch, logs=None):
                if batch == 0:
                    self.begin = clocks()
                self.batches += 1

            def on_epoch_end(self, epoch, logs=None):
                self.end = clocks()

        timer = Timer()
        batch = self.s["batch"][self.workload]
        gc.collect()
        gc.disable()
        try:
            self.model.fit(self.x, self.y, batch_size=batch, epochs=1, steps_per_epoch=steps,
                           shuffle=False, verbose=0, callbacks=[timer])
        finally:
            gc.enable()
        if timer.batches != steps:
            raise RuntimeError(f"fit ran {timer.batches} steps, not {steps}: the data ran out.")
        return ((timer.end[0] - timer.begin[0]) / steps, (timer.end[1] - timer.begin[1]) / steps)


def first(contender: str, workload: str, s: dict, arrays) -> tuple[Trainer, dict]:
    """Build and compile (``setup``), then one ``fit`` of one step (``first``), timed."""
    gc.collect()
    t0 = clocks()
    trainer = Trainer(contender, workload, s, arrays)
    t1 = clocks()
    trainer.run(1)
    t2 = clocks()
    return trainer, {"setup_s": t1[0] - t0[0], "first_wall_s": t2[0] - t1[0],
                     "first_cpu_s": t2[1] - t1[1]}


def fresh(s: dict, backend: str) -> dict:
    """Import, the first StepModel gan step, a few steps, and the process' peak RSS."""
    import keras  # noqa: F401

    set_threads(backend, s["threads"])
    from stepkit import StepModel  # noqa: F401  (imports the backend module)

    out = {"import_s": time.perf_counter() - T_START, "after_import_mib": peak_mib()}
    trainer, times = first("stepkit", "gan", s, data("gan", s["image"]))
    out.update(times)
    walls, cpus = [], []
    for _ in range(s["fresh_blocks"]):
        wall, cpu = trainer.run(s["steps"]["gan"])
        walls.append(wall)
        cpus.append(cpu)
    out.update(step_wall=walls, step_cpu=cpus, peak_mib=peak_mib(),
               imported=sorted(m for m in ("tensorflow", "jax", "torch") if m in sys.modules))
    return out


def ratio(workload: str, s: dict, process: int, backend: str) -> dict:
    """First-step times (models built in alternating order), then alternating blocks."""
    arrays = data(workload, s["image"])
    names = ["stepkit", "guide"]
    if backend == "torch" and workload == "gan":
        names.append("guide_nograd")  # bench/guide_gan_torch.py
    if process % 2:
        names.reverse()
    firsts = {n: [] for n in names}
    trainers = {}
    for k in range(s["first_repeats"][workload]):
        for name in names if k % 2 == 0 else names[::-1]:
            trainers[name], times = first(name, workload, s, arrays)
            firsts[name].append(times)
    blocks = {n: {"wall": [], "cpu": []} for n in names}
    for name in names:  # discarded: the first steps after the first can be slower
        trainers[name].run(s["steps"][workload])
    for r in range(s["rounds"][workload]):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = trainers[name].run(s["steps"][workload])
            blocks[name]["wall"].append(wall)
            blocks[name]["cpu"].append(cpu)
    return {"first": firsts, "blocks": blocks}


def main() -> None:
    s = json.loads(sys.argv[1])
    import keras

    backend = keras.backend.backend()
    out = {"backend": backend, "fresh": fresh(s, backend), "ratio": {}}
    for workload in s["workloads"]:
        out["ratio"][workload] = ratio(workload, s, s["process"], backend)
    import guide_models

    out["guide_models"] = os.path.relpath(guide_models.__file__, os.getcwd())
    out["versions"] = {"keras": keras.__version__, backend: _version(backend)}
    print(json.dumps(out))


def _version(module: str) -> str:
    return getattr(sys.modules[module], "__version__", "?")


if __name__ == "__main__":
    main()
