"""Checks of how the step is executed: XLA, grouped steps and mixed precision.

Example::

    from stepkit.testing.execution import check_jit_compile

    check_jit_compile("gan", Sample(images[:40]), config={"latent_dim": 8})
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from stepkit.testing._harness import (
    Case,
    ConformanceError,
    as_check,
    check_finite,
    compare_histories,
    fail,
    global_policy,
    iterations,
    role_variables,
    uses_noise,
)

__all__ = ["TOL_JIT_NOISY", "check_jit_compile", "check_mixed_precision",
           "check_steps_per_execution"]


#: Tolerance of a noisy step under XLA: ctx.normal/uniform draw the same numbers with and
#: without XLA, so only float rounding differs (measured: under 1e-5 for gan, vae, wgan-gp).
TOL_JIT_NOISY = 1e-4


@as_check
def check_jit_compile(case: Case) -> dict:
    """jit_compile=True (XLA) reproduces the default run: 1e-5, or 1e-4 for noisy steps.

    Noisy steps are held to it too: ``ctx.normal`` / ``ctx.uniform`` must draw the
    same numbers with and without XLA.
    """
    model = case.model(jit_compile=False)
    holder = {}
    noisy = uses_noise(model, lambda: holder.update(case.fit(model)))
    jit = case.fit(case.model(jit_compile=True))
    check_finite("jit_compile", case, jit)
    try:
        diff = compare_histories("jit_compile", case, jit, holder,
                                 tol=TOL_JIT_NOISY if noisy else 1e-5)
    except ConformanceError as exc:
        if not noisy:
            raise
        raise ConformanceError(f"{exc} The step draws ctx.normal/ctx.uniform noise: does it "
                               "draw the same numbers under XLA?") from None
    return {"max_diff": diff, "uses_noise": noisy}


@as_check
def check_steps_per_execution(case: Case) -> dict:
    """steps_per_execution=3 gives the same history as the default run (1e-5)."""
    reference = case.fit(case.model())
    grouped = case.fit(case.model(steps_per_execution=3))
    check_finite("steps_per_execution", case, grouped)
    return {"max_diff": compare_histories("steps_per_execution", case, grouped, reference)}


def _np(v: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(v)


def _first_updates(case: Case, limit: int = 32) -> tuple[dict, dict, int]:
    """Train on the first batch until every optimizer stepped; per-role update norms."""
    model = case.model()
    xb, yb, _ = next(case.sample.batches())
    before = {r: [_np(v) for v in vs] for r, vs in role_variables(model).items()}
    steps = 0
    while steps < limit and min(iterations(model).values()) < 1:
        model.train_on_batch(xb, yb)
        steps += 1
    moved = {r: float(np.sqrt(sum(np.sum((_np(v).astype(np.float64) - b) ** 2)
                                  for v, b in zip(vs, before[r], strict=True))))
             for r, vs in role_variables(model).items()}
    return moved, dict(model.optimizers), steps


@as_check
def check_mixed_precision(case: Case) -> dict:
    """mixed_float16: every optimizer is a LossScaleOptimizer; updates match float32's.

    Both runs train until each optimizer has stepped once; each role's update
    norm under mixed precision must be 0.5..2 times float32's.
    """
    with global_policy("mixed_float16"):
        mixed, optimizers, steps = _first_updates(case)
    wrong = {r: type(o).__name__ for r, o in optimizers.items()
             if not isinstance(o, keras.optimizers.LossScaleOptimizer)}
    if wrong:
        fail("mixed_precision", case, f"optimizer(s) not wrapped in LossScaleOptimizer: {wrong}.")
    with global_policy("float32"):
        plain, _, plain_steps = _first_updates(case)
    ratios = {}
    for role, norm in plain.items():
        if norm == 0 or mixed[role] == 0:
            fail("mixed_precision", case, f"role {role!r} did not move (float32 update "
                                          f"{plain[role]}, mixed_float16 update {mixed[role]}).")
        ratios[role] = mixed[role] / norm
        if not 0.5 <= ratios[role] <= 2.0:
            fail("mixed_precision", case, f"role {role!r}: mixed_float16 update is "
                                          f"{ratios[role]:.3g} x float32's (want 0.5..2).")
    return {"ratios": ratios, "steps": (steps, plain_steps)}
