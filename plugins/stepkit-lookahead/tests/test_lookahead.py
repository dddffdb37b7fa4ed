"""The ``lookahead`` wrapper, found through its installed entry point, against Keras' fit
with Lookahead written by hand (Zhang et al. 2019, Algorithm 1) in a callback."""

import keras
import numpy as np
import pytest
import stepkit
from stepkit import StepModel


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype("float32")
    return x, (x @ rng.normal(size=(4, 2))).astype("float32")


def _net():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(2)])


class HandWrittenLookahead(keras.callbacks.Callback):
    """Algorithm 1 of the paper, on the weights of a plain keras.Model after each batch."""

    def __init__(self, k, alpha):
        super().__init__()
        self.k, self.alpha, self.updates = k, alpha, 0

    def on_train_begin(self, logs=None):
        self.slow = [w.copy() for w in self.model.get_weights()]

    def on_train_batch_end(self, batch, logs=None):
        self.updates += 1
        if self.updates % self.k == 0:
            fast = self.model.get_weights()
            self.slow = [s + self.alpha * (f - s) for s, f in zip(self.slow, fast, strict=True)]
            self.model.set_weights(self.slow)


def test_found_through_its_entry_point():
    info = {i.name: i for i in stepkit.list_wrappers()}["lookahead"]
    assert info.distribution == "stepkit-lookahead"
    assert info.entry_points == ("lookahead",)


@pytest.mark.parametrize("k", [1, 3])
def test_equals_keras_fit_with_lookahead_by_hand(k, tmp_path):
    x, y = _data()
    reference = _net()
    reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                  callbacks=[HandWrittenLookahead(k, 0.5)])

    model = StepModel(_net(), step="supervised",
                      wrappers=[{"name": "lookahead", "k": k, "alpha": 0.5}])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for got, want in zip(model.network.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # 12 updates: the count and the slow weights are saved and restored with the model
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_config()["wrappers"] == [{"name": "lookahead", "k": k, "alpha": 0.5}]
    assert int(keras.ops.convert_to_numpy(loaded.wrappers[0].count["network"].value)) == 12
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_config_is_refused_with_the_valid_range():
    with pytest.raises(stepkit.ConfigError, match="alpha"):
        StepModel(_net(), step="supervised", wrappers=[{"name": "lookahead", "alpha": 1.5}])
