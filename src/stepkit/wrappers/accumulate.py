"""``accumulate``: gradient accumulation over N updates of each role, for any step.

Each of the wrapper's roles sums the gradients of its updates; every N-th
update applies their mean with the role's optimizer and starts a new sum. For
losses that are means over the batch, N micro-batches of b samples then train
like one update on a batch of N*b samples (the same weights, optimizer state
and learning-rate schedule), while holding only one micro-batch in memory.

Keras has the same technique built into its optimizers
(``keras.optimizers.Adam(..., gradient_accumulation_steps=N)``), and for one
optimizer on one device it gives the same numbers. stepkit does not use it,
because (Keras 3.15, measured):

- under ``tf.distribute.MirroredStrategy`` it fails: the optimizer branches on
  the update step with ``ops.cond`` inside the replica, and the branches call
  ``merge_call`` ("`merge_call` called while defining a new graph or a
  tf.function");
- learning-rate schedules see the micro-steps, not the updates (documented
  Keras behaviour), so with a schedule the weights leave the large-batch run's
  (max |dW| 0.128 after 2 updates with ``ExponentialDecay``);
- with a ``LossScaleOptimizer`` an overflow skips one micro-batch and shifts
  the window, where one large batch would skip the whole update;
- a wrapper that counts a role's updates (Lookahead) counts every micro-step
  (``ema`` checks the option to avoid it).

Here the role's optimizer is called once per N updates, so its ``iterations``
and schedules count real updates; ``ctx.iterations`` (and ``fit``'s progress
bar) still count micro-batches. Under ``MirroredStrategy`` each micro-batch's
gradient is summed over the replicas before it is added, so the sum is the
same on every replica. Under mixed precision the sum holds loss-scaled
gradients; the scale only changes when the optimizer is called, so it is the
same for the N gradients of an update, and an overflow in any of them skips
that update, as it would skip the large batch's.

Source: the technique as Keras' optimizers implement it
(``BaseOptimizer(gradient_accumulation_steps=...)``: the mean of the
accumulated gradients, clipped and decayed at the update step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from attrs import validators as v
from keras import ops

from stepkit import backend
from stepkit.errors import WrapperError
from stepkit.wrapper import Wrapper

__all__ = ["Accumulate", "AccumulateConfig"]


@attrs.frozen
class AccumulateConfig:
    """Settings of the ``accumulate`` wrapper.

    Attributes:
        steps: N >= 2, the updates of a role whose gradients make one optimizer
            step (the micro-batches per update when a step updates each role once).
    """

    steps: int = attrs.field(validator=[v.instance_of(int), v.ge(2)])


def _sum_dtype(dtype: str) -> str:
    return dtype if dtype in ("float32", "float64") else "float32"


class Accumulate(Wrapper):
    """Gradient accumulation: every ``steps``-th update of a role applies the mean gradient.

    State (saved with the model, so a run resumed between two updates goes on
    exactly): per role, a sum of gradients for every variable its optimizer
    updates (float32, or float64 for float64 variables) and an int32 count of
    the gradients in it. A role with no trainable variables keeps none.

    Each update of a role counts: a step that updates a role twice per batch
    applies it once every ``steps / 2`` batches. The mean weighs every
    micro-batch equally, which is the large batch's mean when the micro-batches
    are of equal size (a partial last batch of an epoch weighs as much as a
    full one); the sum carries over from one epoch to the next. Roles whose
    loss depends on another role's network see that network unchanged until
    its N-th update: in the ``gan`` step the generator's gradients of one
    update come from N micro-batches through a discriminator that the
    large-batch run would already have updated, so only a step whose roles do
    not read each other's updates within a batch trains exactly like the large
    batch.

    Example::

        model = StepModel(net, step="supervised", wrappers=[{"name": "accumulate", "steps": 4}])
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, batch_size=8)   # one Adam update per 4 batches: batch size 32

    Raises:
        WrapperError: at ``compile()``, an optimizer already has Keras'
            ``gradient_accumulation_steps`` (the gradients would be accumulated twice).
    """

    name = "accumulate"
    description = "Gradient accumulation: each role's optimizer steps on the mean of N gradients."
    config_class = AccumulateConfig

    def configure_optimizer(self, role: str, optimizer: Any) -> Any:
        for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
            steps = getattr(opt, "gradient_accumulation_steps", None)
            if steps:
                raise WrapperError(
                    f"Wrapper 'accumulate' (steps={self.config.steps}): the optimizer of role "
                    f"{role!r} ({type(opt).__name__}) already accumulates gradients "
                    f"(gradient_accumulation_steps={steps}), so they would be accumulated "
                    "twice. Remove gradient_accumulation_steps from the optimizer, or drop "
                    "the wrapper.")
        return optimizer

    def build_state(self, ctx: Any) -> None:
        self.sums: dict[str, list[Any]] = {}
        self.counts: dict[str, Any] = {}
        for role in self.roles:
            variables = ctx.variables(role)
            if not variables:
                continue
            self.counts[role] = self.add_state(ctx, f"{role}_count", (), "int32")
            self.sums[role] = [
                self.add_state(ctx, f"{role}_sum_{i}", tuple(var.shape), _sum_dtype(var.dtype))
                for i, var in enumerate(variables)]

    def apply_gradients(self, ctx: Any, role: str, grads: Sequence[Any],
                        inner: Callable[[str, Sequence[Any]], None]) -> None:
        sums = self.sums.get(role)
        if not sums:  # a frozen role: the framework skips it with a warning
            inner(role, grads)
            return
        for total, g in zip(sums, backend.all_reduce_sum(grads), strict=True):
            if g is not None:
                total.assign_add(ops.cast(g, total.dtype))
        count = self.counts[role]
        count.assign_add(1)
        # every replica passes the same mean; the optimizer sums the replicas' gradients
        scale = 1.0 / (self.config.steps * backend.num_replicas())
        variables = ctx.variables(role)

        def update() -> Any:
            inner(role, [ops.cast(total.value * scale, var.dtype)
                         for total, var in zip(sums, variables, strict=True)])
            for total in sums:
                total.assign(ops.zeros(total.shape, total.dtype))
            count.assign(0)
            return ops.zeros(())

        ctx.cond(ops.greater_equal(count, self.config.steps), update, lambda: ops.zeros(()))
