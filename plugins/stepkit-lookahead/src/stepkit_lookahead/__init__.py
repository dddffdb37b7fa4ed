"""``lookahead``: Lookahead (Zhang et al. 2019) as a stepkit step wrapper.

Each role keeps *slow* weights next to its (fast) weights. The role's own
optimizer makes ``k`` updates of the fast weights; after every ``k``-th update
the slow weights move ``alpha`` of the way to the fast ones,
``slow += alpha * (fast - slow)``, and the fast weights restart from them.

Source: Zhang, Lucas, Hinton and Ba, "Lookahead Optimizer: k steps forward,
1 step back", NeurIPS 2019, Algorithm 1.
"""

from __future__ import annotations

import attrs
import stepkit
from attrs import validators as v
from keras import ops

__all__ = ["Lookahead", "LookaheadConfig"]


@attrs.frozen
class LookaheadConfig:
    """Settings of the ``lookahead`` wrapper.

    Attributes:
        k: fast updates between two synchronisations (the paper's k, >= 1).
        alpha: slow-weights step size in (0, 1] (the paper's alpha).
    """

    k: int = attrs.field(default=5, validator=[v.instance_of(int), v.ge(1)])
    alpha: float = attrs.field(default=0.5, converter=float, validator=[v.gt(0.0), v.le(1.0)])


class Lookahead(stepkit.Wrapper):
    """Lookahead over each of its roles' optimizers (Zhang et al. 2019).

    State (saved with the model): per role, one slow copy of every variable
    the role's optimizer updates (same shapes and dtypes) and an int64 count of
    the role's updates (skipped mixed-precision steps do not count).
    """

    name = "lookahead"
    description = "Lookahead (Zhang et al. 2019): k fast updates, then slow += alpha*(fast-slow)."
    config_class = LookaheadConfig

    def build_state(self, ctx):
        self.slow, self.count = {}, {}
        for role in self.roles:
            variables = ctx.variables(role)
            self.slow[role] = [
                self.add_state(ctx, f"{role}_slow_{i}", tuple(var.shape), var.dtype,
                               initializer="zeros") for i, var in enumerate(variables)]
            for slow, var in zip(self.slow[role], variables, strict=True):
                slow.assign(var)  # the slow weights start at the initial weights
            self.count[role] = self.add_state(ctx, f"{role}_count", (), "int64")

    def apply_gradients(self, ctx, role, grads, inner):
        # count the updates the optimizer really made: a LossScaleOptimizer skips
        # non-finite steps (its iterations do not move then)
        iterations = ctx.optimizers[role].iterations
        # a snapshot: on TensorFlow, convert_to_tensor(variable) returns the variable itself
        before = ops.copy(ops.convert_to_tensor(iterations))
        inner(role, grads)
        count = self.count[role]
        count.assign_add(ops.cast(iterations - before, "int64"))
        variables = ctx.variables(role)
        alpha = self.config.alpha

        def synchronise():
            for slow, fast in zip(self.slow[role], variables, strict=True):
                slow.assign(slow + alpha * (fast - slow))
                fast.assign(slow)
            return ops.zeros(())

        ctx.cond(ops.equal(count % self.config.k, 0), synchronise, lambda: ops.zeros(()))


@stepkit.hookimpl
def stepkit_register_wrappers(register):
    register(Lookahead)
