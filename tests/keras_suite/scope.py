"""Keras tests that are not about fit()'s contract through a wrapper, and per backend
the ones Keras itself fails there or that are left out of its run for time.

Keys are pytest node ids relative to ``keras/src`` (``path::Class::test``), or
``fnmatch`` patterns of them (``*`` for absl's named variants ``test_x_*``); a key
without ``[...]`` also covers the test's pytest-parametrized variants.

Out of scope means the test checks something a ``StepModel(net,
step="supervised")`` is not meant to reproduce (a model class with its own
train_step, Keras internals called on the network), never merely "fails today".
"""

from __future__ import annotations

from fnmatch import fnmatchcase

_TT = "trainers/trainer_test.py::TestTrainer::"
_OWN_TRAIN_STEP = "the network's class overrides train_step (its own training step)"
_OWN_TEST_STEP = "the network's class overrides test_step (its own evaluation step)"
_OWN_COMPUTE_LOSS = ("the network's class overrides compute_loss, which only its own "
                     "train/test step calls")

OUT_OF_SCOPE: dict[str, str] = {
    # Model classes with their own steps: what they test is their override, which
    # a StepModel (whose step is the plugin's) never calls.
    _TT + "test_fit_with_custom_train_step": _OWN_TRAIN_STEP,
    _TT + "test_evaluate_with_custom_test_step_*": _OWN_TEST_STEP,
    _TT + "test_metric_update_in_compute_loss": _OWN_COMPUTE_LOSS,
    _TT + "test_fwd_pass_loss_presence_in_compute_loss": _OWN_COMPUTE_LOSS,
    _TT + "test_evaluate_with_custom_compute_loss": _OWN_COMPUTE_LOSS,
    _TT + "test_compute_loss_no_training_backwards_compatibility": _OWN_COMPUTE_LOSS,
    "models/model_test.py::ModelTest::test_functional_list_outputs_with_custom_compute_loss":
        _OWN_COMPUTE_LOSS,
    # Counts traces of the network's own train_step/predict_step override: through a
    # StepModel that override never runs, so the test would pass without checking.
    _TT + "test_retracing": "counts traces of the network's own train_step override",
    _TT + "test_retracing_predict": "counts traces of the network's own predict_step override",
}

# Differences stepkit makes on purpose, each documented in docs/concepts.md ("What
# stays different by design") or docs/distributed.md: these tests check exactly the
# behaviour stepkit changes, so they are listed, with the reason, instead of run.
BY_DESIGN: dict[str, str] = {
    "models/model_test.py::ModelTest::test_get_state_tree":
        "the model's own variables (step counter, RNG state) are in its state tree",
    "callbacks/model_checkpoint_test.py::ModelCheckpointTest::test_model_checkpoint_loading":
        "a checkpoint of the model holds its own variables (step counter, RNG state) too",
    "callbacks/backup_and_restore_test.py::BackupAndRestoreCallbackTest::test_best_case_step":
        "a mid-epoch BackupAndRestore resumes after the last saved batch instead of "
        "replaying the epoch from its first batch (the test counts the replayed calls)",
    "callbacks/tensorboard_test.py::TestTensorBoardV2::test_TensorBoard_projector_callback":
        "model.layers is [network]: TensorBoard's projector looks for embedding layers "
        "among model.layers",
}
OUT_OF_SCOPE.update({key: f"by design: {reason}" for key, reason in BY_DESIGN.items()})


# Per backend: tests that fail with a plain keras.Model on that backend too (run
# `python -m keras_suite --baseline MODULE` under it to see), listed with Keras'
# error. None today: every test Keras runs on JAX and torch passes through StepModel.
KERAS_OWN_FAILURES: dict[str, dict[str, str]] = {"tensorflow": {}, "jax": {}, "torch": {}}

# Per backend: tests left out of that backend's run to keep it within its time
# budget (~3 min on 2 CPU cores); each runs on the other backends, and
# `python -m keras_suite --all` runs them. On torch, jit_compile=True is
# torch.compile: 10-90 s a test on CPU, mostly compile time, which a plain
# keras.Model pays too.
_TORCH_COMPILE = ("jit_compile=True compiles with torch.compile (10-90 s a test on CPU); "
                  "the test's eager and graph_fn variants run, and so do test_fit_flow_jit "
                  "and test_fit_with_data_adapter_torch_dataloader_tensor (torch.compile "
                  "through StepModel)")
LEFT_OUT: dict[str, dict[str, str]] = {
    "tensorflow": {},
    "jax": {},
    "torch": {
        **{_TT + name: _TORCH_COMPILE for name in (
            "test_evaluate_flow_jit", "test_fit_flow_steps_per_epoch_jit",
            "test_fit_with_val_split_jit", "test_fit_with_val_split_steps_per_epoch_jit",
            "test_steps_per_epoch_match_one_epoch_jit",
            "test_steps_per_epoch_match_multi_epoch_jit",
            "test_steps_per_epoch_not_match_but_high_enough_jit",
            "test_steps_per_epoch_not_match_too_low_jit",
            "test_predict_flow_jit", "test_predict_flow_struct_jit",
            "test_predict_generator_1_jit", "test_predict_preserve_order_1_jit",
            # every data-adapter variant compiles (the test sets jit_compile=True)
            "test_fit_with_data_adapter_py_dataset*", "test_fit_with_data_adapter_tf_dataset*",
            "test_fit_with_data_adapter_generator*", "test_fit_with_data_adapter_np_array",
            "test_fit_with_data_adapter_native_array",
            "test_fit_with_data_adapter_torch_dataloader_iterable*")},
        "callbacks/swap_ema_weights_test.py::*":
            "its model compiles with jit_compile=True (torch.compile): 50-140 s a test on CPU",
    },
}


def matches(key: str, nodeid: str) -> bool:
    """Whether list key ``key`` names test ``nodeid`` (or the test it is a variant of)."""
    base = nodeid.split("[", 1)[0]
    if key in (nodeid, base):
        return True
    return "*" in key and (fnmatchcase(nodeid, key) or fnmatchcase(base, key))


def _lookup(table: dict[str, str], nodeid: str) -> str | None:
    return next((reason for key, reason in table.items() if matches(key, nodeid)), None)


def out_of_scope_reason(nodeid: str, backend: str | None = None) -> str | None:
    """Why ``nodeid`` is not run through StepModel (on ``backend``, when given); else None."""
    reason = _lookup(OUT_OF_SCOPE, nodeid)
    if reason is None and backend is not None:
        own = _lookup(KERAS_OWN_FAILURES.get(backend, {}), nodeid)
        reason = None if own is None else f"fails with a plain keras.Model on {backend}: {own}"
    return reason


def left_out_reason(nodeid: str, backend: str) -> str | None:
    """Why ``nodeid`` is left out of ``backend``'s run (time), or None."""
    return _lookup(LEFT_OUT.get(backend, {}), nodeid)


def keys_for(backend: str) -> dict[str, str]:
    """Every list key in effect on ``backend`` (for the check that each names a test)."""
    return {**OUT_OF_SCOPE, **KERAS_OWN_FAILURES.get(backend, {}), **LEFT_OUT.get(backend, {})}
