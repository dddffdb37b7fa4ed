"""Every ordered pair of built-in wrappers: refused with both names, or trains and resumes exactly.

A pair that is accepted must train (finite loss, weights move), and a model saved
mid-run and loaded must go on exactly as the original: the same weights after one
more batch, so both wrappers' state is saved and restored in the stack. The
numbers of each wrapper against a hand-written step, compiled, are in the wrapper's
own test module; these tests check that the stacks compose.
"""

import itertools

import keras
import numpy as np
import pytest

import stepkit
from stepkit import StepModel
from stepkit.errors import WrapperStackError

BUILT_IN = ["sam", "ema", {"name": "accumulate", "steps": 2},
            {"name": "adversarial", "method": "fgsm", "epsilon": 0.1}, {"name": "mixup"}]
# ordered pairs refused on purpose, with the words their error must contain
REFUSED = {("mixup", "adversarial")}


def _name(spec):
    return spec if isinstance(spec, str) else spec["name"]


def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 6)).astype("float32")
    return x, (x.sum(1) > 3).astype("int64")


def _model(pair):
    keras.utils.set_random_seed(2)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(2)])
    model = StepModel(net, step="supervised", wrappers=list(pair), seed=0)
    # eagerly: 20 stacks of a tiny net; each wrapper's own module tests it compiled
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


PAIRS = list(itertools.permutations(BUILT_IN, 2))


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{_name(a)}>{_name(b)}" for a, b in PAIRS])
def test_pair_is_refused_naming_both_or_trains_and_resumes_exactly(pair, tmp_path):
    names = tuple(_name(s) for s in pair)
    if names in REFUSED:
        with pytest.raises(WrapperStackError) as info:
            _model(pair)
        assert all(repr(n) in str(info.value) or n in str(info.value) for n in names)
        return
    x, y = _data()
    model = _model(pair)
    before = [w.copy() for w in model.network.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.network.get_weights(),
                                                         strict=True))
    model.save(tmp_path / "pair.keras")
    loaded = stepkit.load_model(tmp_path / "pair.keras")
    assert [w.spec() for w in loaded.wrappers] == [w.spec() for w in model.wrappers]
    for m in (model, loaded):  # one more batch each: equal if every state came back
        m.train_on_batch(x[:8], y[:8])
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-7)
