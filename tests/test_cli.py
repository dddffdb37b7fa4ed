"""The ``stepkit`` command line: real subprocesses (``python -m stepkit``) where it matters."""

import json
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import attrs  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import stepkit  # noqa: E402
import stepkit.registry  # noqa: E402
from stepkit.cli import main  # noqa: E402
from stepkit.steps.gan import GANConfig  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run_cli(*args, env=None, timeout=240, cwd=None):
    return subprocess.run([sys.executable, "-m", "stepkit", *map(str, args)], env=env or ENV,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def fit_args(out, *extra, step="gan"):
    return [str(a) for a in ["fit", "--step", step, "--epochs", "1", "--limit", "64",
                             "--batch-size", "32", "--image-size", "8", "--verbose", "0",
                             "--out", out, *extra]]


# ---------------------------------------------------------------- list / info


def test_list_json_shows_builtin_steps(capsys):
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    steps = {s["name"]: s for s in out["steps"]}
    assert {"supervised", "custom-loss", "gan"} <= set(steps)
    assert steps["gan"]["distribution"] == "stepkit"
    assert steps["gan"]["version"] == stepkit.__version__
    assert steps["gan"]["roles"] == ["generator", "discriminator"]
    assert steps["gan"]["description"] == stepkit.get_step("gan").description


def test_list_shows_a_broken_plugin_instead_of_crashing(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_stepkit_plugin.py").write_text("raise ImportError('no module foo')\n")
    dist = tmp_path / "broken_stepkit_plugin-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-stepkit-plugin\n"
                                   "Version: 0.3\n")
    (dist / "entry_points.txt").write_text("[stepkit]\nbroken = broken_stepkit_plugin\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV.get("PYTHONPATH", "")])}
    text = run_cli("list", env=env)
    assert text.returncode == 0, text.stderr
    assert "BROKEN broken (broken-stepkit-plugin 0.3): ImportError: no module foo" in text.stdout
    assert "gan" in text.stdout and "supervised" in text.stdout
    monkeypatch.syspath_prepend(str(tmp_path))  # the same installed entry point, in-process
    stepkit.registry.reset_registry()
    try:
        assert main(["list", "--json"]) == 0
    finally:
        stepkit.registry.reset_registry()
    as_json = json.loads(capsys.readouterr().out)
    assert "gan" in {s["name"] for s in as_json["steps"]}
    assert as_json["broken"] == [{"plugin": "broken", "distribution": "broken-stepkit-plugin",
                                  "version": "0.3", "error": "ImportError: no module foo"}]


def test_info_json_reports_fields_optimizers_and_networks(capsys):
    assert main(["info", "gan", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    fields = {f["name"]: f for f in info["config"]}
    assert fields["latent_dim"]["type"] == "int" and fields["latent_dim"]["default"] == 128
    assert fields["latent_dim"]["constraints"] == ["instance of int", "> 0"]
    assert fields["label_noise"]["constraints"] == [">= 0.0", "converted with float"]
    assert "noise vector" in fields["latent_dim"]["doc"]
    expected = stepkit.get_step("gan")().default_optimizers()["generator"]
    opt = info["default_optimizers"]["generator"]
    assert opt["class_name"] == type(expected).__name__ == "Adam"
    assert opt["learning_rate"] == pytest.approx(float(expected.learning_rate), rel=1e-6)
    assert info["default_networks"] is True and info["cli"]["generative"] is True


def test_info_text_for_a_step_without_default_networks(capsys):
    assert main(["info", "custom-loss"]) == 0
    text = capsys.readouterr().out
    assert "loss: str | Callable = default 'mse'" in text
    assert "default networks: no" in text and "network: RMSprop(learning_rate=0.001" in text


def test_unknown_step_is_exit_2_with_the_registry_message():
    proc = run_cli("info", "gam")
    assert proc.returncode == 2
    assert "Unknown step 'gam'. Did you mean 'gan'?" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- fit


def test_fit_gan_writes_every_output(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*fit_args(out, "--set", "latent_dim=16", "--seed", "3"))
    assert proc.returncode == 0, proc.stderr
    for name in ("model.keras", "history.csv", "history.json", "loss.png", "run.json",
                 "samples/epoch-001.png"):
        assert (out / name).is_file(), name
        assert str(out / name) in proc.stdout or name == "run.json" or "samples" in name
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["latent_dim"] == 16 and run["seed"] == 3  # "16" became an int
    records = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in records] == [1] and {"d_loss", "g_loss"} <= set(records[0])
    model = stepkit.load_model(out / "model.keras")
    assert model.step.config.latent_dim == 16
    assert model.predict(np.zeros((2, 16), "float32"), verbose=0).shape == (2, 8, 8, 1)


@pytest.mark.parametrize("step", ["supervised", "custom-loss"])
def test_fit_classifier_steps_get_a_network_loss_and_accuracy(tmp_path, capsys, step):
    out = tmp_path / step
    argv = fit_args(out, step=step)
    argv[argv.index("--epochs") + 1] = "2"
    assert main(argv) == 0
    records = json.loads((out / "history.json").read_text())
    assert len(records) == 2 and {"loss", "accuracy"} <= set(records[0])
    assert records[1]["loss"] < records[0]["loss"] < 3.0  # softmax cross-entropy over 10
    model = stepkit.load_model(out / "model.keras")
    assert model.predict(np.zeros((1, 8, 8, 1), "float32"), verbose=0).shape == (1, 10)


@pytest.mark.parametrize("step", ["wgan-gp", "vae", "distill"])
def test_fit_plugin_steps_when_installed(tmp_path, capsys, step):
    if step not in {i.name for i in stepkit.list_steps()}:
        pytest.skip(f"the {step!r} plugin is not installed")
    out = tmp_path / step
    assert main(fit_args(out, step=step)) == 0
    records = json.loads((out / "history.json").read_text())
    assert len(records) == 1 and all(np.isfinite(v) for v in records[0].values())
    samples = list((out / "samples").glob("*.png"))
    assert len(samples) == (step != "distill")  # generative steps get sample grids
    assert stepkit.load_model(out / "model.keras").step.name == step


def test_config_file_then_flags_then_set(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('step = "gan"\nepochs = 1\nlimit = 32\nimage_size = 8\nbatch_size = 32\n'
                   f'out = "{(tmp_path / "from-file").as_posix()}"\n'
                   "[config]\nlatent_dim = 8\nlabel_noise = 0.0\n")
    out = tmp_path / "from-flag"
    assert main(["fit", "--config", str(cfg), "--out", str(out), "--set", "latent_dim=12",
                 "--verbose", "0"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"] == attrs.asdict(GANConfig(latent_dim=12, label_noise=0.0))
    assert run["limit"] == 32 and not (tmp_path / "from-file").exists()


def test_json_config_file_with_an_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"step": "gan", "epoch": 3}))
    assert main(["fit", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "Unknown key(s) ['epoch']" in err and "epochs" in err


def test_bad_set_key_and_value_point_at_the_key(tmp_path):
    proc = run_cli(*fit_args(tmp_path / "a", "--set", "latent_dm=64"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "latent_dm" in proc.stderr and "Fields of GANConfig: latent_dim" in proc.stderr
    assert main(fit_args(tmp_path / "b", "--set", "latent_dim=abc")) == 2
    assert main(fit_args(tmp_path / "c", "--set", "latent_dim")) == 2
    assert not (tmp_path / "a").exists()


def test_missing_and_malformed_data_files(tmp_path, capsys):
    assert main(fit_args(tmp_path / "o", "--data", tmp_path / "missing.npz")) == 2
    err = capsys.readouterr().err
    assert "missing.npz" in err and "does not exist" in err and "'x'" in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 8, 8)))
    assert main(fit_args(tmp_path / "o", "--data", bad)) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "no key 'x'" in err and "['images']" in err


def test_unknown_step_for_fit(capsys):
    assert main(["fit", "--step", "nope"]) == 2
    assert "Unknown step 'nope'" in capsys.readouterr().err


def test_resume_continues_from_the_backup(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(fit_args(out)) == 0
    assert main(fit_args(out)) == 2  # refuses to overwrite a run without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["fit", "--resume", str(out), "--epochs", "3", "--verbose", "0"]) == 0
    records = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2, 3]
    model = stepkit.load_model(out / "model.keras")
    steps_per_epoch = 2  # 64 samples, batch 32
    for role, opt in model.optimizers.items():  # restored optimizer state, then 2 more epochs
        assert int(opt.iterations.numpy()) == 3 * steps_per_epoch, role


def test_ctrl_c_stops_cleanly_and_saves(tmp_path):
    out = tmp_path / "run"
    argv = fit_args(out, "--epochs", "500")
    proc = subprocess.Popen([sys.executable, "-m", "stepkit", *map(str, argv)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (out / "history.json").exists() and proc.poll() is None:
        assert time.time() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert "interrupted; saved the run so far" in stdout
    records = json.loads((out / "history.json").read_text())
    assert 1 <= len(records) < 500
    model = stepkit.load_model(out / "model.keras")
    assert int(model.optimizers["generator"].iterations.numpy()) >= 2
    assert (out / "backup").is_dir()


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit" in out and "list" in out and "info" in out
    assert main(["fit", "--epochs", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err
    assert main(["fit", "--step", "gan", "--limit", "0"]) == 2
    assert "'limit' must be a positive integer. Received 0" in capsys.readouterr().err
