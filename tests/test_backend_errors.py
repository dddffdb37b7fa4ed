"""Clear errors about backends: an unsupported one, and a step calling another's API."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).parent / "backend_children" / "foreign_step.py"
LINE = next(i for i, line in enumerate(CHILD.read_text().splitlines(), 1)
            if "return tf.reduce_mean(" in line)


def _run(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("backend", ["numpy", "openvino"])
def test_an_unsupported_backend_names_the_supported_ones(backend):
    out = _run(backend, "-c", "import stepkit.backend")
    if "ModuleNotFoundError: No module named 'openvino'" in out.stderr:
        pytest.skip("openvino is not installed, so Keras cannot select it")
    assert out.returncode != 0
    assert (f"stepkit does not support Keras' {backend!r} backend" in out.stderr
            and "Supported backends: tensorflow, jax, torch" in out.stderr), out.stderr[-2000:]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_step_calling_tensorflow_names_its_line_on_another_backend(backend):
    pytest.importorskip(backend)
    out = _run(backend, str(CHILD))
    text = out.stdout + out.stderr
    assert "StepDefinitionError: Step 'calls-tensorflow'" in out.stdout, text[-3000:]
    assert f"while Keras runs on {backend!r}" in out.stdout
    assert f"foreign_step.py:{LINE}: return tf.reduce_mean(" in out.stdout
    assert "(calls tensorflow)" in out.stdout and "keras.ops" in out.stdout


def test_the_same_step_trains_on_tensorflow():
    # The error is about the backend, not the step: on TensorFlow the same code trains.
    assert _run("tensorflow", str(CHILD)).stdout.strip().endswith("TRAINED")
