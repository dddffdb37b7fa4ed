"""The gan step: the guide's DCGAN, with the framework's bookkeeping."""

import keras
import numpy as np
import pytest

from stepkit import DataStructureError, StepModel
from stepkit.steps.gan import dcgan_discriminator, dcgan_generator


@pytest.fixture(scope="module")
def digits():
    import tensorflow as tf
    from sklearn.datasets import load_digits

    images = load_digits().images.astype("float32")[..., None] / 16.0
    return tf.image.resize(images, (28, 28)).numpy(), load_digits().target


def _gan(latent_dim=16, seed=3):
    keras.utils.set_random_seed(0)
    nets = {"generator": dcgan_generator(latent_dim, (28, 28, 1)),
            "discriminator": dcgan_discriminator((28, 28, 1))}
    model = StepModel(nets, step="gan", config={"latent_dim": latent_dim}, seed=seed)
    model.compile()
    return model


def test_default_networks_and_compile_defaults(digits):
    images, _ = digits
    gan = StepModel(step="gan", config={"latent_dim": 32})
    gan.compile()
    history = gan.fit(images[:64], epochs=1, batch_size=32, verbose=0).history
    assert set(history) == {"d_loss", "g_loss"}
    assert gan.generator.input_shape == (None, 32)
    assert gan.discriminator.input_shape == (None, 28, 28, 1)
    assert {r: int(o.iterations) for r, o in gan.optimizers.items()} == {
        "generator": 2, "discriminator": 2}
    for role in ("generator", "discriminator"):
        opt = gan.optimizers[role]
        assert isinstance(opt, keras.optimizers.Adam)
        assert float(opt.learning_rate) == pytest.approx(3e-4)
        # each optimizer is built on its own network's variables only
        assert len(opt.variables) == 2 + 2 * len(gan.networks[role].trainable_variables)
    assert gan.predict(np.zeros((3, 32), "float32"), verbose=0).shape == (3, 28, 28, 1)


def test_images_and_images_with_labels_give_the_same_run(digits):
    images, labels = digits
    a = _gan().fit(images[:96], epochs=1, batch_size=32, shuffle=False, verbose=0).history
    b = _gan().fit(images[:96], labels[:96], epochs=1, batch_size=32, shuffle=False,
                   verbose=0).history
    assert a == b


def test_noise_comes_from_the_models_seed(digits):
    images, _ = digits
    run = dict(epochs=1, batch_size=32, shuffle=False, verbose=0)
    same = [_gan(seed=3).fit(images[:64], **run).history for _ in range(2)]
    other = _gan(seed=4).fit(images[:64], **run).history
    assert same[0] == same[1]
    assert other != same[0]


def test_evaluate_reports_both_losses(digits):
    images, _ = digits
    gan = _gan()
    result = gan.evaluate(images[:64], batch_size=32, verbose=0, return_dict=True)
    assert set(result) == {"d_loss", "g_loss"}
    assert all(np.isfinite(v) and v > 0 for v in result.values())


def test_sample_weights_are_refused_not_ignored(digits):
    images, labels = digits
    gan = _gan()
    with pytest.raises(DataStructureError, match="cannot use sample weights"):
        gan.fit(images[:32], labels[:32], sample_weight=np.ones(32), verbose=0)
    with pytest.raises(DataStructureError, match="cannot use sample weights"):
        gan.fit(images[:32], labels[:32], class_weight={i: 1.0 for i in range(10)}, verbose=0)


def test_compile_metrics_are_refused():
    with pytest.raises(ValueError, match="does not use compile metrics.*d_loss, g_loss"):
        StepModel(step="gan").compile(metrics=["mae"])


@pytest.mark.tensorflow_only(
    "two epochs of the 28x28 DCGAN take minutes on a CPU under JAX and torch (XLA's CPU "
    "gradient of Conv2DTranspose is ~16 s a step, in keras.Model.fit alike); "
    "test_backend_fidelity.py trains a GAN on every backend")
def test_samples_move_toward_digits(digits):
    # Generated pixels must take on the digits' distribution (mostly dark, some
    # bright strokes): the 1-D Wasserstein distance between the two pixel
    # histograms must fall well below the untrained generator's (two epochs; the
    # README's grid after 15 epochs is the visual check).
    images, _ = digits
    gan = StepModel(step="gan", config={"latent_dim": 32}, seed=0)
    gan.compile()
    gan.build_from_data(images[:2])
    z = keras.random.normal((len(images), 32), seed=1)
    real = np.sort(images.ravel())

    def distance():
        return float(np.abs(np.sort(gan.predict(z, verbose=0).ravel()) - real).mean())

    before = distance()
    history = gan.fit(images, epochs=2, batch_size=64, verbose=0).history
    after = distance()
    assert np.isfinite(history["d_loss"]).all() and np.isfinite(history["g_loss"]).all()
    assert after < 0.75 * before, (before, after)
