"""What ``stepkit`` prints and writes, as a newcomer runs it: real subprocesses, a user's env."""

import json
import os
import re

import attrs
import numpy as np
import pytest
from PIL import Image
from test_cli import fit_args, run_cli

import stepkit
from stepkit.cli_quiet import is_backend_log_line
from stepkit.steps.gan import GANConfig

GAN_FIELDS = ", ".join(f.name for f in attrs.fields(GANConfig))

# A user's environment: nothing that quiets TensorFlow already.
USER_ENV = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel", "GRPC_VERBOSITY")}
USER_ENV["PYTHONUNBUFFERED"] = "1"


def user_cli(*args, **kwargs):
    return run_cli(*args, env=USER_ENV, **kwargs)


def backend_lines(text):
    return [line for line in text.splitlines() if is_backend_log_line(line)]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """One tiny GAN run, as a user starts it (no --seed), shared by the tests below."""
    out = tmp_path_factory.mktemp("gan") / "run"
    return out, user_cli(*fit_args(out, "--epochs", "2", "--set", "latent_dim=8"))


# ---------------------------------------------------------------- no backend noise


def test_list_prints_no_backend_log_line():
    proc = user_cli("list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and not backend_lines(proc.stdout)
    assert "gan" in proc.stdout


def test_info_prints_no_backend_log_line():
    proc = user_cli("info", "gan")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and not backend_lines(proc.stdout)


def test_fit_prints_no_backend_log_line(gan_run):
    _, proc = gan_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert not backend_lines(proc.stdout)
    assert all(line.startswith(("stepkit:", "  ", "         ")) for line in
               proc.stdout.splitlines()), proc.stdout


def test_an_error_is_one_line_and_no_backend_log_line(tmp_path):
    proc = user_cli(*fit_args(tmp_path / "o", "--set", "latent_dim=abc"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "stepkit fit: error: Invalid config for step 'gan': latent_dim must be an int, got "
        f"'abc'. Fields of GANConfig: {GAN_FIELDS}."]
    assert proc.stdout == ""


def test_debug_brings_back_backend_logs_and_tracebacks(tmp_path):
    proc = user_cli("--debug", "fit", *fit_args(tmp_path / "o", "--set", "latent_dim=abc")[1:])
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"Fields of GANConfig: {GAN_FIELDS}.")
    quiet = user_cli("info", "gan")
    debug = user_cli("info", "gan", "--debug")
    assert quiet.stdout == debug.stdout and quiet.stderr == ""
    if not backend_lines(debug.stderr):
        pytest.skip("this TensorFlow build prints no log line at start-up")


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"stepkit {stepkit.__version__} (keras ")


# ---------------------------------------------------------------- the run's files


def test_done_block_lists_every_output_with_final_figures(gan_run):
    out, proc = gan_run
    text = proc.stdout
    assert "seed 0 (--seed N to change)" in text
    assert f"stepkit: done after 2 epochs in {out}" in text
    records = json.loads((out / "history.json").read_text())
    train = re.search(r"^  train +(.*)$", text, re.M).group(1)
    r = records[-1]  # the gan's losses, then the sample quality the CLI logs each epoch
    assert train == (f"d_loss {r['d_loss']:.4g}, g_loss {r['g_loss']:.4g}, fid {r['fid']:.4g}, "
                     f"kid {r['kid']:.4g}")
    for path in ("run.json", "model.keras", "history.csv", "loss.png",
                 "samples/epoch-002.png", "samples/progress.gif"):
        assert str(out / path) in text, path
    assert "(2 grids; more: stepkit sample" in text


def test_sample_grids_are_labelled_and_animated(gan_run):
    out, _ = gan_run
    first, last = (np.asarray(Image.open(out / "samples" / f"epoch-00{i}.png").convert("L"))
                   for i in (1, 2))
    strip = 14 * 1  # the label strip above the tiles
    assert first.shape == last.shape and first.shape[0] == first.shape[1] + strip
    assert (first[:strip] < 128).any() and not np.array_equal(first[:strip], last[:strip])
    with Image.open(out / "samples" / "progress.gif") as gif:
        assert gif.n_frames == 2 and gif.info["loop"] == 0


def test_loss_plot_has_a_title_labels_and_one_panel_per_value(tmp_path):
    records = [{"epoch": 1, "loss": 0.7, "gp": 50.0, "val_loss": 0.8},
               {"epoch": 2, "loss": 0.6, "gp": 40.0, "val_loss": 0.7},
               {"epoch": 3, "loss": 0.5, "gp": 30.0, "val_loss": 0.6}]
    fig = _figure_of(records)
    assert fig.get_suptitle() == "step 'x': training history"
    assert [a.get_title() for a in fig.axes] == ["loss", "gp"]  # 0.7 and 50: apart
    assert [a.get_ylabel() for a in fig.axes] == ["loss", "gp"]
    assert all(a.get_xlabel() == "epoch" for a in fig.axes)
    ticks = [t for a in fig.axes for t in a.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["loss", "val_loss"]


def _figure_of(records):
    """The Figure ``plot_history`` draws, caught at savefig."""
    from matplotlib.figure import Figure

    from stepkit.pictures import plot_history

    caught = []
    original = Figure.savefig
    Figure.savefig = lambda self, *args, **kwargs: caught.append(self)
    try:
        plot_history(records, "unused.png", title="step 'x'")
    finally:
        Figure.savefig = original
    return caught[0]


def test_seeded_runs_are_byte_identical_and_the_default_seed_is_0(gan_run, tmp_path):
    out, _ = gan_run
    again = tmp_path / "again"
    argv = fit_args(again, "--epochs", "2", "--set", "latent_dim=8", "--seed", "0")
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    for name in ("history.json", "history.csv", "loss.png", "samples/epoch-001.png",
                 "samples/epoch-002.png", "samples/progress.gif"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    a, b = (stepkit.load_model(d / "model.keras") for d in (out, again))
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


# ---------------------------------------------------------------- sample, resume


def test_sample_repeats_the_last_grid_and_takes_n(gan_run, tmp_path):
    out, _ = gan_run
    proc = run_cli("sample", out, "--out", tmp_path / "grid.png")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 64 samples of step 'gan' (seed 0) to {tmp_path / 'grid.png'}" in proc.stdout
    assert (tmp_path / "grid.png").read_bytes() == (out / "samples/epoch-002.png").read_bytes()
    proc = run_cli("sample", out / "model.keras", "--n", "6", "--cols", "3", "--out",
                   tmp_path / "six.png")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "six.png") as im:  # 3x2 tiles of 8+1 pixels, twice the size,
        assert im.size == (2 * (3 * 9 + 1), 2 * (2 * 9 + 1) + 14)  # under an "epoch 2" strip


def test_sample_refuses_what_it_cannot_sample(tmp_path):
    proc = run_cli("sample", tmp_path)
    assert proc.returncode == 2
    assert "neither a run folder holding model.keras" in proc.stderr


def test_resume_of_a_finished_run_says_how_to_extend_it(gan_run):
    out, _ = gan_run
    before = (out / "history.json").read_bytes()
    proc = run_cli("fit", "--resume", out, "--verbose", "0")
    assert proc.returncode == 0, proc.stderr
    assert f"the run in {out} is complete: it has trained 2 of 2 epochs" in proc.stdout
    assert f"stepkit fit --resume {out} --epochs 4" in proc.stdout
    assert (out / "history.json").read_bytes() == before


def test_resume_counts_all_of_the_runs_grids(gan_run):
    out, _ = gan_run
    proc = run_cli("fit", "--resume", out, "--epochs", "3", "--verbose", "0")
    assert proc.returncode == 0, proc.stderr
    assert "(3 grids; more: stepkit sample" in proc.stdout
    with Image.open(out / "samples" / "progress.gif") as gif:
        assert gif.n_frames == 3
