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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import keras

from stepkit.config import NoConfig
from stepkit.context import StepContext
from stepkit.errors import StepDefinitionError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

LOSS_KINDS = ("keras", "step", "none")
DATA_KINDS = (None, "images", "labeled-images", "vectors")

# Attributes Keras sets on a model instance (a role of that name would shadow them).
_RESERVED_ROLES = frozenset({
    "optimizer", "optimizers", "loss", "step", "networks", "compiled", "history",
    "stop_training", "name", "dtype", "built", "trainable", "jit_compile", "run_eagerly",
    "steps_per_execution",
    # StepModel's own public attributes beyond keras.Model's (a test pins this list)
    "build_from_data", "wrappers",
})


@attrs.frozen
class Batch:
    """One batch of data (or its symbolic spec), as ``build`` and ``check_data`` see it.

    ``x``, ``y`` and ``sample_weight`` are what ``keras.utils.unpack_x_y_sample_weight``
    makes of the batch (``y`` and ``sample_weight`` are None when absent). A batch of
    another structure (a tuple of four, say) is passed to the step as it is: then
    ``x`` is the whole batch and ``y``, ``sample_weight`` are None. ``data`` is
    always the batch as the dataset yields it. Each leaf is a ``keras.KerasTensor``
    (shape with a None batch size when the data has one).
    """

    x: Any
    y: Any = None
    sample_weight: Any = None
    data: Any = None

    @classmethod
    def from_data(cls, data: Any) -> Batch:
        if isinstance(data, tuple) and len(data) > 3:
            return cls(data, None, None, data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return cls(x, y, sample_weight, data)

    def describe(self) -> str:
        def shape(v):
            if v is None:
                return "None"
            return str(keras.tree.map_structure(
                lambda t: None if t is None else tuple(t.shape), v))

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
        directions: for tracked values, ``"up"`` (higher is better) or
            ``"down"``, so ``EarlyStopping(monitor=...)`` and
            ``ModelCheckpoint(monitor=...)`` need no ``mode=``; names ending in
            ``loss`` are ``"down"`` unless given here.
        default_batch_size: the batch size ``stepkit fit`` uses when
            ``--batch-size`` is not given (None: 32).
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
    directions: ClassVar[Mapping[str, str]] = {}
    default_batch_size: ClassVar[int | None] = None
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
                    or hasattr(keras.Model, role)):
                fail(f"role {role!r} must be an identifier that is not a StepModel attribute.")
        if not isinstance(cls.tracked, tuple) or len(set(cls.tracked)) != len(cls.tracked):
            fail(f"`tracked` must be a tuple of distinct names. Received: {cls.tracked!r}.")
        bad = {k: d for k, d in dict(cls.directions).items()
               if k not in cls.tracked or d not in ("up", "down")}
        if bad:
            fail(f"`directions` must map names in `tracked` {cls.tracked!r} to 'up' or 'down'. "
                 f"Received: {bad!r}.")
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

    def build_inputs(self, batch: Batch) -> Mapping[str, Any]:
        """What each role's network is called on, as symbolic tensors, from a symbolic batch.

        The default: the first role takes the data's inputs ``batch.x``. A step
        with several networks returns one entry per role, e.g. a GAN
        ``{"generator": keras.KerasTensor((None, latent_dim)),
        "discriminator": batch.x}``. Each value is the one argument the network
        is called with (a structure, such as a tuple, for a multi-input network).
        """
        return {self.roles[0]: batch.x}

    def build(self, ctx: StepContext, batch: Batch) -> None:
        """Create every network's variables from a symbolic ``batch``.

        The default calls each network on its :meth:`build_inputs` (networks
        already built are left alone); override it only when a network must be
        built some other way.
        """
        for role, inputs in self.build_inputs(batch).items():
            ctx.build_network(role, inputs)

    def call_spec(self, batch: Batch) -> Any:
        """The symbolic inputs of ``model(inputs)`` / ``model.predict``, from a symbolic batch.

        The default is the data's inputs ``batch.x``; a generative step returns
        its sampling inputs (e.g. ``keras.KerasTensor((None, latent_dim))``).
        ``model.export`` uses it as the serving signature.
        """
        return batch.x

    def sample_inputs(self, n: int, seed: int) -> Any:
        """What ``model.predict`` takes to draw about ``n`` samples (generative steps).

        Used by ``SampleGrid``, ``stepkit fit``'s grids and ``stepkit sample``. The
        default: ``n`` standard-normal latent vectors of the config's
        ``latent_dim``, drawn with ``numpy.random.default_rng(seed)``. A
        conditional step returns its latent vectors with class labels, one class
        per grid row (see :meth:`sample_grid_columns`).

        Raises:
            ValueError: the config has no integer ``latent_dim`` (override this).
        """
        import numpy as np

        dim = getattr(self.config, "latent_dim", None)
        if not isinstance(dim, int):
            raise ValueError(
                f"Step {self.name!r} cannot make sampling inputs: its config has no integer "
                "`latent_dim`. Override Step.sample_inputs(n, seed)."
            )
        return np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")

    def sample_grid_columns(self, n: int) -> int | None:
        """Columns of a grid of the samples of ``sample_inputs(n, seed)``; None: about square.

        A conditional step returns the samples per class, so each row is one class.
        """
        return None

    def build_state(self, ctx: StepContext) -> None:
        """Create extra step state with ``ctx.add_state`` (counters, EMA weights)."""

    def call(self, ctx: StepContext, inputs: Any, training: bool = False) -> Any:
        """What ``model(inputs)`` and ``model.predict`` compute: the first network."""
        return ctx.networks[self.roles[0]](inputs, training=training)

    def trainable_variables(self, ctx: StepContext, role: str) -> list[Any]:
        """Variables the optimizer ``role`` updates: the network of the same name."""
        return list(ctx.networks[role].trainable_variables)

    def regularization_losses(self, ctx: StepContext, role: str) -> list[Any]:
        """Regularisation terms ``ctx.minimize(role, ...)`` adds to the role's loss.

        The default: the ``losses`` of the network of the same name (kernel,
        bias and activity regularizers, ``add_loss`` terms), none for a frozen
        network or for an optimizer role without a network of its name.
        """
        net = ctx.networks.get(role)
        if net is None or not ctx.variables(role):
            return []
        return list(net.losses)

    def train_step(self, ctx: StepContext, data: Any) -> None:
        """One training step on ``data``; report values with ``ctx.track``."""
        raise NotImplementedError

    def test_step(self, ctx: StepContext, data: Any) -> None:
        """One evaluation step on ``data``; report values with ``ctx.track``."""
        raise NotImplementedError


__all__ = ["Batch", "Step", "StepContext"]
