"""The step contract: what a training algorithm implements, and what it is given.

A step is a class with a ``name``, an attrs ``config_class``, the ``roles`` of
its networks and methods for one training and one evaluation step. It never
touches Keras bookkeeping: it asks its :class:`StepContext` for gradients,
optimizer updates, tracked values and random numbers, and the framework
(:class:`stepkit.StepModel`) does the loss scaling, tracking and state.

Example::

    @attrs.frozen
    class HalfConfig:
        scale: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))

    class HalfMSE(stepkit.Step):
        name = "half-mse"
        config_class = HalfConfig

        def train_step(self, ctx, data):
            x, y, _ = ctx.unpack(data)
            net = ctx.networks["network"]

            def loss_fn():
                return self.config.scale * ops.mean((net(x, training=True) - y) ** 2)

            loss = ctx.minimize("network", loss_fn)
            ctx.track("loss", loss, ctx.batch_size(x))

        def test_step(self, ctx, data):
            x, y, _ = ctx.unpack(data)
            pred = ctx.networks["network"](x, training=False)
            ctx.track("loss", self.config.scale * ops.mean((pred - y) ** 2), ctx.batch_size(x))

Every loss a step hands to the framework is a *plain* mean over the replica's
local batch (what ``ops.mean`` gives). The framework divides it by the number
of replicas and applies mixed-precision loss scaling before differentiating,
and tracks the plain value.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import keras
from keras import ops

from stepkit import backend
from stepkit.config import NoConfig
from stepkit.errors import DataStructureError, StepDefinitionError

if TYPE_CHECKING:
    from stepkit.model import StepModel

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

LOSS_KINDS = ("keras", "step", "none")
DATA_KINDS = (None, "images", "labeled-images", "vectors")

# Attributes Keras sets on a model instance (a role of that name would shadow them).
_RESERVED_ROLES = frozenset({
    "optimizer", "optimizers", "loss", "step", "networks", "compiled", "history",
    "stop_training", "name", "dtype", "built", "trainable", "jit_compile", "run_eagerly",
    "steps_per_execution",
})


@attrs.frozen
class Batch:
    """One batch (or its symbolic spec) split into ``x``, ``y`` and ``sample_weight``."""

    x: Any
    y: Any = None
    sample_weight: Any = None

    @classmethod
    def from_data(cls, data: Any) -> Batch:
        return cls(*keras.utils.unpack_x_y_sample_weight(data))

    def describe(self) -> str:
        def shape(v):
            if v is None:
                return "None"
            return str(keras.tree.map_structure(lambda t: tuple(t.shape), v))

        return f"x={shape(self.x)}, y={shape(self.y)}, sample_weight={shape(self.sample_weight)}"


class Step:
    """Base class of every training step.

    Class attributes:
        name: the name users pass to ``StepModel(step=...)``; lower case,
            digits, ``-`` and ``_``.
        description: one line shown by ``stepkit list``.
        config_class: a frozen attrs class holding the step's settings.
        roles: names of the networks the step uses (``model.networks[role]``).
        optimizer_roles: names of the optimizers the step uses; by default one
            per network role. ``compile(optimizer={role: ...})`` uses these names.
        tracked: names of the values the step reports with ``ctx.track``; each
            becomes an epoch mean in ``fit``'s history. ``"loss"`` is Keras' own
            loss tracker.
        loss_kind: ``"keras"`` when ``compile(loss=...)`` is Keras' compiled loss
            (``ctx.compute_loss``), ``"step"`` when it is one loss function the
            step calls (``ctx.loss``), ``"none"`` when the step takes no loss.
        uses_compile_metrics: whether ``compile(metrics=...)`` applies (the step
            calls ``ctx.update_metrics``).
        data_kind: what ``stepkit fit`` feeds the step: ``"images"``,
            ``"labeled-images"`` or ``"vectors"`` (None: the command line guesses).
        generative: whether ``model.predict(z)`` maps latent vectors to samples
            (``stepkit fit`` then writes sample grids).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    roles: ClassVar[tuple[str, ...]] = ("network",)
    optimizer_roles: ClassVar[tuple[str, ...] | None] = None
    tracked: ClassVar[tuple[str, ...]] = ("loss",)
    loss_kind: ClassVar[str] = "none"
    uses_compile_metrics: ClassVar[bool] = False
    data_kind: ClassVar[str | None] = None
    generative: ClassVar[bool | None] = None

    def __init__(self, config: Any = None) -> None:
        self.config = self.config_class() if config is None else config

    # ------------------------------------------------------------ contract checks

    @classmethod
    def trained_roles(cls) -> tuple[str, ...]:
        return cls.roles if cls.optimizer_roles is None else cls.optimizer_roles

    @classmethod
    def check_definition(cls) -> None:
        """Raise :class:`StepDefinitionError` if the class breaks the contract."""
        from stepkit.model import StepModel

        where = f"{cls.__module__}.{cls.__qualname__}"

        def fail(msg: str) -> None:
            raise StepDefinitionError(f"Step class {where}: {msg}")

        if not isinstance(cls.name, str) or not _NAME.match(cls.name):
            fail(f"`name` must match {_NAME.pattern}. Received: name={cls.name!r}.")
        if not attrs.has(cls.config_class):
            fail(f"`config_class` must be an attrs class. Received: {cls.config_class!r}.")
        for attr in ("roles", "trained_roles"):
            names = getattr(cls, attr)() if attr == "trained_roles" else getattr(cls, attr)
            if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
                fail(f"`{attr}` must be a tuple of strings. Received: {names!r}.")
            if len(set(names)) != len(names):
                fail(f"`{attr}` has duplicates: {names!r}.")
        if not cls.roles:
            fail("`roles` must name at least one network.")
        for role in cls.roles:
            if (not role.isidentifier() or keyword.iskeyword(role) or role in _RESERVED_ROLES
                    or hasattr(StepModel, role)):
                fail(f"role {role!r} must be an identifier that is not a StepModel attribute.")
        if not isinstance(cls.tracked, tuple) or len(set(cls.tracked)) != len(cls.tracked):
            fail(f"`tracked` must be a tuple of distinct names. Received: {cls.tracked!r}.")
        if cls.data_kind not in DATA_KINDS:
            fail(f"`data_kind` must be one of {DATA_KINDS}. Received: {cls.data_kind!r}.")
        if cls.loss_kind not in LOSS_KINDS:
            fail(f"`loss_kind` must be one of {LOSS_KINDS}. Received: {cls.loss_kind!r}.")
        for method in ("train_step", "test_step"):
            if getattr(cls, method) is getattr(Step, method):
                fail(f"it must implement `{method}(self, ctx, data)`.")

    # ------------------------------------------------------------ defaults

    def default_networks(self, batch: Batch, missing: Sequence[str]) -> Mapping[str, Any]:
        """Networks for the ``missing`` roles, sized from a symbolic ``batch``.

        The default has none: users must pass every network.
        """
        raise ValueError(
            f"Step {self.name!r} has no default networks: pass "
            f"networks={{{', '.join(repr(r) + ': ...' for r in missing)}}} "
            f"(roles: {', '.join(self.roles)})."
        )

    def default_optimizers(self) -> Mapping[str, Any]:
        """Optimizers used when ``compile()`` gets none (Keras' default: RMSprop)."""
        return {role: "rmsprop" for role in self.trained_roles()}

    def default_loss(self) -> Any:
        """Loss used when ``compile()`` gets none (for ``loss_kind == "step"``)."""
        return None

    # ------------------------------------------------------------ hooks

    def check_data(self, batch: Batch) -> None:
        """Raise :class:`DataStructureError` if ``batch`` (symbolic) does not fit the step."""

    def build(self, ctx: StepContext, batch: Batch) -> None:
        """Create every network's variables from a symbolic ``batch``.

        The default calls the first role's network on ``batch.x``.
        """
        net = ctx.networks[self.roles[0]]
        if not net.built:
            keras.backend.compute_output_spec(net, batch.x, training=False)

    def build_state(self, ctx: StepContext) -> None:
        """Create extra step state with ``ctx.add_state`` (counters, EMA weights)."""

    def call(self, ctx: StepContext, inputs: Any, training: bool = False) -> Any:
        """What ``model(inputs)`` and ``model.predict`` compute: the first network."""
        return ctx.networks[self.roles[0]](inputs, training=training)

    def trainable_variables(self, ctx: StepContext, role: str) -> list[Any]:
        """Variables the optimizer ``role`` updates: the network of the same name."""
        return list(ctx.networks[role].trainable_variables)

    def train_step(self, ctx: StepContext, data: Any) -> None:
        """One training step on ``data``; report values with ``ctx.track``."""
        raise NotImplementedError

    def test_step(self, ctx: StepContext, data: Any) -> None:
        """One evaluation step on ``data``; report values with ``ctx.track``."""
        raise NotImplementedError


class StepContext:
    """What a step is given: its networks, optimizers and the framework's helpers.

    A context belongs to one :class:`StepModel`. Wrappers that stack over a step
    (EMA, gradient accumulation, SAM) subclass it and override
    :meth:`gradients` or :meth:`apply_gradients`; steps only call these methods.
    """

    def __init__(self, model: StepModel) -> None:
        self.model = model

    # ------------------------------------------------------------ what the step uses

    @property
    def step(self) -> Step:
        return self.model.step

    @property
    def config(self) -> Any:
        return self.model.step.config

    @property
    def networks(self) -> Mapping[str, Any]:
        return self.model.networks

    @property
    def optimizers(self) -> Mapping[str, Any]:
        return self.model.optimizers

    @property
    def iterations(self) -> Any:
        """Training steps run so far (an int64 variable: use it in ``ops.cond``)."""
        return self.model._step_counter

    def unpack(self, data: Any) -> tuple[Any, Any, Any]:
        """``(x, y, sample_weight)`` from a batch, like ``keras.utils.unpack_x_y_sample_weight``."""
        return keras.utils.unpack_x_y_sample_weight(data)

    @staticmethod
    def batch_size(x: Any) -> Any:
        """The local batch size of ``x`` (its first tensor's leading dimension)."""
        first = next(t for t in keras.tree.flatten(x) if t is not None)
        return ops.shape(first)[0]

    # ------------------------------------------------------------ losses

    def loss(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The compiled step loss (``loss_kind == "step"``), as a plain mean."""
        fn = self.model._step_loss
        if fn is None:
            raise StepDefinitionError(
                f"Step {self.step.name!r} called ctx.loss() but has no loss: its loss_kind is "
                f"{self.step.loss_kind!r}. Set loss_kind = 'step' and a default_loss()."
            )
        value = fn(y_true, y_pred, sample_weight=sample_weight)
        return _unscale(value)

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None,
                     training: bool = True) -> Any:
        """Keras' compiled loss plus regularisation losses, as a plain mean."""
        loss = self.model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                        training=training)
        return _unscale(loss)

    def regularization_loss(self, role: str) -> Any:
        """Sum of the regularisation losses of network ``role`` (0 when it has none)."""
        losses = self.networks[role].losses
        if not losses:
            return ops.convert_to_tensor(0.0)
        return ops.sum(ops.stack([ops.cast(v, "float32") for v in losses]))

    # ------------------------------------------------------------ updates

    def gradients(self, role: str, loss_fn: Callable[[], Any]) -> tuple[list[Any], Any]:
        """Gradients of ``loss_fn()`` for the variables of optimizer ``role``.

        The plain loss is divided by the number of replicas and scaled for mixed
        precision before differentiating. Returns ``(grads, loss_fn())``.
        """
        optimizer = self.model._optimizer_for(role)
        variables = self.model._variables_for(role)

        def transform(loss: Any) -> Any:
            return optimizer.scale_loss(_scale(loss))

        return backend.gradients(loss_fn, variables, transform)

    def apply_gradients(self, role: str, grads: Sequence[Any]) -> None:
        """Apply ``grads`` with optimizer ``role`` (unscales and skips non-finite steps)."""
        optimizer = self.model._optimizer_for(role)
        variables = self.model._variables_for(role)
        optimizer.apply_gradients(zip(grads, variables, strict=True))

    def minimize(self, role: str, loss_fn: Callable[[], Any]) -> Any:
        """One optimizer update of ``role`` on ``loss_fn()``; returns ``loss_fn()``'s output.

        ``loss_fn`` takes no argument and returns a plain scalar loss, or a tuple
        whose first element is the loss (the rest is passed back untouched).
        """
        grads, out = self.gradients(role, loss_fn)
        self.apply_gradients(role, grads)
        return out

    def input_gradients(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
        """Differentiable gradient of ``sum(fn(inputs))`` w.r.t. ``inputs`` (penalties)."""
        return backend.input_gradients(fn, inputs)

    # ------------------------------------------------------------ reporting

    def track(self, name: str, value: Any, batch_size: Any) -> None:
        """Add a plain per-replica ``value`` to the epoch mean ``name``, weighted by batch size."""
        tracker = self.model._tracker_for(name)
        tracker.update_state(value, sample_weight=batch_size)

    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Update the metrics given to ``compile(metrics=..., weighted_metrics=...)``."""
        if self.model._compile_metrics is not None:
            self.model._compile_metrics.update_state(y, y_pred, sample_weight)

    # ------------------------------------------------------------ randomness and state

    def _next_seed(self) -> Any:
        seed = ops.cast(self.model._seed_generator.next(), "int32")
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
        return self.model._add_step_state(name, shape, dtype, initializer)

    @property
    def state(self) -> Mapping[str, Any]:
        """The variables created with :meth:`add_state`."""
        return self.model._step_state

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


def _scale(loss: Any) -> Any:
    n = backend.num_replicas()
    return loss if n == 1 else ops.multiply(loss, ops.cast(1.0 / n, loss.dtype))


def _unscale(loss: Any) -> Any:
    n = backend.num_replicas()
    return loss if n == 1 else ops.multiply(loss, ops.cast(n, loss.dtype))
