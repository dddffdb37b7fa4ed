"""TensorFlow implementations of the backend pieces (see :mod:`stepkit.backend`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf


def num_replicas() -> int:
    """Replicas taking part in the current step (1 outside ``tf.distribute``)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def all_reduce_sum(values: Any) -> list[Any]:
    """``values`` summed over the replicas of the current step (unchanged outside one).

    None entries (a variable without gradient) stay None. Losses are already
    divided by the number of replicas, so summed gradients are the global batch's.
    """
    values = list(values)
    replica = tf.distribute.get_replica_context()
    present = [v for v in values if v is not None]
    if replica is None or tf.distribute.get_strategy().num_replicas_in_sync == 1 or not present:
        return values
    summed = iter(replica.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if v is None else next(summed) for v in values]


def replica_id() -> tf.Tensor:
    """This replica's index in its sync group, as an int32 tensor."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def local_value(v: Any) -> Any:
    """The first local replica's value of a (possibly distributed) batch leaf.

    An optional input (``None`` from a generator, a ``tf.experimental.Optional``
    in the dataset) is None, as Keras' trainer treats it.
    """
    if isinstance(v, tf.experimental.Optional):
        return None
    if isinstance(v, tf.distribute.DistributedValues):
        return v.values[0]
    return v


def dataset_spec(dataset: Any) -> Any:
    """The element spec of ``dataset`` when it is plain tensors, else None."""
    spec = getattr(dataset, "element_spec", None)
    if spec is None or not all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec)):
        return None
    return spec


def is_multi_worker(strategy: Any) -> bool:
    """Whether ``strategy`` spans several worker processes."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def untracked_counter() -> tf.Variable:
    """An int64 counter every replica updates alike, outside Keras' tracking."""
    return tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def value_and_grad(
    fn: Callable[[], tuple[Any, Any]], variables: Sequence[Any]
) -> tuple[list[Any], Any]:
    """Run ``fn`` under a tape; return the gradients of its first output and its second.

    ``fn`` returns ``(target, aux)``: the value to differentiate (already scaled
    for replicas and mixed precision) and what to pass back to the caller.
    """
    with tf.GradientTape() as tape:
        target, aux = fn()
    return tape.gradient(target, list(variables)), aux


def apply_gradients(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> None:
    optimizer.apply_gradients(zip(grads, variables, strict=True))


def input_gradients(fn: Callable[[Any], Any], inputs: Any) -> Any:
    """Gradient of ``sum(fn(inputs))`` with respect to ``inputs`` (gradient penalties, R1).

    The result stays differentiable, so it can be used inside an outer loss.
    """
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = tf.reduce_sum(fn(inputs))
    return tape.gradient(out, inputs)


# Philox gives the same *bits* with and without XLA, but XLA turns them into floats
# differently from the CPU kernels (TF 2.21: stateless_uniform/normal with alg="philox"
# differ under jit_compile for every seed). So draw uint32 bits and convert them here.
_ALG = "philox"


def _seed(seed: Any) -> tf.Tensor:
    return tf.cast(seed, tf.int64)


def _bits(shape: Any, seed: Any) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=_seed(seed), minval=None, maxval=None,
                                       dtype=tf.uint32, alg=_ALG)


def _unit(bits: tf.Tensor) -> tf.Tensor:
    """Floats in [0, 1) from the top 24 bits: exact in float32, the same under XLA."""
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (2.0 ** -24)


def stateless_normal(shape: Any, seed: Any, dtype: str = "float32", mean: float = 0.0,
                     stddev: float = 1.0) -> tf.Tensor:
    """Box-Muller on two Philox streams; equal with and without XLA up to float rounding."""
    shape = tf.cast(tf.convert_to_tensor(shape), tf.int32)
    bits = _bits(tf.concat([[2], shape], 0), seed)
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - _unit(bits[0])))  # 1 - u is in (0, 1]
    z = radius * tf.cos((2.0 * math.pi) * _unit(bits[1]))
    return tf.cast(mean + stddev * z, dtype)


def stateless_uniform(shape: Any, seed: Any, dtype: str = "float32", minval: float = 0.0,
                      maxval: float = 1.0) -> tf.Tensor:
    return tf.cast(minval + (maxval - minval) * _unit(_bits(shape, seed)), dtype)


def cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """``tf.cond`` whose branches may update optimizers under MirroredStrategy.

    An optimizer update inside a replica calls ``merge_call``, which MirroredStrategy
    refuses inside a ``tf.cond`` branch. So, with several replicas, go to the
    cross-replica context, branch there on the first replica's ``pred`` (a schedule on
    ``ctx.iterations``, the same on every replica), and run each replica's own branch
    function in the branch, as Keras' LossScaleOptimizer does for its finite check.
    """
    replica = tf.distribute.get_replica_context()
    if (replica is None or tf.distribute.get_strategy().num_replicas_in_sync == 1
            or tf.__internal__.distribute.strategy_supports_no_merge_call()):
        return tf.cond(pred, true_fn, false_fn)
    from tensorflow.python.distribute import values as values_lib

    def cross_replica(strategy, pred, true_fns, false_fns):
        def branch(fns):
            def run():
                out = strategy.extended.call_for_each_replica(lambda fn: fn(), args=(fns,))
                return tuple(strategy.experimental_local_results(out))

            return run

        first = strategy.experimental_local_results(pred)[0]
        per_replica = tf.cond(first, branch(true_fns), branch(false_fns))
        return tf.nest.map_structure(lambda *v: values_lib.PerReplica(v), *per_replica)

    return replica.merge_call(cross_replica, args=(pred, true_fn, false_fn))


def serving_function(model: Any, spec: Any) -> Any:
    """``tf.saved_model.save``'s ``serving_default`` for ``model``, taking inputs like ``spec``.

    ``spec`` is a structure of ``keras.KerasTensor`` (the step's ``call_spec``); the
    batch dimension is left free, as in Keras' own default signature.
    """
    signature = (tf.nest.map_structure(
        lambda t: tf.TensorSpec((None, *t.shape[1:]), t.dtype), spec),)

    @tf.function(input_signature=signature)
    def serving_default(inputs):
        return model(inputs)

    return serving_default


class StepTrainer:
    """Keras' TensorFlow trainer protocol for :class:`stepkit.StepModel`.

    The epoch loop runs ``steps_per_execution`` batches inside one
    ``tf.function``, so a resumed run skips the batches a mid-epoch backup
    already ran with a ``tf.cond`` in the step (see :mod:`stepkit.resume`).
    """

    def _build_scope(self) -> Any:
        """Where variables are created: the model's ``tf.distribute`` strategy scope."""
        return self.distribute_strategy.scope()

    def _multi_worker(self) -> bool:
        return is_multi_worker(self.distribute_strategy)

    def _set_resume_skip(self, batches: int) -> None:
        skip = self.__dict__.get("_skip_batches")
        if batches <= 0 and skip is None:
            return
        if skip is None:
            with self.distribute_strategy.scope():
                skip = untracked_counter()
            object.__setattr__(self, "_skip_batches", skip)  # not a weight: never saved
        skip.assign(batches)
        if batches > 0 and not self.__dict__.get("_traced_with_skip"):
            self.make_train_function(force=True)

    def train_step(self, data: Any) -> dict[str, Any]:
        skip = self.__dict__.get("_skip_batches")
        if skip is None:
            return self._train_body(data)
        object.__setattr__(self, "_traced_with_skip", True)

        def skip_batch():
            skip.assign_sub(1)
            return self._for_reduction(self.get_metrics_result())

        return cond(skip > 0, skip_batch, lambda: self._train_body(data))

    def test_step(self, data: Any) -> dict[str, Any]:
        return self._test_body(data)
