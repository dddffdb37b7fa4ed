"""Save, load and resume: every optimizer, the config and the RNG state survive."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import keras
import numpy as np
import pytest
from keras import ops

import stepkit
from stepkit import ConfigError, StepModel, UnknownStepError


@keras.saving.register_keras_serializable(package="stepkit_tests")
def abs_error(y_true, y_pred):
    return ops.mean(ops.abs(y_true - y_pred), axis=-1)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    return x, (x[:, :1] * 2 + 1).astype("float32")


def _images():
    return np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")


def _model(kind):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                            keras.layers.Dense(1)])
    if kind == "supervised":
        m = StepModel(net, step="supervised", seed=1)
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
        return m, _data()
    if kind == "custom-loss":
        m = StepModel(net, step="custom-loss", config={"loss": abs_error}, seed=1)
        m.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["mse"])
        return m, _data()
    m = StepModel(step="gan", config={"latent_dim": 8, "label_noise": 0.1}, seed=1)
    m.compile(optimizer={"generator": keras.optimizers.Adam(1e-3),
                         "discriminator": keras.optimizers.SGD(1e-2, momentum=0.5)})
    return m, (_images(), None)


def _fit(m, data, epochs=1):
    x, y = data
    return m.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0).history


def _state(m):
    return {
        "weights": [w.numpy().tolist() for w in m.weights],
        "optimizers": {r: [v.numpy().tolist() for v in o.variables]
                       for r, o in m.optimizers.items()},
        "iterations": {r: int(o.iterations) for r, o in m.optimizers.items()},
    }


CHILD = """
import json, sys, numpy as np, keras
import stepkit, tests.test_saving as t
m = stepkit.load_model(sys.argv[1])
x, y = (np.load(sys.argv[2] + ".x.npy"), None) if m.step.name == "gan" else t._data()
out = {"step": m.step.name, "config": stepkit.config.unstructure_config(m.step.config),
       "compile": m.get_compile_config(), "before": t._state(m),
       "rng": m._seed_generator.state.numpy().tolist()}
if m.step.name == "gan":
    out["images"] = m.predict(np.load(sys.argv[2] + ".z.npy"), verbose=0).tolist()
out["history"] = t._fit(m, (x, None if m.step.name == "gan" else y))
out["after"] = t._state(m)
print(json.dumps(out))
"""


def _run_child(path, prefix):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(prefix)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["supervised", "custom-loss", "gan"])
def test_save_and_load_in_a_fresh_interpreter_then_train_on(kind, tmp_path):
    m, data = _model(kind)
    _fit(m, data)
    path = tmp_path / "m.keras"
    m.save(path)
    np.save(tmp_path / "d.x.npy", data[0])
    z = np.random.default_rng(5).normal(size=(4, 8)).astype("float32")
    np.save(tmp_path / "d.z.npy", z)
    expected = {"step": m.step.name, "config": stepkit.config.unstructure_config(m.step.config),
                "compile": m.get_compile_config(), "before": _state(m),
                "rng": m._seed_generator.state.numpy().tolist()}
    if kind == "gan":
        expected["images"] = m.predict(z, verbose=0).tolist()
    loaded = _run_child(path, tmp_path / "d")
    for key, value in expected.items():
        if key == "images":
            np.testing.assert_allclose(loaded[key], value, atol=1e-6)
        else:
            assert loaded[key] == value, key
    # One more epoch here and there gives the same weights and optimizer state.
    _fit(m, data)
    after = _state(m)
    assert loaded["after"]["iterations"] == after["iterations"]
    for a, b in zip(loaded["after"]["weights"], after["weights"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for role in after["optimizers"]:
        for a, b in zip(loaded["after"]["optimizers"][role], after["optimizers"][role],
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_save_before_training_round_trips(tmp_path):
    m, _ = _model("gan")  # default networks not built yet: nothing to lose
    m.save(tmp_path / "fresh.keras")
    loaded = stepkit.load_model(tmp_path / "fresh.keras")
    assert loaded.step.config == m.step.config
    assert set(loaded.optimizers) == {"generator", "discriminator"}
    assert isinstance(loaded.optimizers["discriminator"], keras.optimizers.SGD)


def _rewrite_config(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                edit(cfg)
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)


def test_step_not_installed_names_it_and_how_to_list(tmp_path):
    m, data = _model("supervised")
    m.save(tmp_path / "m.keras")
    _rewrite_config(tmp_path / "m.keras", tmp_path / "t.keras",
                    lambda c: c["config"].update(step="not-installed"))
    with pytest.raises(UnknownStepError, match="Unknown step 'not-installed'.*stepkit list"):
        stepkit.load_model(tmp_path / "t.keras")


@pytest.mark.parametrize("edit", [
    # a network swapped for a class from an arbitrary module
    lambda c: c["config"]["networks"]["network"].update(module="os", class_name="system"),
    # the config's loss swapped for a function from an arbitrary module
    lambda c: c["config"]["config"].update(
        loss={"module": "os", "class_name": "function", "config": "system",
              "registered_name": "function"}),
    # an unregistered class name
    lambda c: c["config"]["networks"]["network"].update(class_name="EvilModel",
                                                        registered_name="evil>EvilModel"),
])
def test_tampered_files_are_refused_without_importing(edit, tmp_path):
    m, _ = _model("custom-loss")
    m.save(tmp_path / "m.keras")
    _rewrite_config(tmp_path / "m.keras", tmp_path / "t.keras", edit)
    marker = "os" in sys.modules  # os is always loaded; check nothing ran instead
    with pytest.raises((TypeError, ValueError)):
        stepkit.load_model(tmp_path / "t.keras")
    assert marker


def test_legacy_h5_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Legacy HDF5 \(.h5\).*refused"):
        stepkit.load_model(tmp_path / "m.h5")


def test_unregistered_lambda_fails_at_save_time(tmp_path):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    m = StepModel(net, step="custom-loss", config={"loss": lambda y, p: ops.mean((y - p) ** 2)})
    m.compile(optimizer="sgd")
    with pytest.raises(ConfigError, match="cannot be saved.*register_keras_serializable"):
        m.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_plain_keras_load_model_works_once_stepkit_is_imported(tmp_path):
    m, data = _model("gan")
    _fit(m, data)
    m.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.optimizers["generator"].iterations.numpy() == 4


def test_get_config_round_trip_and_json(tmp_path):
    for kind in ("supervised", "custom-loss", "gan"):
        m, data = _model(kind)
        _fit(m, data)
        clone = StepModel.from_config(json.loads(json.dumps(m.get_config())))
        assert clone.step.name == m.step.name and clone.step.config == m.step.config
        assert stepkit.config.structure_config(
            type(m.step.config), json.loads(json.dumps(
                stepkit.config.unstructure_config(m.step.config))), step=kind) == m.step.config


RESUME_SCRIPT = textwrap.dedent("""
    import json, os, sys, time, numpy as np, keras
    import tests.test_saving as t
    kind, backup, marker, out, save_freq = sys.argv[1:6]
    save_freq = "epoch" if save_freq == "epoch" else int(save_freq)
    m, data = t._model(kind)

    class Stall(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if marker != "-" and self._epoch == 2 and batch == 2:   # middle of epoch 3 of 5
                open(marker, "w").close()
                time.sleep(600)                                      # wait to be killed
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    cbs = [Stall()]
    if backup != "-":
        cbs.insert(0, keras.callbacks.BackupAndRestore(backup, save_freq=save_freq))
    x, y = data
    m.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0, callbacks=cbs)
    json.dump(t._state(m), open(out, "w"))
""")


def _resume_run(tmp_path, kind, save_freq):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    backup, marker = tmp_path / "backup", tmp_path / "marker"

    def start(marker_arg, out):
        return subprocess.Popen([sys.executable, str(script), kind, str(backup), marker_arg,
                                 str(out), str(save_freq)], env=env)

    victim = start(str(marker), tmp_path / "never.json")
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert victim.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "training never reached epoch 3"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    resumed = start("-", tmp_path / "resumed.json")
    assert resumed.wait(timeout=300) == 0
    plain = subprocess.run([sys.executable, str(script), kind, "-", "-",
                            str(tmp_path / "plain.json"), "epoch"], env=env, timeout=300)
    assert plain.returncode == 0
    return (json.loads((tmp_path / "resumed.json").read_text()),
            json.loads((tmp_path / "plain.json").read_text()))


@pytest.mark.parametrize(("kind", "save_freq"), [("supervised", "epoch"), ("gan", "epoch"),
                                               ("supervised", 3), ("gan", 2)])
def test_backup_and_restore_after_sigkill_matches_an_uninterrupted_run(kind, save_freq,
                                                                        tmp_path):
    # Killed after batch 2 of epoch 3: a backup every 3 batches holds batches 0-2 of
    # it, one every 2 batches only 0-1; both resume exactly where the backup was made.
    resumed, plain = _resume_run(tmp_path, kind, save_freq)
    assert resumed["iterations"] == plain["iterations"]
    for a, b in zip(resumed["weights"], plain["weights"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for role in plain["optimizers"]:
        for a, b in zip(resumed["optimizers"][role], plain["optimizers"][role], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_model_checkpoint_whole_model_and_weights_only(tmp_path):
    m, data = _model("gan")
    x, _ = data
    m.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(tmp_path / "full.keras"),
        keras.callbacks.ModelCheckpoint(tmp_path / "w.weights.h5", save_weights_only=True)])
    full = stepkit.load_model(tmp_path / "full.keras")
    other, _ = _model("gan")
    other.build_from_data(x[:2])
    other.load_weights(tmp_path / "w.weights.h5")
    for loaded in (full, other):
        assert _state(loaded) == _state(m)
