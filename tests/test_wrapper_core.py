"""The wrapper contract: registration, specs, the stack's order, roles, saving, errors."""

import json
import subprocess
import sys

import attrs
import keras
import numpy as np
import pytest
from keras import ops

import stepkit
from stepkit import StepModel
from stepkit.cli_settings import UsageError, parse_wrap
from stepkit.errors import ConfigError, UnknownWrapperError, WrapperError, WrapperStackError

CALLS: list[str] = []


@attrs.frozen
class ScaleConfig:
    factor: float = attrs.field(default=2.0, converter=float)


class Scale(stepkit.Wrapper):
    """Multiplies its roles' gradients; records the order its hooks run in."""

    name = "test-scale"
    config_class = ScaleConfig

    def gradients(self, ctx, role, loss_fn, regularization, inner):
        CALLS.append(f"{self.name}:gradients:{role}")
        grads, out = inner(role, loss_fn, regularization)
        return [g * self.config.factor for g in grads], out

    def apply_gradients(self, ctx, role, grads, inner):
        CALLS.append(f"{self.name}:apply:{role}")
        inner(role, grads)

    def train_step(self, ctx, data, inner):
        CALLS.append(f"{self.name}:train_step")
        inner(data)


class Offset(Scale):
    """Adds a constant to the gradients, so the order of the stack changes the numbers."""

    name = "test-offset"

    def gradients(self, ctx, role, loss_fn, regularization, inner):
        CALLS.append(f"{self.name}:gradients:{role}")
        grads, out = inner(role, loss_fn, regularization)
        return [g + self.config.factor for g in grads], out


class Counter(stepkit.Wrapper):
    """Saved state: counts its roles' updates; copies the weights into state at build."""

    name = "test-counter"

    def build_state(self, ctx):
        self.count = self.add_state(ctx, "count", (), "int64")
        self.copies = [self.add_state(ctx, f"copy_{i}", tuple(v.shape), v.dtype)
                       for i, v in enumerate(ctx.variables(self.roles[0]))]
        for copy, var in zip(self.copies, ctx.variables(self.roles[0]), strict=True):
            copy.assign(var)  # one array in two variables: JAX must not donate it twice

    def apply_gradients(self, ctx, role, grads, inner):
        inner(role, grads)
        self.count.assign_add(1)


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_wrappers(self, register):
        register(Scale)
        register(Offset)
        register(Counter)


stepkit.register_plugin(Plugin(), "test-wrappers")


def _net():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    return x, x @ rng.normal(size=(3, 2)).astype("float32")


def _fit(wrappers, lr=0.1, **fit):
    x, y = _data()
    model = StepModel(_net(), step="supervised", wrappers=wrappers)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", **fit)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model


def test_gradient_hook_equals_a_larger_learning_rate():
    wrapped = _fit([{"name": "test-scale", "factor": 3}], lr=0.1)
    plain = _fit(None, lr=0.3)
    for a, b in zip(wrapped.get_weights()[:2], plain.get_weights()[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_list_is_outermost_first():
    # outer scale(2) of inner offset(1): 2 * (g + 1); the other order: 2 * g + 1
    CALLS.clear()
    a = _fit([{"name": "test-scale", "factor": 2}, {"name": "test-offset", "factor": 1}],
             run_eagerly=True)
    assert CALLS[:5] == ["test-scale:train_step", "test-offset:train_step",
                         "test-scale:gradients:network", "test-offset:gradients:network",
                         "test-scale:apply:network"]
    b = _fit([{"name": "test-offset", "factor": 1}, {"name": "test-scale", "factor": 2}])
    x, y = _data()

    def by_hand(transform):  # SGD(0.1) with the stack's gradient, in numpy
        w, bias = [v.copy() for v in _net().get_weights()]
        for _ in range(2):
            for i in range(0, 32, 8):
                xb, yb = x[i:i + 8], y[i:i + 8]
                err = 2 * (xb @ w + bias - yb) / yb.size  # d mean((xw + b - y)^2)
                w -= 0.1 * transform(xb.T @ err)
                bias -= 0.1 * transform(err.sum(0))
        return w

    np.testing.assert_allclose(a.get_weights()[0], by_hand(lambda g: 2 * (g + 1)), rtol=1e-4)
    np.testing.assert_allclose(b.get_weights()[0], by_hand(lambda g: 2 * g + 1), rtol=1e-4)


def test_state_is_saved_and_the_spec_restored(tmp_path):
    model = _fit(["test-counter"])
    assert int(ops.convert_to_numpy(model.wrappers[0].count.value)) == 8
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [w.spec() for w in loaded.wrappers] == [{"name": "test-counter"}]
    assert int(ops.convert_to_numpy(loaded.wrappers[0].count.value)) == 8
    initial = [ops.convert_to_numpy(c.value) for c in loaded.wrappers[0].copies]
    np.testing.assert_array_equal(initial[0], _net().get_weights()[0])


def test_roles_limit_the_per_role_hooks():
    CALLS.clear()
    x = np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype("float32")
    nets = {"generator": keras.Sequential([keras.Input((4,)), keras.layers.Dense(64),
                                           keras.layers.Reshape((8, 8, 1))]),
            "discriminator": keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                               keras.layers.Dense(1)])}
    model = StepModel(nets, step="gan", config={"latent_dim": 4},
                      wrappers=[{"name": "test-scale", "roles": ["discriminator"]}])
    model.compile()  # hooks run when the step is traced
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    assert [c for c in CALLS if ":gradients:" in c] == ["test-scale:gradients:discriminator"]
    assert model.wrappers[0].roles == ("discriminator",)


@pytest.mark.parametrize(("spec", "error", "words"), [
    ("no-such-wrapper", UnknownWrapperError, "Available wrappers: .*test-counter"),
    ("test-scal", UnknownWrapperError, "Did you mean 'test-scale'"),
    ({"factor": 2}, WrapperError, "its name"),
    ({"name": "test-scale", "roles": ["generator"]}, WrapperError, "Valid roles: network"),
    ({"name": "test-scale", "roles": "network"}, WrapperError, "list of role names"),
    ({"name": "test-scale", "factr": 2}, ConfigError, "factor"),
    (["test-scale", "test-scale"], WrapperStackError, "more than once"),
], ids=["unknown", "close", "no-name", "bad-role", "roles-str", "bad-key", "twice"])
def test_bad_specs_say_what_and_how(spec, error, words):
    with pytest.raises(error, match=words):
        StepModel(_net(), step="supervised", wrappers=spec)


def test_wrap_flag_parses_to_specs():
    assert parse_wrap("ema") == {"name": "ema"}
    assert parse_wrap("sam:rho=0.05,adaptive=true") == {
        "name": "sam", "rho": "0.05", "adaptive": "true"}
    assert parse_wrap("ema:roles=generator+discriminator")["roles"] == [
        "generator", "discriminator"]
    with pytest.raises(UsageError, match="NAME:KEY=VALUE"):
        parse_wrap("sam:rho")


@pytest.mark.tensorflow_only(reason="the command line does not depend on the backend: run once")
def test_command_line_lists_and_uses_wrappers(tmp_path):
    env_run = [sys.executable, "-m", "stepkit"]
    listed = subprocess.run([*env_run, "list", "--json"], capture_output=True, text=True,
                            timeout=300, check=True)
    names = {w["name"] for w in json.loads(listed.stdout)["wrappers"]}
    assert {"lookahead"} <= names  # the example plugin, through its entry point
    out = tmp_path / "run"
    run = subprocess.run(
        [*env_run, "fit", "--step", "supervised", "--epochs", "1", "--limit", "64",
         "--image-size", "8", "--out", str(out), "--verbose", "0",
         "--wrap", "lookahead:k=2,alpha=0.5"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "wrapped in lookahead" in run.stdout
    saved = json.loads((out / "run.json").read_text())["wrappers"]
    assert saved == [{"name": "lookahead", "k": 2, "alpha": 0.5}]
    bad = subprocess.run([*env_run, "fit", "--step", "supervised", "--wrap", "lookahed"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Did you mean 'lookahead'" in bad.stderr


class Untracked(stepkit.Wrapper):
    """Keeps its counter in a variable of its own, not made with add_state."""

    name = "test-untracked"

    def build_state(self, ctx):
        self.count = keras.Variable(0, dtype="int32", trainable=False, name="untracked_count")

    def apply_gradients(self, ctx, role, grads, inner):
        inner(role, grads)
        self.count.assign_add(1)


stepkit.register_plugin(type("UntrackedPlugin", (), {
    "stepkit_register_wrappers": stepkit.hookimpl(
        lambda self, register: register(Untracked))})(), "test-untracked")


def test_state_outside_the_model_is_refused_where_it_would_be_lost():
    if keras.backend.backend() != "jax":  # TensorFlow and torch update it in place
        model = _fit(["test-untracked"])
        assert int(ops.convert_to_numpy(model.wrappers[0].count.value)) == 8
        return
    with pytest.raises(stepkit.StepDefinitionError, match="untracked_count.*add_state"):
        _fit(["test-untracked"])
