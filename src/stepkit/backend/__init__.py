"""Backend-specific pieces of a training step.

Everything a step needs from the backend (gradients, applying them, replica
information, stateless random draws) goes through this module, so that steps
written against :class:`stepkit.StepContext` do not depend on TensorFlow.
Only the TensorFlow backend is implemented today.
"""

from __future__ import annotations

import keras

if keras.backend.backend() != "tensorflow":  # pragma: no cover - guarded for the future
    raise ImportError(
        f"stepkit supports Keras' 'tensorflow' backend today. Received: KERAS_BACKEND="
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from stepkit.backend.tensorflow import (  # noqa: E402
    cond,
    dataset_spec,
    input_gradients,
    is_multi_worker,
    local_value,
    num_replicas,
    replica_id,
    serving_function,
    stateless_normal,
    stateless_uniform,
    untracked_counter,
    value_and_grad,
)

__all__ = [
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
    "untracked_counter",
    "value_and_grad",
]
