"""Which test modules run on which Keras backend, and why.

The whole suite runs on TensorFlow (``python -m pytest tests plugins``). With
``KERAS_BACKEND=jax`` or ``torch``, the modules in :data:`ON_EVERY_BACKEND`
run; every other module is listed below with the reason it is not collected
there. Any module can still be run on another backend by hand, e.g.
``KERAS_BACKEND=jax python -m pytest tests/test_gan.py`` (tests that cannot run
there are marked ``tensorflow_only`` with their reason).
"""

from __future__ import annotations

import os

# Run on TensorFlow, JAX and torch in CI.
ON_EVERY_BACKEND = {
    "test_backend_fidelity.py": "StepModel vs keras.Model.fit and the backend's own guide",
    "test_supervised.py": "supervised equals keras.Model.fit",
    "test_custom_loss.py": "custom-loss (the TensorFlow guide comparison is tensorflow_only)",
    "test_step_authoring.py": "the step contract: regularisation, several updates, frozen roles",
    "test_keras_suite.py": "Keras' own trainer/model/callback tests through StepModel",
    "test_backend_torch_grad_layout.py": "torch gradient layout (skipped elsewhere)",
    "test_export_backends.py": "StepModel.export vs keras.Model.export of the same network, "
                               "per format",
    "test_wrapper_core.py": "the wrapper contract: order, roles, saved state, errors",
    "test_wrappers_sam_ema.py": "sam/ema vs hand-written SAM steps and Keras' use_ema "
                                "(replicas: tensorflow_only)",
    "test_wrappers_accumulate.py": "accumulate equals the N-times larger batch (schedule, XLA, "
                                   "replicas, Keras' option, resume and stacks are "
                                   "tensorflow_only for CI time)",
    "test_gan_family.py": "each GAN loss, penalty, DiffAugment, EMA and the conditional GAN "
                          "vs its paper's formula with the backend's own gradient",
    "test_wrappers_data.py": "adversarial and mixup vs hand-written attacks and mixed one-hot "
                             "targets (hand-written train_steps are tensorflow_only)",
}

# What only TensorFlow has.
TENSORFLOW_SPECIFIC = {
    "test_replicas.py": "tf.distribute.MirroredStrategy replicas (JAX: test_jax_distribution.py)",
    "test_multiworker.py": "tf.distribute.MultiWorkerMirroredStrategy over processes",
}

# Tests that start every backend themselves, in child processes: run once.
SPAWN_EVERY_BACKEND = {
    "test_backend_portability.py": "saves on each backend, loads on the others",
    "test_jax_distribution.py": "JAX children over 2 CPU devices",
    "test_kit_backend.py": "the conformance kit's --stepkit-backend runs children",
    "test_backend_errors.py": "unsupported backends and foreign API calls, in children",
}

# Code that does not depend on the backend (command line, registry, docs, data).
BACKEND_INDEPENDENT = {
    "test_cli.py", "test_cli_errors.py", "test_cli_list.py", "test_cli_output.py",
    "test_cli_supervised.py", "test_registry.py", "test_plugins_installed.py", "test_docs.py",
    "test_docs_snippets.py", "test_data.py", "test_bench_smoke.py",
    "test_bench_backends_smoke.py", "test_bench_wrappers_smoke.py", "test_pytest_option.py",
    "test_keras_private_api.py",
    "test_backend_scope.py",
}

# Backend-agnostic tests left to TensorFlow in CI, which must stay under 30 minutes on
# 2 cores (the TensorFlow run alone takes about 24). Run on JAX or torch by hand with
# STEPKIT_ALL_TESTS=1 (see the module doc). Last run so (one process each, the machine
# shared with a benchmark): torch 11.5 minutes, JAX 31.5 minutes; the 8 tests that failed
# there now pass or are skipped with what that backend lacks (tf_saved_model export and
# float16 convolution gradients on torch's CPU; Keras' own JAX trainer, the reference of
# two comparisons, warns less and cannot update a metric inside call()).
TENSORFLOW_IN_CI_FOR_TIME = {
    "test_gan.py": "28x28 DCGAN: ~16 s a step on JAX's CPU (XLA's Conv2DTranspose gradient)",
    "test_saving.py": "save/load: test_backend_portability.py covers every backend pair",
    "test_errors.py": "error messages, mostly raised before training",
    "test_keras_fidelity.py": "40 Keras comparisons; the per-backend core is in "
                              "test_backend_fidelity.py",
    "test_steps_fidelity.py": "gan and plugins at 28x28 (see test_gan.py)",
    "test_mixed_precision.py": "per-backend mixed precision is in test_backend_fidelity.py",
    "test_callbacks.py": "SampleGrid/TensorBoard callbacks",
    "test_conformance_builtin.py": "the kit on built-in steps (test_kit_backends.py: backends)",
    "test_kit_cgan.py": "the kit on a conditional GAN plugin",
    "test_kit_gan_presets.py": "the kit on the gan presets recommended and conditional "
                               "(22 checks, about 4 minutes of CPU)",
    "test_kit_generic.py": "the kit's generic samples",
    "test_kit_structured.py": "the kit on structured data",
    "test_kit_xfail.py": "the kit's xfail reporting",
    "test_kit_wrapped.py": "the kit on wrapped steps; its child-process checks take most of "
                           "a minute",
    "test_wrapper_pairs.py": "20 ordered pairs of built-in wrappers (each wrapper's module runs "
                             "on every backend)",
    "test_metrics_generative.py": "FID/KID are numpy over Keras features (15 pass on JAX and "
                                  "torch by hand)",
}


def every_module_listed() -> dict[str, int]:
    """How many lists name each module (each test module must be in exactly one)."""
    counts: dict[str, int] = {}
    for group in (ON_EVERY_BACKEND, TENSORFLOW_SPECIFIC, SPAWN_EVERY_BACKEND,
                  BACKEND_INDEPENDENT, TENSORFLOW_IN_CI_FOR_TIME):
        for name in group:
            counts[name] = counts.get(name, 0) + 1
    return counts


def collected_on(backend: str, name: str) -> bool:
    """Whether test module ``name`` is collected when Keras runs on ``backend``."""
    if backend == "tensorflow" or os.environ.get("STEPKIT_ALL_TESTS") == "1":
        return True
    return name in ON_EVERY_BACKEND


def describe(backend: str) -> str:
    if backend == "tensorflow":
        return f"stepkit: Keras backend {backend!r}, every test module"
    return (f"stepkit: Keras backend {backend!r}: the modules of tests/backend_scope.py "
            f"ON_EVERY_BACKEND ({', '.join(sorted(ON_EVERY_BACKEND))}); STEPKIT_ALL_TESTS=1 "
            "collects every module")
