"""What the rewritten Keras test modules call: route trainer attributes to a StepModel.

The rewrite (:mod:`keras_suite.rewrite`) turns ``model.compile(...)`` into
``_stepkit_route(model, True).compile(...)`` and ``model.optimizer`` into
``_stepkit_route(model).optimizer``. The first call on a Keras model (a
``Trainer``) wraps it in ``StepModel(model, step="supervised")``; later calls
on the same network return that same StepModel, so a test that compiles a
network and then fits it, reads its history or its optimizer, talks to one
wrapper. Everything else a test does with the network (calling it, reading
its layers or weights) still goes to the network itself.
"""

from __future__ import annotations

import os
from typing import Any

import keras
from keras.src.trainers.trainer import Trainer

from stepkit import StepModel

# Methods whose first use on a network creates its StepModel: the ways into a
# training loop (a network that is never compiled, fit, evaluated or predicted
# is never wrapped).
ENTRY_POINTS = frozenset({
    "compile", "fit", "evaluate", "predict",
    "train_on_batch", "test_on_batch", "predict_on_batch",
})

# Attributes that belong to the training side of a keras.Model: the Trainer's
# methods and properties, what compile()/fit() set on the model, and the
# model-level saving of a compiled model. Read through the wrapper once there is
# one; any other attribute is the network's own.
ROUTED = ENTRY_POINTS | frozenset({
    # Trainer methods and properties
    "compile_from_config", "get_compile_config", "compiled_loss", "compiled_metrics",
    "compute_loss", "compute_metrics", "stateless_compute_loss", "get_metrics_result",
    "reset_metrics", "metrics", "metrics_names", "metrics_variables", "loss",
    "make_train_function", "make_test_function", "make_predict_function",
    "train_function", "test_function", "predict_function",
    "train_step", "test_step", "predict_step",
    "distribute_strategy", "distribute_reduction_method", "jit_compile", "run_eagerly",
    "steps_per_execution", "unrolled_steps_per_execution",
    # set by compile() and fit()
    "optimizer", "compiled", "history", "stop_training", "stop_evaluating",
    "stop_predicting", "_compile_loss", "_compile_metrics", "_loss_tracker",
    "_compile_config", "_distribute_strategy", "_eval_epoch_iterator",
    # saving a compiled model, and its whole state (optimizer and metrics included)
    "save", "export", "get_state_tree", "set_state_tree",
}) | frozenset(  # and every other name the trainer classes define (their internals):
    # the current backend's trainer and Trainer, not keras.Model's own layer side
    name for cls in keras.Model.__mro__
    if issubclass(cls, Trainer) and not issubclass(cls, keras.Layer)
    for name in vars(cls) if not name.startswith("__"))

# Overriding one of these is writing one's own train/test step: such tests are
# out of scope (see keras_suite.scope); the count lets the suite check the list.
STEP_OVERRIDES = ("train_step", "test_step", "predict_step", "compute_loss",
                  "compute_metrics", "make_train_function")

# Set by `python -m keras_suite --baseline`: run the rewritten modules without
# wrapping, to tell Keras' own failures on this machine from stepkit's.
BASELINE = os.environ.get("STEPKIT_KERAS_SUITE_BASELINE") == "1"

_wrappers: dict[int, tuple[Any, StepModel]] = {}
_stats: dict[str, Any] = {"wrapped": 0, "overrides": set()}


def _stepkit_route(obj: Any, create: bool = False, name: Any = None) -> Any:
    """The StepModel of network ``obj``, made on first use when ``create``; else ``obj``.

    With ``name`` (``getattr(obj, name)`` in a test): route only a trainer attribute.
    """
    if name is not None:
        if not isinstance(name, str) or name not in ROUTED:
            return obj
        create = name in ENTRY_POINTS
    if BASELINE or isinstance(obj, StepModel) or not isinstance(obj, Trainer):
        return obj
    hit = _wrappers.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    if not create:
        return obj
    for name in STEP_OVERRIDES:
        owner = next((c for c in type(obj).__mro__ if name in vars(c)), None)
        if owner is not None and not owner.__module__.startswith("keras."):
            _stats["overrides"].add(f"{owner.__name__}.{name}")
    # A user wraps the network where they create it: in the strategy scope the
    # network was created in (Keras records it on the model).
    strategy = obj.__dict__.get("_distribute_strategy")
    if strategy is not None:
        with strategy.scope():
            model = StepModel(obj, step="supervised")
    else:
        model = StepModel(obj, step="supervised")
    _wrappers[id(obj)] = (obj, model)
    _stats["wrapped"] += 1
    return model


def reset() -> dict[str, Any]:
    """Forget every wrapper; return what the test that just ran did (its counts)."""
    stats = {"wrapped": _stats["wrapped"], "overrides": sorted(_stats["overrides"])}
    _wrappers.clear()
    _stats["wrapped"] = 0
    _stats["overrides"] = set()
    return stats
