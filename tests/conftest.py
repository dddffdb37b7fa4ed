import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from backend_scope import collected_on, describe  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return describe(BACKEND)


def pytest_ignore_collect(collection_path, config):
    # On JAX and torch only the modules of backend_scope.ON_EVERY_BACKEND are collected;
    # backend_scope.py gives every other module's reason.
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return (not collected_on(BACKEND, collection_path.name)) or None
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tensorflow_only(reason): the test checks what only TensorFlow has")


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    for item in items:
        marker = item.get_closest_marker("tensorflow_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow only: {reason}"))


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 5)).astype("float32")  # 103: a partial last batch of 16
    y = (x @ rng.normal(size=(5, 1)) + 0.1).astype("float32")
    return x, y


@pytest.fixture
def mlp():
    def make(seed=1, out=1, activation=None):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(out, activation=activation),
        ])

    return make


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")
