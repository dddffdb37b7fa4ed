"""stepkit.data: the offline digits, .npz files, image folders and cached Keras datasets."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits as sk_digits  # noqa: E402

from stepkit.data import DataError, load_data, load_digits  # noqa: E402


def test_digits_are_1797_images_in_unit_range_with_labels():
    x, y = load_digits()
    assert x.shape == (1797, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    raw = sk_digits()
    np.testing.assert_array_equal(y, raw.target)
    small, _ = load_digits(image_size=None)
    np.testing.assert_allclose(small[..., 0], raw.images / 16.0, rtol=1e-6)
    # The resized image is the same picture: block means match the 8x8 original.
    big, _ = load_digits(image_size=32)
    blocks = big[..., 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.corrcoef(blocks.ravel(), raw.images.ravel())[0, 1] > 0.9


def test_kinds_and_limit():
    images = load_data(kind="images", limit=10)
    assert images.x.shape == (10, 28, 28, 1) and images.y.shape == (10,)
    vectors = load_data("digits", kind="vectors", limit=5, image_size=8)
    assert vectors.x.shape == (5, 64)
    with pytest.raises(DataError, match="Valid kinds: images, labeled-images, vectors"):
        load_data(kind="pictures")
    with pytest.raises(DataError, match="positive"):
        load_data(limit=0)


def test_npz_with_uint8_images_and_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    y = np.arange(12) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_data(tmp_path / "d.npz", kind="labeled-images")
    assert data.x.shape == (12, 8, 8, 1)
    np.testing.assert_allclose(data.x[..., 0], x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y, y)


def test_npz_without_labels_refused_for_labeled_steps(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), "float32"))
    assert load_data(tmp_path / "d.npz").y is None
    with pytest.raises(DataError, match="needs labels.*'y'"):
        load_data(tmp_path / "d.npz", kind="labeled-images")


def test_missing_file_names_it_and_the_expected_keys(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(tmp_path / "nope.npz")
    assert "nope.npz" in str(err.value) and "'x'" in str(err.value)


def test_malformed_npz_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="bad.npz.*not a readable .npz"):
        load_data(bad)


def test_npz_without_x_lists_received_and_expected_keys(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4)), labels=np.zeros(2))
    with pytest.raises(DataError) as err:
        load_data(tmp_path / "d.npz")
    msg = str(err.value)
    assert "no key 'x'" in msg and "['images', 'labels']" in msg and "'y'" in msg


def test_npz_label_count_must_match(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 4, 4)), y=np.zeros(3))
    with pytest.raises(DataError, match=r"one label per sample.*\(4, 4, 4\).*\(3,\)"):
        load_data(tmp_path / "d.npz")


def test_vectors_refused_for_image_steps(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.zeros((4, 10)))
    with pytest.raises(DataError, match="vectors of shape \\(4, 10\\)"):
        load_data(tmp_path / "v.npz", kind="images")
    assert load_data(tmp_path / "v.npz", kind="vectors").x.shape == (4, 10)


def test_image_folder_with_class_subfolders(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for label, value in (("cats", 40), ("dogs", 200)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((10, 12), value, np.uint8)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "dogs" / "notes.txt").write_text("ignored")
    data = load_data(tmp_path, kind="labeled-images", image_size=16)
    assert data.x.shape == (6, 16, 16, 1)
    np.testing.assert_array_equal(data.y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(data.x[0].mean(), 40 / 255, atol=1e-3)
    np.testing.assert_allclose(data.x[-1].mean(), 200 / 255, atol=1e-3)


def test_flat_image_folder_has_no_labels_and_rgb_keeps_channels(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{i}.jpg")
    data = load_data(tmp_path, image_size=8)
    assert data.x.shape == (2, 8, 8, 3) and data.y is None


def test_empty_image_folder(tmp_path):
    with pytest.raises(DataError, match="no PNG/JPEG files"):
        load_data(tmp_path)


def test_keras_dataset_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for name in ("mnist", "fashion_mnist", "cifar10"):
        with pytest.raises(DataError, match=f"{name!r} is not in the local cache.*never downloads"):
            load_data(name)
    assert not list(tmp_path.iterdir())  # nothing was fetched or created


def test_cached_mnist_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    x = np.full((5, 28, 28), 255, np.uint8)
    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=x, y_train=np.arange(5),
             x_test=x[:1], y_test=np.arange(1))
    data = load_data("mnist", kind="labeled-images")
    assert data.x.shape == (5, 28, 28, 1) and data.x.max() == 1.0
    np.testing.assert_array_equal(data.y, np.arange(5))


def test_unknown_data_spec_lists_choices():
    with pytest.raises(DataError, match="does not exist.*digits.*npz.*mnist, fashion_mnist"):
        load_data("no-such-thing")
