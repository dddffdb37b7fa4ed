"""Tiny StepModels shared by the backend children: the same code on every backend.

``build(name)`` returns the compiled model of a case, ``fit_args`` its ``fit`` data and
``predict_input`` what ``predict`` is called on. Dense networks only (fast on every
backend). The arrays are written once by the parent test (``data.npz``), so every child
reads the same numbers.
"""

from __future__ import annotations

import keras
import numpy as np

import stepkit

CASES = ("supervised", "gan", "vae")
BATCH = 16
LATENT = 4


def _mlp(inputs: int, units: int, out: int, name: str) -> keras.Model:
    return keras.Sequential([keras.Input((inputs,)),
                             keras.layers.Dense(units, activation="relu", name=f"{name}_hidden"),
                             keras.layers.Dense(out, name=f"{name}_out")], name=name)


def optimizers(name: str) -> object:
    """Fresh optimizers for ``name``, each with slots: Adam (m, v), SGD and RMSprop with
    momentum (a dropped slot or ``iterations`` changes the next updates)."""
    if name == "supervised":
        return keras.optimizers.Adam(1e-2)
    if name == "gan":
        return {"generator": keras.optimizers.Adam(1e-2),
                "discriminator": keras.optimizers.SGD(5e-2, momentum=0.5)}
    return {"vae": keras.optimizers.RMSprop(1e-2, momentum=0.5)}


def network_layout(name: str) -> dict[str, keras.Model]:
    # No keras.utils.set_random_seed: it imports TensorFlow on every backend (seconds).
    # Each backend starts from its own random weights; the checks compare files, not runs.
    if name == "supervised":
        return {"net": _mlp(5, 8, 2, "net")}
    if name == "gan":
        return {"generator": _mlp(LATENT, 8, 6, "generator"),
                "discriminator": _mlp(6, 8, 1, "discriminator")}
    from stepkit_vae import dense_decoder, dense_encoder

    return {"encoder": dense_encoder((6,), 2, units=8), "decoder": dense_decoder(2, (6,), units=8)}


def compile_fresh(model: stepkit.StepModel, name: str) -> None:
    """Compile with new optimizers (no state) and Keras' defaults otherwise."""
    extra = {"loss": "mse", "metrics": ["mae"]} if name == "supervised" else {}
    model.compile(optimizer=optimizers(name), **extra)


def build(name: str) -> stepkit.StepModel:
    nets = network_layout(name)
    if name == "supervised":
        model = stepkit.StepModel(nets["net"], step="supervised", seed=1)
    else:
        config = {"gan": {"latent_dim": LATENT, "label_noise": 0.1},
                  "vae": {"latent_dim": 2}}[name]
        model = stepkit.StepModel(nets, step=name, config=config, seed=1)
    compile_fresh(model, name)
    return model


def fit_args(name: str, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Regression pairs for ``supervised``; samples in [0, 1] for the generative steps."""
    if name == "supervised":
        return arrays["x"], arrays["y"]
    return arrays["images"], None


def predict_input(name: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    return {"supervised": arrays["x"], "vae": arrays["z_vae"]}.get(name, arrays["z"])


def fit(model: stepkit.StepModel, name: str, arrays: dict[str, np.ndarray], epochs: int = 1,
        **kwargs) -> dict[str, list[float]]:
    x, y = fit_args(name, arrays)
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                     **kwargs).history


def snapshot(model: stepkit.StepModel, prefix: str) -> dict[str, np.ndarray]:
    """Every weight of the model (networks, step counter, RNG) and every optimizer variable."""
    out = {f"{prefix}w{i}": np.asarray(keras.ops.convert_to_numpy(v))
           for i, v in enumerate(model.weights)}
    for role, opt in model.optimizers.items():
        for i, v in enumerate(opt.variables):
            out[f"{prefix}opt:{role}:{i}"] = np.asarray(keras.ops.convert_to_numpy(v))
    return out


def describe(model: stepkit.StepModel) -> dict[str, object]:
    """Paths of the weights and optimizer variables, and each role's ``iterations``."""
    return {"weights": [v.path for v in model.weights],
            "optimizers": {r: [v.path for v in o.variables] for r, o in model.optimizers.items()},
            "iterations": {r: int(keras.ops.convert_to_numpy(o.iterations))
                           for r, o in model.optimizers.items()}}
