"""TensorFlow implementations of the backend pieces (see :mod:`stepkit.backend`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf


def num_replicas() -> int:
    """Replicas taking part in the current step (1 outside ``tf.distribute``)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_id() -> tf.Tensor:
    """This replica's index in its sync group, as an int32 tensor."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def local_value(v: Any) -> Any:
    """The first local replica's value of a (possibly distributed) batch leaf."""
    if isinstance(v, tf.distribute.DistributedValues):
        return v.values[0]
    return v


def is_multi_worker(strategy: Any) -> bool:
    """Whether ``strategy`` spans several worker processes."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def untracked_counter() -> tf.Variable:
    """An int64 counter every replica updates alike, outside Keras' tracking."""
    return tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def gradients(
    loss_fn: Callable[[], Any], variables: Sequence[Any], transform: Callable[[Any], Any]
) -> tuple[list[Any], Any]:
    """Run ``loss_fn`` under a tape; return the gradients of ``transform(loss)`` and its output.

    ``loss_fn`` returns a scalar loss or a tuple whose first element is the loss.
    ``transform`` turns the plain loss into the one to differentiate (replica and
    mixed-precision scaling).
    """
    with tf.GradientTape() as tape:
        out = loss_fn()
        loss = out[0] if isinstance(out, tuple) else out
        target = transform(loss)
    return tape.gradient(target, list(variables)), out


def input_gradients(fn: Callable[[Any], Any], inputs: Any) -> Any:
    """Gradient of ``sum(fn(inputs))`` with respect to ``inputs`` (gradient penalties, R1).

    The result stays differentiable, so it can be used inside an outer loss.
    """
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = tf.reduce_sum(fn(inputs))
    return tape.gradient(out, inputs)


# Philox gives the same numbers with and without XLA (the default algorithm does not).
_ALG = "philox"


def _seed(seed: Any) -> tf.Tensor:
    return tf.cast(seed, tf.int64)


def stateless_normal(shape: Any, seed: Any, dtype: str = "float32", mean: float = 0.0,
                     stddev: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_normal(shape, seed=_seed(seed), mean=mean, stddev=stddev,
                                      dtype=dtype, alg=_ALG)


def stateless_uniform(shape: Any, seed: Any, dtype: str = "float32", minval: float = 0.0,
                      maxval: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=_seed(seed), minval=minval, maxval=maxval,
                                       dtype=dtype, alg=_ALG)
