"""Generic samples for any installed step: what ``pytest --stepkit-step NAME`` runs on.

One sample per data kind a step can declare (``Step.data_kind``), 40 rows each:

* ``"images"``: 8x8x1 images in [0, 1], no targets (a GAN, a VAE);
* ``"labeled-images"``: the same images with int32 labels in 0..9, shape (40,)
  (a classifier, a conditional GAN);
* ``"vectors"``: 5 normal features with a float target of shape (40, 1).

A step that declares its ``data_kind`` gets that sample only; a step that does
not gets the first its ``check_data`` accepts, in the order above; under
wrappers (``--stepkit-wrap``), the first that every wrapper's ``check_data``
accepts too. The batch
size is 16, so the last batch is partial. Steps are given no networks, so they
must have default networks for that sample.

``predict`` gets 8 rows shaped like the step's ``call_spec`` (a structure is
fine: a conditional GAN's ``{"z": latent vectors, "label": labels}``; integer
leaves take labels that occur in the sample), else the sample's own inputs,
else a network's input (a VAE's decoder takes latent vectors, not images): the
first that ``model(...)`` accepts.

When no sample fits, :func:`generic_case` raises :class:`NoGenericSample`
saying why; :class:`NeedsNetworks` (a subclass) when a sample fits the data
but the step has no default networks for it.

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

__all__ = ["KINDS", "NeedsNetworks", "NoGenericSample", "generic_case", "generic_data"]

N, BATCH, N_CLASSES = 40, 16, 10  # 16 + 16 + 8: a partial last batch
KINDS = ("images", "labeled-images", "vectors")


class NoGenericSample(Exception):
    """No generic sample fits the step, so ``--stepkit-step`` can check nothing; says why."""


class NeedsNetworks(NoGenericSample):
    """A generic sample fits the step's data, but the step has no default networks for it."""


def generic_data(kind: str) -> tuple[str, np.ndarray, np.ndarray | None]:
    """``(description, x, y)``: the generic sample of data kind ``kind`` (one of :data:`KINDS`)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(N, 8, 8, 1)).astype("float32")
    x = rng.normal(size=(N, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    labels = rng.integers(0, N_CLASSES, size=N).astype("int32")
    return {"images": ("images 8x8x1", images, None),
            "labeled-images": (f"(images 8x8x1, int32 labels 0..{N_CLASSES - 1})", images,
                               labels),
            "vectors": ("(x, y) vectors", x, y)}[kind]


def _spec(a: Any) -> Any:
    return None if a is None else keras.KerasTensor((None, *a.shape[1:]), str(a.dtype))


def _draw(spec: Any, y: Any, rng: np.random.Generator, n: int = 8) -> Any:
    """``n`` rows for each leaf of a symbolic ``spec``: labels of ``y`` for integer leaves."""
    ints = y is not None and np.issubdtype(np.asarray(y).dtype, np.integer)
    labels = np.unique(y) if ints else np.array([0, 1])

    def leaf(t: Any) -> np.ndarray:
        shape, dtype = (n, *t.shape[1:]), str(t.dtype)
        if None in shape:
            raise ValueError(f"call_spec has an unknown dimension: {t.shape}")
        if "int" in dtype or dtype == "bool":
            return rng.choice(labels, size=shape).astype(dtype)
        return rng.normal(size=shape).astype(dtype)

    return keras.tree.map_structure(leaf, spec)


def _predict_x(model: stepkit.StepModel, x: Any, y: Any) -> Any:
    """8 rows ``model(...)`` accepts: like the step's call_spec, the sample's x, or a network's."""
    rng = np.random.default_rng(1)

    def candidates():
        try:
            yield _draw(model.step.call_spec(stepkit.Batch(_spec(x), _spec(y))), y, rng)
        except Exception:  # noqa: BLE001 - a spec the kit cannot draw from: try the others
            pass
        yield keras.tree.map_structure(lambda a: a[:8], x)
        for net in model.networks.values():
            for spec in getattr(net, "inputs", None) or []:
                yield _draw(spec, y, rng)

    for candidate in candidates():
        try:
            model(candidate, training=False)
        except Exception:  # noqa: BLE001 - try the next shape
            continue
        return candidate
    return keras.tree.map_structure(lambda a: a[:8], x)


def _check_wrappers(step_class: type, wrappers: Any, batch: stepkit.Batch) -> None:
    """Each wrapper's ``check_data`` on ``batch`` (MixUp needs labels, say)."""
    from stepkit.wrapper import make_wrapper

    for spec in wrappers or ():
        wrapper = make_wrapper(spec, stepkit.get_wrapper)
        wrapper.bind(step_class())
        try:
            wrapper.check_data(batch)
        except DataStructureError as exc:
            raise DataStructureError(f"wrapper {wrapper.name!r}: {exc}") from None


def _try(step: str, step_class: type, kind: str, wrappers: Any = None) -> tuple[Any, str, str]:
    """``(Sample, what, "")`` when the sample of ``kind`` fits, else ``(stage, what, why)``.

    ``stage`` is ``"data"`` when ``check_data`` (the step's or a wrapper's)
    refused the sample, ``"networks"`` when building the default networks failed.
    """
    what, x, y = generic_data(kind)
    try:
        batch = stepkit.Batch(_spec(x), _spec(y))
        step_class().check_data(batch)
        _check_wrappers(step_class, wrappers, batch)
    except DataStructureError as exc:
        return "data", what, f"check_data refused it ({exc})"
    keras.utils.set_random_seed(0)
    model = stepkit.StepModel(step=step, seed=0)
    try:
        model.build_from_data(x if y is None else (x[:BATCH], y[:BATCH]))
    except (ValueError, DataStructureError) as exc:
        return "networks", what, str(exc)
    return Sample(x, y, predict_x=_predict_x(model, x, y), batch_size=BATCH), what, ""


def generic_case(step: str, wrappers: Any = None) -> dict[str, Any]:
    """``{"sample": Sample, "data": description, "kind": data kind}`` for ``step``.

    With ``wrappers`` (specs, outermost first), the sample must also pass each
    wrapper's ``check_data``.

    Raises:
        NeedsNetworks: a generic sample fits the step's data, but its default
            networks do not (or it has none).
        NoGenericSample: the step's ``check_data`` accepts none of the samples.
        stepkit.UnknownStepError: no installed step has that name.
    """
    step_class = stepkit.get_step(step)
    declared = getattr(step_class, "data_kind", None)
    kinds = [declared] if declared in KINDS else list(KINDS)
    why: dict[str, list[str]] = {"data": [], "networks": []}
    for kind in kinds:
        result, what, reason = _try(step, step_class, kind, wrappers)
        if isinstance(result, Sample):
            return {"sample": result, "data": what, "kind": kind}
        why[result].append(f"{what}: {reason}")
    refused, networks = why["data"], why["networks"]
    tried = (f"it declares data_kind={declared!r}" if declared in KINDS
             else "it declares no data_kind, so every generic sample was tried")
    if networks:
        raise NeedsNetworks(
            f"step {step!r} needs networks: the generic sample fits its data ({tried}), but "
            f"{'; '.join(networks)}. Test it with stepkit.testing.conformance_tests(..., "
            "networks=...).")
    raise NoGenericSample(
        f"step {step!r} accepts none of the kit's generic samples ({tried}): "
        f"{'; '.join(refused)}. Test it with stepkit.testing.conformance_tests(..., "
        "sample=...) on data it takes.")
