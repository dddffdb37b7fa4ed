"""conftest.py of the rewritten Keras test modules (copied into the run's directory).

Registers Keras' own markers, skips the out-of-scope tests (and those left out
of this backend's run for time) with their reason, and records on each test
report its node id and how many networks it wrapped in a StepModel (JUnit XML
properties ``nodeid``, ``stepkit_wrapped``, ``stepkit_overrides``).
"""

import os
import sys

try:
    # As in Keras' own conftest: torch is imported before TensorFlow, which would
    # otherwise make importing torch crash.
    import torch  # noqa: F401
except ImportError:
    torch = None

sys.path.insert(0, os.environ["STEPKIT_KERAS_SUITE_PATH"])

import pytest  # noqa: E402
from keras.src.backend import backend  # noqa: E402

from keras_suite import runtime  # noqa: E402
from keras_suite.scope import left_out_reason, out_of_scope_reason  # noqa: E402

# `python -m keras_suite --all`: run the tests left out of this backend's run for time.
RUN_ALL = os.environ.get("STEPKIT_KERAS_SUITE_ALL") == "1"


def skip_if_backend(given_backend, reason):
    """Keras' repository conftest helper, which some test modules import."""
    return pytest.mark.skipif(backend() == given_backend, reason=reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_trainable_backend: Keras' marker")
    config.addinivalue_line("markers", "multi_device: Keras' marker")


def pytest_collection_modifyitems(config, items):
    untrainable = backend() in ("numpy", "openvino")
    for item in items:
        item.user_properties.append(("nodeid", item.nodeid))
        reason = out_of_scope_reason(item.nodeid, backend())
        left_out = None if RUN_ALL else left_out_reason(item.nodeid, backend())
        if reason is not None:
            item.user_properties.append(("stepkit_out_of_scope", reason))
            item.add_marker(pytest.mark.skip(reason=f"stepkit out of scope: {reason}"))
        elif left_out is not None:
            item.user_properties.append(("stepkit_left_out", left_out))
            item.add_marker(pytest.mark.skip(
                reason=f"stepkit left out on {backend()}: {left_out}"))
        elif untrainable and "requires_trainable_backend" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="Trainer not implemented for backend"))


# Packages of other backends and data loaders that some parametrized variants
# import; Keras' CI installs them, stepkit need not: those variants are skipped.
NO_PACKAGE = "stepkit: not installed:"
OPTIONAL_PACKAGES = frozenset({"jax", "torch", "grain", "orbax", "flax", "tensorflow_text"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    excinfo = call.excinfo
    if report.failed and excinfo is not None and excinfo.errisinstance(ModuleNotFoundError):
        name = (excinfo.value.name or "").split(".")[0]
        if name in OPTIONAL_PACKAGES:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), 0, f"Skipped: {NO_PACKAGE} {name!r}")


@pytest.fixture(autouse=True)
def _stepkit_count(request):
    runtime.reset()
    yield
    stats = runtime.reset()
    request.node.user_properties.append(("stepkit_wrapped", str(stats["wrapped"])))
    if stats["overrides"]:
        request.node.user_properties.append(
            ("stepkit_overrides", ",".join(stats["overrides"])))
