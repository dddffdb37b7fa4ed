import keras
import numpy as np
import pytest
import stepkit
from sklearn.datasets import load_digits


def digits(n=512):
    return (load_digits().images[:n] / 16.0).astype("float32")  # (n, 8, 8) in [0, 1]


def test_reconstruction_loss_halves():
    keras.utils.set_random_seed(0)
    vae = stepkit.StepModel(step="vae", config={"latent_dim": 2, "reconstruction": "mse"},
                            seed=0)
    vae.compile()
    history = vae.fit(digits(), batch_size=32, epochs=10, verbose=0).history
    assert set(history) == {"loss", "reconstruction_loss", "kl_loss"}
    assert history["reconstruction_loss"][-1] <= 0.5 * history["reconstruction_loss"][0]
    loss = np.array(history["reconstruction_loss"]) + np.array(history["kl_loss"])
    np.testing.assert_allclose(history["loss"], loss, rtol=1e-5)

    images = vae.predict(np.zeros((4, 2), "float32"), verbose=0)  # decodes latent vectors
    assert images.shape == (4, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_one_optimizer_trains_both_networks():
    vae = stepkit.StepModel(step="vae", seed=0)
    vae.compile()
    x = digits(16)
    vae.build_from_data(x)
    before = {r: [w.copy() for w in vae.networks[r].get_weights()] for r in ("encoder", "decoder")}
    vae.train_on_batch(x)
    assert list(vae.optimizers) == ["vae"]
    assert int(vae.optimizers["vae"].iterations) == 1
    for role, weights in before.items():
        now = vae.networks[role].get_weights()
        assert all(not np.array_equal(a, b) for a, b in zip(weights, now, strict=True)), role


def test_bad_reconstruction_is_a_clear_error():
    with pytest.raises(stepkit.ConfigError, match=r"reconstruction.*\('bce', 'mse'\).*'l1'"):
        stepkit.StepModel(step="vae", config={"reconstruction": "l1"})
