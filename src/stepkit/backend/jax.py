"""JAX implementations of the backend pieces (see :mod:`stepkit.backend`).

Keras' JAX trainer is stateless: ``train_step(state, data)`` receives every
variable's value and returns ``(logs, new_state)`` (keras-io, "Customizing what
happens in fit() with JAX"). stepkit runs the step's ordinary, stateful-looking
code inside one ``keras.StatelessScope`` that maps every variable of the model
(networks, every role's optimizer, metrics, the framework's own) to its value
in ``state``, and reads the new values back when the step returns. Inside it:

- ``value_and_grad`` differentiates with ``jax.value_and_grad`` a pure function
  of the role's trainable values, which runs the step's loss in a nested scope
  and returns every other variable's new value (BatchNorm statistics, seed
  generators) as auxiliary output, written back afterwards;
- ``apply_gradients`` uses the optimizer's ``stateless_apply`` (Keras' own
  ``apply`` branches with side effects, which ``jax.lax.cond`` cannot hold);
- ``cond`` runs each branch as a pure function of the variables' values under
  ``jax.lax.cond``, so branches may update optimizers (``ctx.minimize``).

With ``keras.distribution`` (``DataParallel``, ``ModelParallel``) the step is
traced once over the *global* batch and sharded by XLA, so it sees one replica.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras

from stepkit.backend.common import PythonLoopTrainer
from stepkit.errors import StepDefinitionError

_ACTIVE: list[list[Any]] = []  # the variables mapped by the step being traced


def _refs(variables: Sequence[Any] = ()) -> list[Any]:
    """The variables of the step being traced; outside a step (eager calls), ``variables``.

    Outside a step nothing maps the model's other variables, so updates a forward
    pass makes to them (BatchNorm statistics) are not kept: call the helpers
    inside ``train_step`` / ``test_step`` to keep them.
    """
    return _ACTIVE[-1] if _ACTIVE else list(variables)


class _TrackingScope(keras.StatelessScope):
    """A ``StatelessScope`` that remembers which variables were assigned in it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assigned: dict[int, Any] = {}

    def add_update(self, update: Any) -> None:
        super().add_update(update)
        self.assigned[id(update[0])] = update[0]


def _lost_updates(scope: _TrackingScope, refs: list[Any]) -> None:
    """Refuse assignments to variables outside the step's state: JAX would drop them."""
    known = {id(v) for v in refs}
    lost = [v for i, v in scope.assigned.items() if i not in known]
    if lost:
        names = ", ".join(sorted({getattr(v, "path", None) or repr(v) for v in lost}))
        raise StepDefinitionError(
            f"The step assigned variable(s) {names}, which are not part of the model's state, "
            "so on JAX (which runs the step statelessly) the new values would be lost. Create "
            "step state with ctx.add_state(...) in Step.build_state, wrapper state with "
            "Wrapper.add_state(...) in Wrapper.build_state, and draw noise with "
            "ctx.normal/ctx.uniform instead of a SeedGenerator of your own.")


@contextlib.contextmanager
def _mapped(refs: list[Any], values: Sequence[Any],
            check: bool = True) -> Iterator[keras.StatelessScope]:
    with _TrackingScope(state_mapping=list(zip(refs, values, strict=True)),
                        collect_losses=True) as scope:
        _ACTIVE.append(refs)
        try:
            yield scope
        finally:
            _ACTIVE.pop()
    if check:
        _lost_updates(scope, refs)


def _current(refs: list[Any]) -> list[Any]:
    return [v.value for v in refs]


def _read(scope: keras.StatelessScope, refs: list[Any]) -> list[Any]:
    out = []
    for v in refs:
        value = scope.get_current_value(v)
        out.append(v.value if value is None else value)
    return out


def _write(refs: list[Any], values: Sequence[Any], skip: set[int] = frozenset()) -> None:
    for i, (v, value) in enumerate(zip(refs, values, strict=True)):
        if i not in skip:
            v.assign(value)


def run_stateless(groups: Sequence[Sequence[Any]], state: Sequence[Sequence[Any]],
                  body: Callable[[], Any]) -> tuple[Any, tuple[list[Any], ...]]:
    """Run ``body()`` with every variable of ``groups`` set to its value in ``state``.

    Returns ``body``'s output and the new values, grouped like ``state``.
    """
    refs = [v for group in groups for v in group]
    values = [x for group in state for x in group]
    with _mapped(refs, values) as scope:
        out = body()
        new = _read(scope, refs)
    grouped, start = [], 0
    for group in groups:
        grouped.append(new[start:start + len(group)])
        start += len(group)
    return out, tuple(grouped)


def value_and_grad(fn: Callable[[], tuple[Any, Any]],
                   variables: Sequence[Any]) -> tuple[list[Any], Any]:
    """Gradients of ``fn()[0]`` w.r.t. ``variables``, and ``fn()[1]``; see the module doc."""
    inside = bool(_ACTIVE)  # outside a step, other variables' updates are not kept
    refs = _refs(variables)
    index = {id(v): i for i, v in enumerate(refs)}
    missing = [v.path for v in variables if id(v) not in index]
    if missing:
        raise RuntimeError(f"Variables {missing} are not part of the model's state.")
    positions = [index[id(v)] for v in variables]
    current = _current(refs)

    def pure(trainable: list[Any]) -> tuple[Any, tuple[Any, list[Any]]]:
        values = list(current)
        for p, t in zip(positions, trainable, strict=True):
            values[p] = t
        with _mapped(refs, values, check=inside) as scope:
            target, aux = fn()
            new = _read(scope, refs)
        return target, (aux, new)

    (_, (aux, new)), grads = jax.value_and_grad(pure, has_aux=True)(
        [current[p] for p in positions])
    _write(refs, new, skip=set(positions))
    return list(grads), aux


def input_gradients(fn: Callable[[Any], Any], inputs: Any) -> Any:
    """Gradient of ``sum(fn(inputs))`` with respect to ``inputs`` (gradient penalties, R1)."""
    inside = bool(_ACTIVE)
    refs = _refs()
    current = _current(refs)

    def pure(x: Any) -> tuple[Any, list[Any]]:
        with _mapped(refs, current, check=inside) as scope:
            out = jnp.sum(fn(x))
            new = _read(scope, refs)
        return out, new

    grads, new = jax.grad(pure, has_aux=True)(inputs)
    _write(refs, new)
    return grads


def apply_gradients(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> None:
    """One update with ``optimizer.stateless_apply``, written back into the step's scope."""
    if not optimizer.built:
        raise RuntimeError(
            f"Optimizer {optimizer.name!r} is not built; stepkit builds every role's "
            "optimizer before the first step.")
    new_vars, new_opt = optimizer.stateless_apply(
        _current(optimizer.variables), list(grads), _current(variables))
    _write(list(variables), new_vars)
    _write(list(optimizer.variables), new_opt)


def cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """``jax.lax.cond`` over the model's state: branches may update variables."""
    if not _ACTIVE:  # eager, outside a step: a Python branch
        return true_fn() if bool(pred) else false_fn()
    refs = _refs()

    def branch(fn: Callable[[], Any]) -> Callable[[list[Any]], Any]:
        def run(values: list[Any]) -> tuple[Any, list[Any]]:
            with _mapped(refs, values) as scope:
                out = fn()
                new = _read(scope, refs)
            return out, new

        return run

    out, new = jax.lax.cond(jnp.asarray(pred, bool).reshape(()), branch(true_fn),
                            branch(false_fn), _current(refs))
    _write(refs, new)
    return out


def num_replicas() -> int:
    """1: under ``keras.distribution`` the step is traced once over the global batch."""
    return 1


def all_reduce_sum(values: Any) -> list[Any]:
    """``values``: the step is traced once over the global batch, so sums are global."""
    return list(values)


def replica_id() -> Any:
    return jnp.asarray(0, jnp.int32)


def local_value(v: Any) -> Any:
    return v


def dataset_spec(dataset: Any) -> Any:
    return None


def is_multi_worker(strategy: Any) -> bool:
    return False


def _key(seed: Any) -> Any:
    return jax.random.wrap_key_data(jnp.asarray(seed).astype(jnp.uint32).reshape((2,)),
                                    impl="threefry2x32")


def stateless_normal(shape: Any, seed: Any, dtype: str = "float32", mean: float = 0.0,
                     stddev: float = 1.0) -> Any:
    """Normal draws from the threefry key made of ``seed`` (an int pair)."""
    z = jax.random.normal(_key(seed), tuple(shape), jnp.float32)
    return (mean + stddev * z).astype(dtype)


def stateless_uniform(shape: Any, seed: Any, dtype: str = "float32", minval: float = 0.0,
                      maxval: float = 1.0) -> Any:
    u = jax.random.uniform(_key(seed), tuple(shape), jnp.float32, minval, maxval)
    return u.astype(dtype)


def serving_function(model: Any, spec: Any) -> Any:
    """``None``: on JAX, Keras' exporters trace ``model`` itself (``jax2tf`` for a SavedModel).

    ``tf.saved_model.save`` takes no Keras model on JAX (it is not a TensorFlow
    trackable, as for a plain ``keras.Model``): ``model.export(path)`` writes the
    SavedModel.
    """
    return None


class _AllOptimizers:
    """Stands for ``model.optimizer`` while Keras gathers the state: every role's variables."""

    def __init__(self, optimizers: Sequence[Any]) -> None:
        self.variables = [v for opt in optimizers for v in opt.variables]


class StepTrainer(PythonLoopTrainer):
    """Keras' JAX trainer protocol for :class:`stepkit.StepModel`.

    Keras' JAX trainer carries one optimizer's variables in the state; a step
    has one optimizer per role, so while Keras gathers, syncs or shards the
    state, ``self.optimizer`` stands for all of them (in role order).
    """

    def _state_refs(self, optimizers: bool) -> list[list[Any]]:
        groups = [self.trainable_variables, self.non_trainable_variables]
        if optimizers:
            groups.append([v for opt in self._optimizers_in_order() for v in opt.variables])
        groups.append(self.metrics_variables)
        return groups

    def _optimizers_in_order(self) -> list[Any]:
        return list((getattr(self, "_role_optimizers", None) or {}).values())

    def train_step(self, state: Any, data: Any) -> tuple[Any, Any]:
        return run_stateless(self._state_refs(True), state, lambda: self._train_body(data))

    def test_step(self, state: Any, data: Any) -> tuple[Any, Any]:
        return run_stateless(self._state_refs(False), state, lambda: self._test_body(data))

    @contextlib.contextmanager
    def _every_optimizer(self) -> Iterator[None]:
        original = self.__dict__.get("optimizer")
        if getattr(self, "_role_optimizers", None) and len(self._role_optimizers) > 1:
            object.__setattr__(self, "optimizer", _AllOptimizers(self._optimizers_in_order()))
        try:
            yield
        finally:
            object.__setattr__(self, "optimizer", original)

    def _get_jax_state(self, *args: Any, **kwargs: Any) -> Any:
        with self._every_optimizer():
            state = super()._get_jax_state(*args, **kwargs)
        # fit donates the state's buffers: two variables holding one array (after
        # `shadow.assign(var)`, say) would be donated twice, which XLA refuses.
        seen: set[int] = set()

        def unique(value: Any) -> Any:
            if id(value) in seen:
                return jnp.copy(value)
            seen.add(id(value))
            return value

        return tuple([unique(v) for v in group] for group in state)

    def jax_state_sync(self) -> None:
        with self._every_optimizer():
            super().jax_state_sync()

    def _get_state_sharding_spec(self) -> Any:
        with self._every_optimizer():
            return super()._get_state_sharding_spec()

    def _purge_model_variables(self, *args: Any, **kwargs: Any) -> None:
        with self._every_optimizer():
            super()._purge_model_variables(*args, **kwargs)
