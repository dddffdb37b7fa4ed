import keras
import numpy as np
import pytest
import stepkit
from sklearn.datasets import load_digits

from stepkit_wgan_gp import WGANGP, WGANGPConfig


def digits(n=512):
    return (load_digits().images[:n] / 16.0).astype("float32")  # (n, 8, 8) in [0, 1]


def mean_image_distance(model, data, latent_dim):
    z = np.random.default_rng(1).normal(size=(len(data), latent_dim)).astype("float32")
    samples = model.predict(z, verbose=0)
    return float(np.mean(np.abs(samples.mean(axis=0) - data.mean(axis=0))))


# --8<-- [start:usage]
def test_generator_moves_toward_the_data():
    x = digits()
    keras.utils.set_random_seed(0)
    gan = stepkit.StepModel(step="wgan-gp", config={"latent_dim": 16}, seed=0)
    gan.compile()  # Adam(1e-4, beta_1=0.0, beta_2=0.9) for each role
    gan.build_from_data(x[:32])
    before = mean_image_distance(gan, x, 16)
    history = gan.fit(x, batch_size=32, epochs=40, shuffle=False, verbose=0).history
    after = mean_image_distance(gan, x, 16)
    # --8<-- [end:usage]

    assert np.all(np.isfinite(history["w_distance"])) and np.all(np.isfinite(history["c_loss"]))
    assert after < 0.8 * before, (before, after)
    steps = 40 * 16
    assert int(gan.optimizers["critic"].iterations) == steps
    assert int(gan.optimizers["generator"].iterations) == steps // 5


@pytest.mark.parametrize("n_critic, steps", [(3, 7), (1, 4), (5, 4)])
def test_generator_updates_once_every_n_critic_steps(n_critic, steps):
    x = digits(2 * steps)
    gan = stepkit.StepModel(step="wgan-gp", config={"latent_dim": 4, "n_critic": n_critic},
                            seed=0)
    gan.compile()
    gan.fit(x, batch_size=2, epochs=1, verbose=0)
    assert int(gan.optimizers["critic"].iterations) == steps
    assert int(gan.optimizers["generator"].iterations) == steps // n_critic


def test_defaults_follow_the_paper():
    config = WGANGPConfig()
    assert (config.n_critic, config.gp_weight) == (5, 10.0)
    for role, opt in WGANGP().default_optimizers().items():
        assert role in ("generator", "critic")
        assert float(opt.learning_rate) == pytest.approx(1e-4)
        assert (opt.beta_1, opt.beta_2) == (0.0, 0.9)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    # critic(x) = sum(x) / 8 over 64 pixels has gradient norm exactly 1 everywhere.
    critic = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(),
                               keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
                               keras.layers.Rescaling(1 / 8)])
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64),
                           keras.layers.Reshape((8, 8))])
    gan = stepkit.StepModel({"generator": gen, "critic": critic}, step="wgan-gp",
                            config={"latent_dim": 4}, seed=0)
    gan.compile()
    logs = gan.evaluate(digits(32), batch_size=16, verbose=0, return_dict=True)
    assert logs["gp"] == pytest.approx(0.0, abs=1e-6)


def test_bad_config_and_data_are_clear_errors():
    with pytest.raises(stepkit.ConfigError, match="n_critic"):
        stepkit.StepModel(step="wgan-gp", config={"n_critic": 0})
    gan = stepkit.StepModel(step="wgan-gp")
    gan.compile()
    with pytest.raises(stepkit.DataStructureError, match="sample weights"):
        gan.fit(digits(8), np.zeros(8), sample_weight=np.ones(8), verbose=0)
