"""What every conformance check shares: the sample, the case and seeded models."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import keras
import numpy as np

import stepkit
from stepkit.testing._wrappers import as_specs, rebuildable, stack_label, wrapper_class_paths

TOL = 1e-5


class ConformanceError(AssertionError):
    """A step broke the stepkit contract; the message names the check and what differed."""


@attrs.define
class Sample:
    """A small data sample for the conformance checks.

    Every field may be a NumPy array or a structure of arrays (a dict, tuple or
    list, as ``keras.tree`` walks it) whose leaves share their first dimension.

    Attributes:
        x: inputs.
        y: targets, or None for steps that train on ``x`` alone (GANs, VAEs).
        predict_x: what to give ``predict``; defaults to ``x`` (GANs take latent
            vectors, a conditional GAN ``{"z": latent, "label": labels}``).
        batch_size: the batch size of every check; pick one that leaves a partial
            last batch, so that epoch means are weighted by batch size.

    Example::

        Sample(x=images[:40], predict_x=np.random.normal(size=(8, 64)), batch_size=16)
    """

    x: Any
    y: Any = None
    predict_x: Any = None
    batch_size: int = 16

    @property
    def size(self) -> int:
        return len(keras.tree.flatten(self.x)[0])

    def batches(self) -> Iterator[tuple[Any, Any, int]]:
        """``(x, y, n)`` for each batch, in order."""
        for start in range(0, self.size, self.batch_size):
            def cut(a, sl=slice(start, start + self.batch_size)):
                return a[sl]

            xb = keras.tree.map_structure(cut, self.x)
            yb = None if self.y is None else keras.tree.map_structure(cut, self.y)
            yield xb, yb, len(keras.tree.flatten(xb)[0])


def as_sample(sample: Any) -> Sample:
    """A :class:`Sample` from a Sample, an array or dict ``x``, an ``(x, y)`` tuple, or a callable.

    A tuple is ``(x,)`` or ``(x, y)``; for inputs that are themselves a tuple of
    arrays, pass ``Sample(x=(a, b), y=...)``.
    """
    if callable(sample) and not isinstance(sample, np.ndarray):
        sample = sample()
    if isinstance(sample, Sample):
        return sample
    if isinstance(sample, tuple) and len(sample) in (1, 2):
        return Sample(*sample)
    if isinstance(sample, np.ndarray | Mapping):
        return Sample(sample)
    raise TypeError(
        "`sample` must be a stepkit.testing.Sample, an array or dict of arrays x, a tuple (x,) "
        "or (x, y), or a zero-argument callable returning one of those. "
        f"Received: {type(sample).__name__} {sample!r:.200}."
    )


@attrs.define
class Case:
    """One step under test: its name, sample, networks, config, compile arguments, wrappers.

    ``networks`` and ``compile`` are zero-argument callables (or None), because
    every check builds fresh networks and optimizers; ``compile`` may also be a
    dict without optimizer instances. ``wrappers`` is the stack of wrapper specs
    (names or dicts, outermost first) every model of the case is built with
    (:mod:`stepkit.testing._wrappers`).
    """

    step: str
    sample: Sample
    networks: Callable[[], Any] | None = None
    config: Any = None
    compile: Callable[[], Mapping[str, Any]] | Mapping[str, Any] | None = None
    seed: int = 0
    epochs: int = 2
    wrappers: tuple[Any, ...] = ()

    @classmethod
    def make(cls, step: str, sample: Any, networks: Any = None, config: Any = None,
             compile: Any = None, *, wrappers: Any = None, **kw: Any) -> Case:
        if networks is not None and not callable(networks):
            raise TypeError(
                "`networks` must be a zero-argument callable returning fresh networks (each "
                f"check trains its own model). Received: {networks!r}."
            )
        specs = rebuildable(as_specs(wrappers))
        return cls(step, as_sample(sample), networks, config, compile, wrappers=specs, **kw)

    @property
    def label(self) -> str:
        """``step 'gan'``, or ``step 'gan' wrapped in ema > sam`` (outermost first)."""
        stack = stack_label(self.wrappers)
        return f"step {self.step!r}" + (f" wrapped in {stack}" if stack else "")

    def compile_kwargs(self) -> dict[str, Any]:
        if self.compile is None:
            return {}
        return dict(self.compile() if callable(self.compile) else self.compile)

    def model(self, **compile_overrides: Any) -> stepkit.StepModel:
        """A fresh model: same seeds, so two calls give the same weights and noise."""
        keras.utils.set_random_seed(self.seed)
        nets = self.networks() if self.networks is not None else None
        model = stepkit.StepModel(nets, step=self.step, config=self.config, seed=self.seed,
                                  wrappers=list(self.wrappers) or None)
        model.compile(**{**self.compile_kwargs(), **compile_overrides})
        # Build now, so that default networks take their weights from this seed
        # (not from whatever the global generator holds when fit() starts).
        xb, yb, _ = next(self.sample.batches())
        model.build_from_data(xb if yb is None else (xb, yb))
        return model

    def fit(self, model: stepkit.StepModel, epochs: int | None = None) -> dict[str, list]:
        s = self.sample
        history = model.fit(s.x, s.y, batch_size=s.batch_size, epochs=epochs or self.epochs,
                            shuffle=False, verbose=0)
        return history.history


# ---------------------------------------------------------------- helpers


def as_check(fn: Callable[[Case], dict]) -> Callable[..., dict]:
    """A check ``fn(case)`` as ``check(step, sample, *, networks, config, compile, wrappers)``."""

    @functools.wraps(fn)
    def run(step: str, sample: Any, *, networks: Any = None, config: Any = None,
            compile: Any = None, wrappers: Any = None, **kw: Any) -> dict:
        return fn(Case.make(step, sample, networks, config, compile, wrappers=wrappers, **kw))

    run.case_fn = fn
    return run


def fail(check: str, case: Case, message: str) -> None:
    """Raise ConformanceError ``[check] step 'name' [wrapped in a > b] on <backend>: message``."""
    raise ConformanceError(f"[{check}] {case.label} on {keras.backend.backend()}: {message}")


def expected_names(model: stepkit.StepModel) -> set[str]:
    """The step's tracked names, the compile metrics and, for several outputs, each one's loss.

    Keras logs ``<output>_loss`` for each output of a model with several
    outputs (``compile(loss={"a": "mse", "b": "mae"})``), besides ``loss``.
    """
    names = set(model.step.tracked)
    for attr in ("_compile_metrics", "_compile_loss"):
        compiled = getattr(model, attr, None)
        if compiled is not None:
            names |= {m.name for m in getattr(compiled, "metrics", [])}
    return names


def uses_noise(model: stepkit.StepModel, run: Callable[[], Any]) -> bool:
    """Whether ``run()`` draws from the model's seed generator (``ctx.normal`` / ``uniform``)."""
    before = keras.ops.convert_to_numpy(model._seed_generator.state)
    run()
    return not np.array_equal(before, keras.ops.convert_to_numpy(model._seed_generator.state))


def role_variables(model: stepkit.StepModel) -> dict[str, list[Any]]:
    return {r: model._variables_for(r) for r in model.step.trained_roles()}


def iterations(model: stepkit.StepModel) -> dict[str, int]:
    return {r: int(o.iterations) for r, o in model.optimizers.items()}


def max_diff(a: Mapping[str, list], b: Mapping[str, list]) -> float:
    return max((float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a),
               default=0.0)


def compare_histories(check: str, case: Case, got: Mapping[str, list],
                      want: Mapping[str, list], tol: float = TOL) -> float:
    if set(got) != set(want):
        fail(check, case, f"history keys differ: {sorted(got)} vs {sorted(want)}.")
    for k in want:
        if not np.allclose(got[k], want[k], rtol=tol, atol=tol):
            fail(check, case, f"history[{k!r}] = {got[k]} differs from the reference run's "
                              f"{want[k]} by more than {tol}.")
    return max_diff(got, want)


def check_finite(check: str, case: Case, logs: Mapping[str, Any]) -> None:
    bad = {k: v for k, v in logs.items() if not np.all(np.isfinite(np.asarray(v, float)))}
    if bad:
        fail(check, case, f"non-finite values: {bad}.")


@contextlib.contextmanager
def global_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy, restoring the previous one afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def step_class_path(case: Case, check: str) -> str | None:
    """``module:qualname`` of a hand-registered step, for a child process; else None.

    Installed steps are found by the child through their entry points. A class
    defined in ``__main__`` or inside a function cannot be imported there:
    ``check`` fails with a message saying so.
    """
    try:
        return class_path(case.step)
    except ValueError as exc:
        fail(check, case, str(exc))


def wrapper_classes(case: Case, check: str) -> list[str]:
    """``module:qualname`` of each hand-registered wrapper of the case, for a child process."""
    try:
        return wrapper_class_paths(case.wrappers)
    except ValueError as exc:
        fail(check, case, str(exc))


def class_path(step: str) -> str | None:
    """``module:qualname`` of the hand-registered step ``step``, None for an installed one.

    Raises:
        ValueError: the class is defined where a child process cannot import it.
    """
    info = next((i for i in stepkit.list_steps() if i.name == step), None)
    if info is None or info.distribution is not None:
        return None
    cls = info.step_class
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise ValueError(f"the step was registered by hand from {cls.__module__}."
                         f"{cls.__qualname__}, which a child process cannot import. Define "
                         "the step class at module level, or install its plugin.")
    return f"{cls.__module__}:{cls.__qualname__}"
