"""A generic sample for any installed step: what ``pytest --stepkit-step NAME`` runs on.

Steps that train on images (their ``check_data`` accepts a batch of images
alone) get 40 images of 8x8x1 in [0, 1]; other steps get ``(x, y)`` vectors.
Steps are given no networks, so they must have default networks for that
sample; steps without them raise :class:`NeedsNetworks`. ``predict`` gets
inputs shaped like the first network input the model accepts (a GAN's or a
VAE's decoder takes latent vectors, not images).

Example::

    case = generic_case("gan")
    run_conformance("gan", case["sample"], checks=["fit"])
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

import stepkit
from stepkit.errors import DataStructureError
from stepkit.testing._harness import Sample

__all__ = ["NeedsNetworks", "generic_case"]

N, BATCH = 40, 16  # 16 + 16 + 8: a partial last batch


class NeedsNetworks(Exception):
    """The step has no default networks for a generic sample; the message says why."""


def _candidates() -> list[tuple[str, Any, Any]]:
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(N, 8, 8, 1)).astype("float32")
    x = rng.normal(size=(N, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    return [("images 8x8x1", images, None), ("(x, y) vectors", x, y)]


def _spec(a: Any) -> Any:
    return None if a is None else keras.KerasTensor((None, *a.shape[1:]), str(a.dtype))


def _predict_x(model: stepkit.StepModel, x: np.ndarray) -> np.ndarray:
    """8 inputs ``model(...)`` accepts: shaped like ``x``, else like a network's input."""
    rng = np.random.default_rng(1)
    shapes = [x.shape[1:]]
    for net in model.networks.values():
        for spec in getattr(net, "inputs", None) or []:
            shapes.append(tuple(spec.shape[1:]))
    for shape in dict.fromkeys(shapes):
        candidate = rng.normal(size=(8, *shape)).astype("float32")
        try:
            model(candidate, training=False)
        except Exception:  # noqa: BLE001 - try the next shape
            continue
        return candidate
    return x[:8]


def generic_case(step: str) -> dict[str, Any]:
    """``{"sample": Sample, "data": description}`` for ``step``, or raise :class:`NeedsNetworks`.

    Raises:
        NeedsNetworks: the step's default networks do not fit either generic sample.
        stepkit.UnknownStepError: no installed step has that name.
    """
    step_class = stepkit.get_step(step)
    reasons = []
    for what, x, y in _candidates():
        step_obj = step_class()
        batch = stepkit.Batch(_spec(x), _spec(y))
        try:
            step_obj.check_data(batch)
        except DataStructureError as exc:
            reasons.append(f"{what}: check_data refused it ({exc})")
            continue
        keras.utils.set_random_seed(0)
        model = stepkit.StepModel(step=step, seed=0)
        try:
            model.build_from_data(x if y is None else (x[:BATCH], y[:BATCH]))
        except (ValueError, DataStructureError) as exc:
            reasons.append(f"{what}: {exc}")
            continue
        sample = Sample(x, y, predict_x=_predict_x(model, x), batch_size=BATCH)
        return {"sample": sample, "data": what}
    raise NeedsNetworks(
        f"step {step!r} needs networks: it has no default networks for a generic sample "
        f"({'; '.join(reasons)}). Test it with stepkit.testing.conformance_tests(..., "
        "networks=...)."
    )
