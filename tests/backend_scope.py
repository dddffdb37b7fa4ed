"""Which test modules run on which Keras backend, and why.

The whole suite runs on TensorFlow. On JAX and torch, every module runs except
those below. Each is listed with its reason: either it tests what only
TensorFlow has, or it tests backend-independent code (the command line, the
registry, the docs) that one backend covers, which keeps CI under 30 minutes.
"""

from __future__ import annotations

# What only TensorFlow has (tf.distribute replicas and workers, SavedModel export).
TENSORFLOW_SPECIFIC: dict[str, str] = {}

# Backend-independent code, tested once (on TensorFlow) to keep CI short.
BACKEND_INDEPENDENT: dict[str, str] = {}


def NOT_ON_THIS_BACKEND(backend: str) -> set[str]:  # noqa: N802 - reads as a constant
    if backend == "tensorflow":
        return set()
    return set(TENSORFLOW_SPECIFIC) | set(BACKEND_INDEPENDENT)


def describe(backend: str) -> str:
    left_out = sorted(NOT_ON_THIS_BACKEND(backend))
    if not left_out:
        return f"stepkit: Keras backend {backend!r}, every test module"
    return (f"stepkit: Keras backend {backend!r}; not collected here ({len(left_out)} modules, "
            "see tests/backend_scope.py): " + ", ".join(left_out))
