import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
