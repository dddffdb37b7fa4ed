"""stepkit.callbacks with real Keras training: SampleGrid, HistoryFiles, StopOnInterrupt."""

import json
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import stepkit  # noqa: E402
from stepkit.callbacks import (  # noqa: E402
    HistoryFiles,
    SampleGrid,
    StopOnInterrupt,
    image_grid,
    is_generative,
)
from stepkit.data import load_digits  # noqa: E402


@pytest.fixture(scope="module")
def images():
    x, _ = load_digits(image_size=8)
    return x[:64]


def tiny_gan(latent_dim=4):
    gen = keras.Sequential([keras.Input((latent_dim,)), keras.layers.Dense(64, "sigmoid"),
                            keras.layers.Reshape((8, 8, 1))])
    disc = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(1)])
    model = stepkit.StepModel({"generator": gen, "discriminator": disc}, step="gan",
                              config={"latent_dim": latent_dim}, seed=1)
    model.compile()
    return model


def test_image_grid_places_tiles_row_by_row():
    tiles = np.stack([np.full((2, 3, 1), v, "float32") for v in (0.0, 0.25, 0.5, 1.0, 0.75)])
    grid = image_grid(tiles, cols=2, pad=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 1) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 64 and grid[4, 1, 0] == 128
    assert grid[4, 5, 0] == 255 and grid[7, 1, 0] == 191
    assert grid[0, 0, 0] == 255 and grid[7, 5, 0] == 255  # padding and the empty 6th tile
    with pytest.raises(ValueError, match=r"Received shape \(2, 3\)"):
        image_grid(np.zeros((2, 3)))


def test_sample_grid_saves_predictions_of_fixed_latents(tmp_path, images):
    model = tiny_gan()
    grid = SampleGrid(tmp_path, num_samples=4, seed=7)
    model.fit(images, epochs=2, batch_size=32, verbose=0, callbacks=[grid])
    assert [p.name for p in grid.paths] == ["epoch-001.png", "epoch-002.png"]
    z = np.random.default_rng(7).standard_normal((4, 4)).astype("float32")
    np.testing.assert_array_equal(grid.latent_vectors(), z)
    saved = matplotlib.image.imread(grid.paths[-1])[..., 0]
    expected = image_grid(model.predict(z, verbose=0)).repeat(2, 0).repeat(2, 1)[..., 0]
    np.testing.assert_allclose(saved * 255, expected, atol=1.01)
    first = matplotlib.image.imread(grid.paths[0])
    assert not np.array_equal(first, matplotlib.image.imread(grid.paths[1]))  # it trained


def test_sample_grid_every_and_last_epoch(tmp_path, images):
    grid = SampleGrid(tmp_path, num_samples=2, every=2)
    tiny_gan().fit(images, epochs=3, batch_size=32, verbose=0, callbacks=[grid])
    assert [p.name for p in grid.paths] == ["epoch-002.png", "epoch-003.png"]


def test_sample_grid_needs_a_latent_size(tmp_path, images):
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
    model = stepkit.StepModel(net, step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="latent_dim"):
        model.fit(images, np.zeros((64, 10)), epochs=1, verbose=0,
                  callbacks=[SampleGrid(tmp_path)])


def test_generative_rule():
    assert is_generative(stepkit.get_step("gan"))
    assert not is_generative(stepkit.get_step("supervised"))
    assert not is_generative(stepkit.get_step("custom-loss"))
    names = {i.name for i in stepkit.list_steps()}
    for name in {"wgan-gp", "vae"} & names:
        assert is_generative(stepkit.get_step(name))
    if "distill" in names:
        assert not is_generative(stepkit.get_step("distill"))


def test_history_files_match_keras_history(tmp_path, images):
    model = tiny_gan()
    history = model.fit(images, epochs=2, batch_size=32, verbose=0,
                        callbacks=[HistoryFiles(tmp_path)])
    records = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("d_loss", "g_loss"):
        np.testing.assert_allclose([r[key] for r in records], history.history[key], rtol=1e-6)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,d_loss,g_loss" and len(lines) == 3
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_history_files_continue_an_earlier_run(tmp_path, images):
    (tmp_path / "history.json").write_text(json.dumps(
        [{"epoch": 1, "d_loss": 9.0, "g_loss": 9.0}, {"epoch": 2, "d_loss": 8.0, "g_loss": 8.0}]))
    tiny_gan().fit(images, epochs=3, initial_epoch=1, batch_size=32, verbose=0,
                   callbacks=[HistoryFiles(tmp_path, plot=False)])
    records = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["d_loss"] == 9.0 and records[1]["d_loss"] != 8.0  # epoch 2 re-ran


class _SignalAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            os.kill(os.getpid(), signal.SIGINT)


def test_stop_on_interrupt_ends_fit_cleanly_after_the_batch(images):
    model = tiny_gan()
    stop = StopOnInterrupt()
    seen = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    before = signal.getsignal(signal.SIGINT)
    history = model.fit(images, epochs=50, batch_size=8, verbose=0,
                        callbacks=[stop, _SignalAt(), counter])
    assert stop.interrupted
    assert seen == [0, 1]  # stopped right after the batch that got the signal
    assert len(history.epoch) == 1
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
