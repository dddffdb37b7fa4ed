"""Keras tests that are not about fit()'s contract through a wrapper.

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


def out_of_scope_reason(nodeid: str) -> str | None:
    base = nodeid.split("[", 1)[0]
    for key in (nodeid, base):
        if key in OUT_OF_SCOPE:
            return OUT_OF_SCOPE[key]
    for key, reason in OUT_OF_SCOPE.items():
        if "*" in key and (fnmatchcase(nodeid, key) or fnmatchcase(base, key)):
            return reason
    return None
