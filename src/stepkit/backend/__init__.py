"""Backend-specific pieces of a training step, one module per Keras backend.

Everything a step needs from the backend (gradients, applying them, branches
that update state, replica information, seeded random draws) goes through this
module, so that steps written against :class:`stepkit.StepContext` run
unchanged on TensorFlow, JAX and PyTorch. As Keras splits
``trainers/trainer.py`` from ``backend/*/trainer.py``, each backend module also
gives the ``StepTrainer`` mixin that speaks its Keras trainer's protocol
(``train_step(data)`` on TensorFlow and torch, ``train_step(state, data)`` on JAX).
"""

from __future__ import annotations

import importlib

import keras

SUPPORTED = ("tensorflow", "jax", "torch")

BACKEND = keras.backend.backend()
if BACKEND not in SUPPORTED:
    raise ImportError(
        f"stepkit does not support Keras' {BACKEND!r} backend (it cannot train: "
        f"KERAS_BACKEND={BACKEND!r}). Supported backends: {', '.join(SUPPORTED)}. Set "
        "KERAS_BACKEND to one of them before importing keras."
    )

_impl = importlib.import_module(f"stepkit.backend.{BACKEND}")

StepTrainer = _impl.StepTrainer
all_reduce_sum = _impl.all_reduce_sum
apply_gradients = _impl.apply_gradients
cond = _impl.cond
dataset_spec = _impl.dataset_spec
input_gradients = _impl.input_gradients
is_multi_worker = _impl.is_multi_worker
local_value = _impl.local_value
num_replicas = _impl.num_replicas
replica_id = _impl.replica_id
serving_function = _impl.serving_function
stateless_normal = _impl.stateless_normal
stateless_uniform = _impl.stateless_uniform
value_and_grad = _impl.value_and_grad

__all__ = [
    "BACKEND",
    "SUPPORTED",
    "StepTrainer",
    "all_reduce_sum",
    "apply_gradients",
    "cond",
    "dataset_spec",
    "input_gradients",
    "is_multi_worker",
    "local_value",
    "num_replicas",
    "replica_id",
    "serving_function",
    "stateless_normal",
    "stateless_uniform",
    "value_and_grad",
]
