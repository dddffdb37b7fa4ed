"""``sam``: Sharpness-Aware Minimization and its adaptive variant, for any step's roles.

SAM (Foret, Kleiner, Mobahi & Neyshabur 2021, "Sharpness-Aware Minimization for
Efficiently Improving Generalization") takes each gradient at the worst nearby
weights: with ``g`` the gradient at ``w``,

    e = rho * g / ||g||                            (SAM)
    e = rho * T_w^2 g / ||T_w g||,  T_w = |w| + eta  (ASAM: Kwon, Kim, Park & Choi 2021,
                                                      "ASAM: Adaptive Sharpness-Aware
                                                      Minimization...")

and the role's optimizer is given the gradient of the same loss at ``w + e``.
Norms are taken over all the role's variables together; ``1e-12`` is added to
the norm (as in the PyTorch implementation most code uses) so a zero gradient
gives ``e = 0``. ASAM's ``T_w`` applies to every variable of the role (the
paper's definition; its authors' code leaves biases out).

Cost: two forward/backward passes of the role's loss per update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from attrs import validators as v
from keras import ops

from stepkit import backend
from stepkit.wrapper import Wrapper

EPSILON = 1e-12


@attrs.frozen
class SAMConfig:
    """Settings of the ``sam`` wrapper.

    Attributes:
        rho: radius of the neighbourhood, > 0 (0.05 in Foret et al. 2021; ASAM
            uses larger values, e.g. 0.5 or 1.0 on CIFAR-10 in Kwon et al. 2021).
        adaptive: use ASAM's scale-invariant neighbourhood (``T_w = |w| + eta``).
        eta: ASAM's ``eta`` >= 0 (0.01 in Kwon et al. 2021); unused without ``adaptive``.
    """

    rho: float = attrs.field(default=0.05, converter=float, validator=v.gt(0.0))
    adaptive: bool = attrs.field(default=False, validator=v.instance_of(bool))
    eta: float = attrs.field(default=0.01, converter=float, validator=v.ge(0.0))


def perturbation(variables: Sequence[Any], grads: Sequence[Any], rho: float,
                 eta: float | None = None) -> list[Any]:
    """SAM's ``e`` for each variable (ASAM's with ``eta`` not None); None for a None grad.

    Args:
        variables: the role's variables, ``w``.
        grads: ``dL/dw`` (any positive scale: ``e`` does not depend on it).
        rho: the neighbourhood's radius.
        eta: ASAM's ``eta``; None for SAM.

    Returns:
        One float32 tensor per variable, shaped like it; zeros when the gradient is
        not finite (a mixed-precision overflow, whose update the optimizer skips).
    """
    scaled = []
    for w, g in zip(variables, grads, strict=True):
        if g is None:
            scaled.append(None)
            continue
        g = ops.cast(ops.convert_to_tensor(g), "float32")
        t = None if eta is None else ops.abs(ops.cast(w.value, "float32")) + eta
        scaled.append((g, t))
    squares = [ops.sum(ops.square(g if t is None else t * g)) for g, t in filter(None, scaled)]
    if not squares:
        return [None] * len(scaled)
    norm = ops.sqrt(ops.sum(ops.stack(squares)))
    scale = rho / (norm + EPSILON)
    finite = ops.isfinite(norm)  # an overflow under loss scaling: no perturbation
    out = []
    for p in scaled:
        e = None if p is None else (p[0] if p[1] is None else ops.square(p[1]) * p[0]) * scale
        out.append(None if e is None else ops.where(finite, e, ops.zeros_like(e)))
    return out


class SAM(Wrapper):
    """Sharpness-Aware Minimization (``adaptive=True``: ASAM) of the wrapped step's roles.

    The role's loss function is evaluated twice per update: at ``w`` (its
    gradient gives the perturbation ``e``) and at ``w + e`` (its gradient is
    applied). The loss reported is the first pass's, at the weights being
    trained, so that logs compare with the bare step's. Under
    ``tf.distribute.MirroredStrategy`` ``e`` comes from the gradient summed over
    the replicas (the global batch's, so the perturbation is the same on every
    replica and two replicas train like one device; Foret et al.'s "m-sharpness"
    with m = the global batch); on JAX ``keras.distribution`` already gives the
    global batch's gradient. Whatever the loss function does besides (batch-norm
    statistics, random draws) happens in both passes, as in a hand-written
    ``train_step`` that calls the model twice.

    Example::

        StepModel(net, step="supervised", wrappers=["sam"])
        StepModel(step="gan", wrappers=[{"name": "sam", "rho": 0.1,
                                         "roles": ["discriminator"]}])
    """

    name = "sam"
    description = "Sharpness-Aware Minimization (Foret et al. 2021); adaptive: ASAM."
    config_class = SAMConfig

    def gradients(self, ctx: Any, role: str, loss_fn: Callable[[], Any], regularization: bool,
                  inner: Callable[..., tuple[list[Any], Any]]) -> tuple[list[Any], Any]:
        grads, out = inner(role, loss_fn, regularization)
        variables = ctx.variables(role)
        if not variables:
            return grads, out
        c = self.config
        e = perturbation(variables, backend.all_reduce_sum(grads), c.rho,
                         c.eta if c.adaptive else None)
        raw = [ops.copy(ops.convert_to_tensor(w)) for w in variables]
        for w, d in zip(variables, e, strict=True):
            if d is not None:
                w.assign(w.value + ops.cast(d, w.dtype))
        sharp, _ = inner(role, loss_fn, regularization)
        for w, value in zip(variables, raw, strict=True):
            w.assign(value)
        return sharp, out
