"""Bad input gets a clear error naming what was wrong, what was received and the choices."""

import keras
import numpy as np
import pytest

from stepkit import ConfigError, DataStructureError, StepModel
from stepkit.steps.gan import GANConfig


def test_invalid_config_value_names_field_rule_and_value():
    with pytest.raises(ConfigError, match=r"'latent_dim' must be > 0: 0"):
        StepModel(step="gan", config={"latent_dim": 0})
    with pytest.raises(ConfigError, match=r"expected int @ \$\.latent_dim"):
        StepModel(step="gan", config={"latent_dim": "many"})


def test_unknown_config_key_is_rejected_with_its_path_and_the_fields():
    with pytest.raises(ConfigError, match=r"extra fields found \(latnt_dim\) @ \$.*"
                                          r"Fields of GANConfig: latent_dim, label_noise"):
        StepModel(step="gan", config={"latnt_dim": 64})


def test_config_strings_are_structured_and_instances_accepted():
    assert StepModel(step="gan", config={"latent_dim": "64"}).step.config.latent_dim == 64
    cfg = GANConfig(latent_dim=8)
    assert StepModel(step="gan", config=cfg).step.config is cfg
    with pytest.raises(ConfigError, match="expects its config as a mapping"):
        StepModel(step="gan", config=[("latent_dim", 8)])


def test_optimizer_dict_names_only_roles_and_omitted_roles_get_the_default():
    gan = StepModel(step="gan")
    gan.compile(optimizer={"generator": keras.optimizers.SGD(0.1)})
    assert isinstance(gan.optimizers["generator"], keras.optimizers.SGD)
    default = gan.optimizers["discriminator"]
    assert isinstance(default, keras.optimizers.Adam)
    assert float(default.learning_rate) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['critic'\]. Its optimizer roles: "
                                         r"generator, discriminator"):
        gan.compile(optimizer={"generator": "adam", "discriminator": "adam", "critic": "sgd"})
    with pytest.raises(ValueError, match=r"each with its own optimizer: pass optimizer="
                                         r"\{'generator': \.\.\., 'discriminator': \.\.\.\}"):
        gan.compile(optimizer=keras.optimizers.Adam())
    shared = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="same optimizer instance"):
        gan.compile(optimizer={"generator": shared, "discriminator": shared})


def test_an_optimizer_name_gives_each_role_its_own_optimizer():
    gan = StepModel(step="gan")
    gan.compile(optimizer="sgd")
    g, d = gan.optimizers["generator"], gan.optimizers["discriminator"]
    assert isinstance(g, keras.optimizers.SGD) and isinstance(d, keras.optimizers.SGD)
    assert g is not d and gan.optimizer is g


def test_networks_must_match_the_roles(mlp):
    with pytest.raises(ValueError, match=r"has 2 roles \(generator, discriminator\)"):
        StepModel(mlp(), step="gan")
    with pytest.raises(ValueError, match=r"Unknown role\(s\) \['critic'\].*generator, discrim"):
        StepModel({"critic": mlp()}, step="gan")
    with pytest.raises(TypeError, match=r"networks\['generator'\] must be a Keras model"):
        StepModel({"generator": "dcgan"}, step="gan")


def test_supervised_without_targets_is_a_data_structure_error(mlp):
    model = StepModel(mlp(), step="supervised")
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(DataStructureError, match=r"needs targets.*y=None"):
        model.fit(np.ones((4, 5), "float32"), verbose=0)


def test_gan_on_non_image_data_is_a_data_structure_error():
    gan = StepModel(step="gan")
    gan.compile()
    with pytest.raises(DataStructureError, match=r"divisible by 4.*\(5,\)"):
        gan.fit(np.ones((4, 5), "float32"), verbose=0)
    with pytest.raises(DataStructureError, match="trains on images"):
        gan.fit({"a": np.ones((4, 8, 8, 1), "float32")}, verbose=0)


def test_predict_before_default_networks_exist_says_how_to_build_them():
    gan = StepModel(step="gan")
    with pytest.raises(ValueError, match=r"have no network yet.*build_from_data"):
        gan(np.zeros((1, 128), "float32"))
    with pytest.raises(AttributeError, match="Role 'generator' has no network yet"):
        _ = gan.generator
