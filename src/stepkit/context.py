"""``StepContext``: everything a step is given, and the only way it touches Keras state."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import keras
from keras import ops

from stepkit import backend, losses
from stepkit.errors import DataStructureError, StepDefinitionError, no_gradient

if TYPE_CHECKING:
    from stepkit.step import Batch, Step


def _total(terms: Sequence[Any]) -> Any:
    """The float32 sum of regularisation ``terms`` (0 when there are none)."""
    sums = [ops.sum(ops.cast(v, "float32")) for v in terms]
    if not sums:
        return ops.zeros(())
    return sums[0] if len(sums) == 1 else ops.sum(ops.stack(sums))


class StepHost(Protocol):
    """What the framework gives a :class:`StepContext`; :class:`stepkit.StepModel` is one.

    This is the whole dependency of the context on the model: steps talk to the
    context, the context to its host and to :mod:`stepkit.backend`, and nothing
    of this package imports the model but the model itself.
    """

    model: Any  # the keras.Model being trained
    step: Step
    networks: Mapping[str, Any]
    optimizers: Mapping[str, Any]
    iterations: Any  # int64 variable: training steps run so far
    step_loss: Callable[[Any, Any, Any], Any] | None  # compile(loss=) of a "step" loss_kind
    compiled_loss: Callable[[Any, Any, Any], Any] | None  # Keras' compiled loss
    compiled_metrics: Any  # Keras' compiled metrics (update_state), or None
    network_losses: list[Any]  # add_loss and regularizer terms of every network
    step_state: Mapping[str, Any]

    def variables_for(self, role: str) -> list[Any]: ...
    def optimizer_for(self, role: str) -> Any: ...
    def tracker_for(self, name: str) -> Any: ...
    def next_seed(self) -> Any: ...
    def add_step_state(self, name: str, shape: Any, dtype: str, initializer: Any) -> Any: ...


def missing_targets(step_name: str, received: str) -> DataStructureError:
    """The error for a batch without targets when ``compile()`` was given a loss."""
    return DataStructureError(
        f"Step {step_name!r} needs targets for the loss given to compile(): pass fit(x, y) "
        f"or a dataset of (x, y) or (x, y, sample_weight). Received {received}. (A network "
        "that adds its own losses trains on x alone when compile() gets no loss.)"
    )


class StepContext:
    """What a step is given: its networks, optimizers and the framework's helpers.

    A context belongs to one :class:`stepkit.StepModel`. Wrappers that stack over
    a step (EMA, gradient accumulation, SAM) subclass it and override
    :meth:`gradients` or :meth:`apply_gradients`; steps only call these methods.

    Losses: every loss a step hands to :meth:`minimize` or :meth:`gradients` is a
    *plain* mean over the replica's local batch (what ``ops.mean`` gives). The
    framework adds the role's regularisation losses (kernel regularizers and
    ``add_loss`` terms of the role's network, as ``keras.Model`` does), divides
    by the number of replicas and applies the role's mixed-precision loss scale
    before differentiating, and returns the plain total.
    """

    def __init__(self, host: StepHost) -> None:
        self._host = host
        self._warned_frozen: set[str] = set()

    # ------------------------------------------------------------ what the step uses

    @property
    def model(self) -> Any:
        """The ``keras.Model`` being trained; ``ctx.model(x)`` is the step's ``call``."""
        return self._host.model

    @property
    def step(self) -> Step:
        return self._host.step

    @property
    def config(self) -> Any:
        return self._host.step.config

    @property
    def networks(self) -> Mapping[str, Any]:
        return self._host.networks

    @property
    def optimizers(self) -> Mapping[str, Any]:
        return self._host.optimizers

    @property
    def iterations(self) -> Any:
        """Training steps run so far (an int64 variable: use it in ``ops.cond``)."""
        return self._host.iterations

    def variables(self, role: str) -> list[Any]:
        """The variables optimizer ``role`` updates (empty for a frozen network)."""
        return self._host.variables_for(role)

    def unpack(self, data: Any) -> tuple[Any, Any, Any]:
        """``(x, y, sample_weight)`` from a batch, like ``keras.utils.unpack_x_y_sample_weight``."""
        return keras.utils.unpack_x_y_sample_weight(data)

    @staticmethod
    def batch_size(x: Any) -> Any:
        """The local batch size of ``x`` (its first tensor's leading dimension)."""
        first = next(t for t in keras.tree.flatten(x) if t is not None)
        return ops.shape(first)[0]

    # ------------------------------------------------------------ building

    def build_network(self, role: str, *inputs: Any, **call_kwargs: Any) -> Any:
        """Create network ``role``'s variables by calling it on symbolic ``inputs``.

        ``inputs`` are ``keras.KerasTensor`` structures (a :class:`Batch` from
        ``build`` holds them), e.g. ``ctx.build_network("discriminator", batch.x)``
        or ``ctx.build_network("generator", keras.KerasTensor((None, 128)))``.
        Works for every network Keras builds on first call: a ``Sequential``
        without ``keras.Input``, a subclassed ``keras.Model``, a bare layer.
        A network already built is left alone. Returns the symbolic output
        (None when the network was already built).

        Raises:
            ValueError: the network cannot be called on these inputs.
        """
        net = self.networks[role]
        if net.built:
            return None
        if "training" not in call_kwargs:
            call_kwargs["training"] = False
        try:
            return net(*inputs, **call_kwargs)
        except Exception as e:
            shapes = keras.tree.map_structure(
                lambda t: None if t is None else tuple(t.shape), inputs)
            raise ValueError(
                f"Could not build network {role!r} ({type(net).__name__}) of step "
                f"{self.step.name!r} by calling it on inputs of shape {shapes}: "
                f"{type(e).__name__}: {e}. Build it yourself before fit() (call it on a "
                "batch, or start it with keras.Input), or check the data's structure."
            ) from e

    # ------------------------------------------------------------ losses

    def loss(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The step's loss (``loss_kind == "step"``) on one batch, as a plain mean.

        Any loss form Keras accepts works (a name, a function returning
        per-sample values, a ``keras.losses.Loss`` with any reduction); it is
        reduced as ``keras.Model.compile(loss=...)`` reduces it, with
        ``sample_weight`` applied (see :mod:`stepkit.losses`).
        """
        fn = self._host.step_loss
        if fn is None:
            raise StepDefinitionError(
                f"Step {self.step.name!r} called ctx.loss() but has no loss: its loss_kind is "
                f"{self.step.loss_kind!r}. Set loss_kind = 'step' and a default_loss()."
            )
        return fn(y_true, y_pred, sample_weight)

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None,
                     training: bool = True) -> Any:
        """Keras' compiled loss (``compile(loss=..., loss_weights=...)``), as a plain mean.

        Regularisation losses are not in it: :meth:`minimize` adds the trained
        role's; a test step adds :meth:`regularization_loss` to report what
        Keras reports.

        Raises:
            ValueError: there is no compiled loss and the networks add none.
        """
        del x, training
        compiled = self._host.compiled_loss
        if compiled is None:
            if not self._host.network_losses:
                raise ValueError(
                    "No loss to compute. Provide a `loss` argument in `compile()`, or use a "
                    "network that adds its own losses (add_loss, regularizers)."
                )
            return ops.zeros(())
        if y is None:
            raise missing_targets(self.step.name, "a batch without y")
        value = compiled(y, y_pred, sample_weight)
        if value is None:
            return ops.zeros(())
        return losses.unscale(value)

    def regularization_loss(self, role: str) -> Any:
        """Sum of the regularisation losses of role ``role`` (0 when it has none).

        They are the kernel/bias/activity regularizers and ``add_loss`` terms of
        the role's network (:meth:`Step.regularization_losses`), from the last
        call of the network. A frozen role contributes nothing.
        """
        return _total(self.step.regularization_losses(self, role))

    # ------------------------------------------------------------ updates

    def gradients(self, role: str, loss_fn: Callable[[], Any],
                  regularization: bool = True) -> tuple[list[Any], Any]:
        """Gradients of ``loss_fn()`` for the variables of optimizer ``role``.

        ``loss_fn`` takes no argument and returns a plain scalar loss, or a tuple
        whose first element is the loss (the rest is passed back untouched).
        With ``regularization=True`` the role's :meth:`regularization_loss` is
        added (as Keras adds ``model.losses``). The total is divided by the
        number of replicas and scaled for mixed precision before
        differentiating.

        Returns:
            ``(grads, out)``: one gradient per variable of the role, and
            ``loss_fn()``'s output with its loss replaced by the plain total.
        """
        optimizer = self._host.optimizer_for(role)
        variables = self._host.variables_for(role)

        def target() -> tuple[Any, Any]:
            out = loss_fn()
            loss, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
            terms = self.step.regularization_losses(self, role) if regularization else []
            if terms:  # no term at all: add nothing (on torch every op runs, even a zero)
                loss = loss + ops.cast(_total(terms), loss.dtype)
            total = loss if rest is None else (loss, *rest)
            return optimizer.scale_loss(losses.scale(loss)), total

        if not variables:
            self._warn_frozen(role)
            return [], target()[1]
        grads, out = backend.value_and_grad(target, variables)
        if all(g is None for g in grads):  # JAX gives zeros instead: nothing to see there
            raise no_gradient(self.step.name, role, len(variables), keras.backend.backend())
        return grads, out

    def apply_gradients(self, role: str, grads: Sequence[Any]) -> None:
        """Apply ``grads`` with optimizer ``role`` (unscales and skips non-finite steps).

        A role with no trainable variables (a frozen network) is skipped, with a
        warning, as ``keras.Model.fit`` skips a model without trainable weights.
        """
        variables = self._host.variables_for(role)
        if not variables:
            self._warn_frozen(role)
            return
        optimizer = self._host.optimizer_for(role)
        if len(grads) != len(variables):
            raise StepDefinitionError(
                f"ctx.apply_gradients({role!r}, grads): got {len(grads)} gradients for the "
                f"{len(variables)} variables of role {role!r}. Pass the grads that "
                "ctx.gradients() returned for this role.")
        backend.apply_gradients(optimizer, list(grads), variables)

    def minimize(self, role: str, loss_fn: Callable[[], Any], regularization: bool = True) -> Any:
        """One optimizer update of ``role`` on ``loss_fn()``; returns the plain total loss.

        See :meth:`gradients` for ``loss_fn`` and ``regularization``. A step may
        call ``minimize`` for one role several times in one step (e.g. several
        discriminator updates per batch): each call is one optimizer update.
        """
        grads, out = self.gradients(role, loss_fn, regularization=regularization)
        self.apply_gradients(role, grads)
        return out

    def _warn_frozen(self, role: str) -> None:
        if role not in self._warned_frozen:
            self._warned_frozen.add(role)
            warnings.warn(
                f"Role {role!r} of step {self.step.name!r} has no trainable variables (is its "
                "network frozen?): its update is skipped. Set network.trainable = True and "
                "compile() again to train it.", stacklevel=3)

    def input_gradients(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
        """Differentiable gradient of ``sum(fn(inputs))`` w.r.t. ``inputs`` (penalties)."""
        return backend.input_gradients(fn, inputs)

    # ------------------------------------------------------------ reporting

    def track(self, name: str, value: Any, batch_size: Any) -> None:
        """Add a plain per-replica ``value`` to the epoch mean ``name``, weighted by batch size."""
        tracker = self._host.tracker_for(name)
        tracker.update_state(value, sample_weight=batch_size)

    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Update the metrics given to ``compile(metrics=..., weighted_metrics=...)``."""
        metrics = self._host.compiled_metrics
        if metrics is not None:
            metrics.update_state(y, y_pred, sample_weight)

    # ------------------------------------------------------------ randomness and state

    def _next_seed(self) -> Any:
        seed = ops.cast(self._host.next_seed(), "int32")
        return seed + ops.stack([ops.convert_to_tensor(0, "int32"), backend.replica_id()])

    def normal(self, shape: Any, dtype: str = "float32", mean: float = 0.0,
               stddev: float = 1.0) -> Any:
        """Normal noise from the model's seed generator, different on each replica."""
        return backend.stateless_normal(shape, self._next_seed(), dtype, mean, stddev)

    def uniform(self, shape: Any, dtype: str = "float32", minval: float = 0.0,
                maxval: float = 1.0) -> Any:
        """Uniform noise in ``[minval, maxval)`` from the model's seed generator."""
        return backend.stateless_uniform(shape, self._next_seed(), dtype, minval, maxval)

    def add_state(self, name: str, shape: Any = (), dtype: str = "float32",
                  initializer: Any = "zeros") -> Any:
        """Create a saved, non-trainable variable owned by the model (call in ``build_state``)."""
        return self._host.add_step_state(name, shape, dtype, initializer)

    @property
    def state(self) -> Mapping[str, Any]:
        """The variables created with :meth:`add_state`."""
        return self._host.step_state

    def cond(self, pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
        """``ops.cond``: use it for schedules, which run inside a compiled graph.

        Branches may call ``ctx.minimize``, also under ``MirroredStrategy``.
        """
        return backend.cond(pred, true_fn, false_fn)

    @staticmethod
    def fail_on_sample_weight(step: Step, batch: Batch) -> None:
        """For ``check_data`` of steps that cannot use sample or class weights."""
        if batch.sample_weight is not None:
            raise DataStructureError(
                f"Step {step.name!r} cannot use sample weights, and they would be silently "
                f"ignored. Received a batch with {batch.describe()}. Remove sample_weight= "
                "and class_weight= from fit()/evaluate()."
            )
