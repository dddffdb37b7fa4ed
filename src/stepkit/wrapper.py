"""The wrapper contract: a training technique that modifies any step's training step.

A wrapper (SAM, weight EMA, gradient accumulation, adversarial training,
MixUp...) is not an algorithm of its own: it changes how *some* step takes its
gradients, applies them, or what data it sees. Like a step it has a ``name``,
an attrs ``config_class`` and is registered through the ``stepkit`` entry-point
group (hook ``stepkit_register_wrappers``). Users stack wrappers by name::

    StepModel(net, step="supervised", wrappers=["sam", {"name": "ema", "decay": 0.999}])

**Order.** The list goes from the outermost wrapper to the innermost: each
hook of the first wrapper runs first and calls ``inner`` to reach the next one,
the last wrapper's ``inner`` is the step itself (for ``train_step``,
``test_step``, ``call``) or the framework (for ``gradients``,
``apply_gradients``, ``compute_loss``). ``["accumulate", "sam"]`` therefore
accumulates SAM gradients; ``["sam", "accumulate"]`` perturbs the weights
with the gradient of one micro-batch. A wrapper refuses orders or partners it
cannot work with in :meth:`Wrapper.check_stack`.

**Roles.** ``gradients`` and ``apply_gradients`` hooks only run for the roles a
wrapper applies to: by default every trained role of the step; a spec may name
some (``{"name": "ema", "roles": ["generator"]}``).

Every hook has a default that calls ``inner`` unchanged, so a wrapper overrides
only what it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from stepkit.config import NoConfig, structure_config, unstructure_config
from stepkit.errors import StepDefinitionError, WrapperError, WrapperStackError

if TYPE_CHECKING:
    from stepkit.context import StepContext
    from stepkit.step import Batch, Step


class Wrapper:
    """Base class of every step wrapper.

    Class attributes:
        name: the name users pass in ``wrappers=[...]`` / ``--wrap``; lower case,
            digits, ``-`` and ``_``.
        description: one line shown by ``stepkit list``.
        config_class: a frozen attrs class holding the wrapper's settings.
        per_role: whether the wrapper applies to roles (its ``gradients`` /
            ``apply_gradients`` hooks); False for one that changes the data.

    Attributes:
        config: the config instance.
        roles: the roles it applies to, set when it is bound to a step.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    per_role: ClassVar[bool] = True

    def __init__(self, config: Any = None, roles: Sequence[str] | None = None) -> None:
        self.config = self.config_class() if config is None else config
        self.requested_roles = None if roles is None else tuple(roles)
        self.roles: tuple[str, ...] = ()

    # ------------------------------------------------------------ checks

    @classmethod
    def check_definition(cls) -> None:
        """Raise :class:`StepDefinitionError` if the class breaks the wrapper contract."""
        from stepkit.step import _NAME

        where = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(cls.name, str) or not _NAME.match(cls.name):
            raise StepDefinitionError(
                f"Wrapper class {where}: `name` must match {_NAME.pattern}. "
                f"Received: name={cls.name!r}.")
        if not attrs.has(cls.config_class):
            raise StepDefinitionError(
                f"Wrapper class {where}: `config_class` must be an attrs class. "
                f"Received: {cls.config_class!r}.")

    def bind(self, step: Step) -> None:
        """Resolve the roles for ``step`` and check the wrapper can wrap it.

        Raises:
            WrapperError: a requested role is not a trained role of the step, or
                :meth:`check_step` refuses the step.
        """
        trained = step.trained_roles()
        if self.requested_roles is None:
            self.roles = tuple(trained) if self.per_role else ()
        else:
            unknown = [r for r in self.requested_roles if r not in trained]
            if unknown or not self.requested_roles:
                raise WrapperError(
                    f"Wrapper {self.name!r}: roles {list(self.requested_roles)} are not "
                    f"trained roles of step {step.name!r}. Valid roles: {', '.join(trained)} "
                    "(leave `roles` out for all of them).")
            self.roles = self.requested_roles
        self.check_step(step)

    def check_step(self, step: Step) -> None:
        """Raise :class:`WrapperError` if this wrapper cannot wrap ``step`` (default: any)."""

    def check_stack(self, stack: Sequence[Wrapper]) -> None:
        """Raise :class:`WrapperStackError` if the stack (outermost first) is refused.

        Called on every wrapper of the stack; ``stack.index(self)`` is this one's
        position. The default accepts any stack.
        """

    def check_data(self, batch: Batch) -> None:
        """Raise :class:`DataStructureError` if ``batch`` (symbolic) does not suit the wrapper."""

    def spec(self) -> dict[str, Any]:
        """The JSON-ready spec that recreates this wrapper (saved with the model)."""
        out: dict[str, Any] = {"name": self.name, **unstructure_config(self.config)}
        if self.requested_roles is not None:
            out["roles"] = list(self.requested_roles)
        return out

    # ------------------------------------------------------------ hooks

    def configure_optimizer(self, role: str, optimizer: Any) -> Any:
        """Return the optimizer role ``role`` uses (called by ``compile``, for own roles)."""
        return optimizer

    def build_state(self, ctx: StepContext) -> None:
        """Create the wrapper's saved state with :meth:`add_state` (after the networks exist)."""

    def add_state(self, ctx: StepContext, name: str, shape: Any = (), dtype: str = "float32",
                  initializer: Any = "zeros") -> Any:
        """``ctx.add_state`` under a name prefixed with the wrapper's (a saved model weight)."""
        return ctx.add_state(f"{self.name}__{name}", shape, dtype, initializer)

    def train_step(self, ctx: StepContext, data: Any, inner: Callable[[Any], None]) -> None:
        inner(data)

    def test_step(self, ctx: StepContext, data: Any, inner: Callable[[Any], None]) -> None:
        inner(data)

    def call(self, ctx: StepContext, inputs: Any, training: bool,
             inner: Callable[[Any, bool], Any]) -> Any:
        """What ``model(inputs)`` / ``predict`` compute (e.g. with averaged weights)."""
        return inner(inputs, training)

    def gradients(self, ctx: StepContext, role: str, loss_fn: Callable[[], Any],
                  regularization: bool, inner: Callable[..., tuple[list[Any], Any]]
                  ) -> tuple[list[Any], Any]:
        """``ctx.gradients`` for one of the wrapper's roles; ``inner(role, loss_fn, reg)``."""
        return inner(role, loss_fn, regularization)

    def apply_gradients(self, ctx: StepContext, role: str, grads: Sequence[Any],
                        inner: Callable[[str, Sequence[Any]], None]) -> None:
        """``ctx.apply_gradients`` for one of the wrapper's roles; ``inner(role, grads)``."""
        inner(role, grads)

    def compute_loss(self, ctx: StepContext, x: Any, y: Any, y_pred: Any, sample_weight: Any,
                     inner: Callable[..., Any]) -> Any:
        """``ctx.compute_loss`` (Keras' compiled loss); ``inner(x, y, y_pred, sample_weight)``."""
        return inner(x, y, y_pred, sample_weight)


# ---------------------------------------------------------------- specs


def make_wrapper(spec: Any, get_class: Callable[[str], type]) -> Wrapper:
    """A :class:`Wrapper` from a spec: a name, ``{"name": ..., "roles": [...], **config}``
    or a wrapper instance (used as it is).

    Raises:
        WrapperError: the spec has no name or is of another type.
        UnknownWrapperError: no installed wrapper has that name.
        ConfigError: the config keys or values are invalid for that wrapper.
    """
    if isinstance(spec, Wrapper):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise WrapperError(
            "A wrapper is given as its name ('ema'), a dict {'name': 'ema', 'decay': 0.999, "
            f"'roles': [...]}} or a Wrapper instance. Received: {spec!r}.")
    rest = dict(spec)
    name = rest.pop("name")
    roles = rest.pop("roles", None)
    if roles is not None and (isinstance(roles, str) or not isinstance(roles, Sequence)):
        raise WrapperError(
            f"Wrapper {name!r}: `roles` must be a list of role names. Received: {roles!r}.")
    cls = get_class(name)
    config = structure_config(cls.config_class, rest, step=f"wrapper {name}")
    return cls(config, roles=roles)


def check_stack(stack: Sequence[Wrapper]) -> None:
    """Refuse a wrapper given twice, then let every wrapper check the stack."""
    names = [w.name for w in stack]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise WrapperStackError(
            f"Wrapper(s) {twice} given more than once in {names}. Give each wrapper once "
            "(one spec can name several roles).")
    for w in stack:
        w.check_stack(stack)


def stack_order(stack: Sequence[Wrapper]) -> str:
    """The stack as users write it, outermost first: ``"accumulate > sam"``."""
    return " > ".join(w.name for w in stack) or "(none)"
