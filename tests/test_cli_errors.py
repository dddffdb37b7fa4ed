"""Errors of ``stepkit`` in plain words, before TensorFlow loads where they can be."""

import subprocess
import sys

import numpy as np
import pytest
from test_cli import ENV, fit_args, run_cli
from test_cli_output import GAN_FIELDS

PROBE = ("import sys; from stepkit.cli import main; rc = main(sys.argv[1:]); "
         "print('tensorflow loaded:', 'tensorflow' in sys.modules); sys.exit(rc)")


def run_probe(*args, cwd=None):
    """The command line in a fresh process that also says whether TensorFlow was imported."""
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=240)


def error_of(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ---------------------------------------------------------------- config values


def test_misspelt_config_key_gets_the_closest_field(tmp_path):
    err = error_of(run_cli(*fit_args(tmp_path / "o", "--set", "latnt_dim=64")))
    assert err == ("stepkit fit: error: Invalid config for step 'gan': unknown setting "
                   f"'latnt_dim'; did you mean latent_dim? Fields of GANConfig: {GAN_FIELDS}.")
    assert not (tmp_path / "o").exists()


def test_a_validator_error_names_the_field_and_the_value(tmp_path):
    err = error_of(run_cli(*fit_args(tmp_path / "o", "--set", "label_noise=-1",
                                     "--set", "latent_dim=x")))
    assert "latent_dim must be an int, got 'x'" in err
    proc = run_cli(*fit_args(tmp_path / "o", "--set", "label_noise=-1"))
    assert "label_noise must be >= 0.0, got -1.0" in error_of(proc)
    assert "@ $" not in proc.stderr


def test_step_names_match_whatever_their_case(tmp_path):
    proc = run_cli("info", "GAN")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gan  (stepkit ")
    err = error_of(run_cli(*fit_args(tmp_path / "o", "--set", "latent_dim=abc", step="Gan")))
    assert "Invalid config for step 'gan'" in err


# ---------------------------------------------------------------- data


def test_a_text_file_given_as_npz_is_a_plain_error_before_tensorflow(tmp_path):
    text = tmp_path / "x.npz"
    text.write_text("step,loss\n1,0.5\n")
    proc = run_probe(*fit_args(tmp_path / "o", "--data", text))
    err = error_of(proc)
    assert err == (f"stepkit fit: error: Data file '{text}' is not a readable .npz file: it "
                   "holds text ('step,loss'...), not the zip archive numpy.savez writes. "
                   "Expected a file written by numpy.savez(path, x=samples, y=labels) with key "
                   "'x' (and optionally 'y').")
    assert "pickle" not in err
    assert "tensorflow loaded: False" in proc.stdout
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8)))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    err = error_of(run_cli(*fit_args(tmp_path / "o", "--data", tmp_path / "a.npz")))
    assert "single .npy array (numpy.save); save with numpy.savez instead" in err


def test_float_labels_are_refused_not_truncated(tmp_path):
    x = np.random.default_rng(0).random((8, 8, 8)).astype("float32")
    np.savez(tmp_path / "f.npz", x=x, y=np.linspace(0, 1, 8))
    proc = run_probe(*fit_args(tmp_path / "o", "--data", tmp_path / "f.npz",
                               step="supervised"))
    err = error_of(proc)
    assert "'y' holds non-integer values (e.g. 0.14285714285714285)" in err
    assert "does not round them" in err and "tensorflow loaded: False" in proc.stdout
    np.savez(tmp_path / "whole.npz", x=x, y=np.arange(8, dtype="float64") % 2)
    from stepkit.data import load_data

    assert load_data(tmp_path / "whole.npz").y.tolist() == [0, 1] * 4


@pytest.mark.parametrize("argv", [["fit", "--epochs", "1"],
                                  ["fit", "--step", "gan", "--config", "missing.toml"],
                                  ["fit", "--step", "gan", "--validation-split", "1.5"]])
def test_usage_errors_come_before_tensorflow(tmp_path, argv):
    proc = run_probe(*argv, cwd=tmp_path)
    error_of(proc)
    assert "tensorflow loaded: False" in proc.stdout


def test_an_image_size_the_step_cannot_use_names_sizes_that_work(tmp_path):
    proc = run_cli("fit", "--step", "gan", "--image-size", "30", "--epochs", "1", "--limit",
                   "32", "--verbose", "0", cwd=tmp_path)
    err = error_of(proc)
    assert err.startswith("stepkit fit: error: --image-size 30 does not suit this step.")
    assert "(30, 30, 1)" in err
    assert err.endswith("From the command line: pass --image-size 28 or --image-size 32 "
                        "instead.")
    assert list(tmp_path.iterdir()) == []  # no stray runs/gan-... folder
