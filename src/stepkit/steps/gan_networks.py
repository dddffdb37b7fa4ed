"""Default networks of the ``gan`` step, for images ``(height, width, channels)``.

- :func:`dcgan_generator`, :func:`dcgan_discriminator`: the networks of Keras'
  "Customizing what happens in fit()" guide (the step's defaults);
- ``spectral_norm=True``: every convolution and dense layer of the discriminator
  wrapped in ``keras.layers.SpectralNormalization`` (Miyato et al. 2018, SNGAN),
  the usual partner of the hinge loss;
- conditional networks (``num_classes``): the generator takes
  ``{"z": latent vectors, "label": integer labels}`` and concatenates ``z`` with a
  learned embedding of the label; the discriminator takes
  ``{"image": images, "label": labels}`` and adds the projection
  ``<embed(label), features(image)>`` to its logit (Miyato and Koyama 2018,
  "cGANs with Projection Discriminator").
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


def dcgan_generator(latent_dim: int, shape: tuple[int, int, int]) -> keras.Model:
    """The guide's generator, for ``shape`` = (height, width, channels) divisible by 4."""
    h, w, c = shape
    return keras.Sequential([
        keras.Input(shape=(latent_dim,)),
        layers.Dense((h // 4) * (w // 4) * 128),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Reshape((h // 4, w // 4, 128)),
        layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(c, (7, 7), padding="same", activation="sigmoid"),
    ], name="generator")


def dcgan_discriminator(shape: tuple[int, int, int]) -> keras.Model:
    """The guide's discriminator: one logit per image."""
    return keras.Sequential([
        keras.Input(shape=shape),
        layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(128, (3, 3), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.GlobalMaxPooling2D(),
        layers.Dense(1),
    ], name="discriminator")


def _sn(layer: Any, spectral_norm: bool) -> Any:
    return layers.SpectralNormalization(layer) if spectral_norm else layer


def _generator_body(h: Any, shape: tuple[int, int, int]) -> Any:
    """The guide's generator after its input: dense, two 2x up-convolutions, a sigmoid."""
    height, width, c = shape
    h = layers.Dense((height // 4) * (width // 4) * 128)(h)
    h = layers.LeakyReLU(negative_slope=0.2)(h)
    h = layers.Reshape((height // 4, width // 4, 128))(h)
    for _ in range(2):
        h = layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same")(h)
        h = layers.LeakyReLU(negative_slope=0.2)(h)
    return layers.Conv2D(c, (7, 7), padding="same", activation="sigmoid")(h)


def _convolutions(image: Any, spectral_norm: bool) -> Any:
    """The guide's discriminator up to its last feature map."""
    h = image
    for filters in (64, 128):
        h = _sn(layers.Conv2D(filters, (3, 3), strides=(2, 2), padding="same"), spectral_norm)(h)
        h = layers.LeakyReLU(negative_slope=0.2)(h)
    return h


def _with_heads(logit: Any, maps: Any, classes: int | None, rotation: bool,
                spectral_norm: bool) -> Any:
    """``logit``, or ``{"logit", "classes"?, "rotation"?}`` with the auxiliary heads
    (:mod:`~stepkit.steps.gan_heads`) on the last feature map ``maps`` flattened."""
    if not classes and not rotation:
        return logit
    flat = layers.Flatten()(maps)
    out = {"logit": logit}
    if classes:
        out["classes"] = _sn(layers.Dense(classes), spectral_norm)(flat)
    if rotation:
        out["rotation"] = _sn(layers.Dense(4), spectral_norm)(flat)
    return out


def discriminator(shape: tuple[int, int, int], spectral_norm: bool = False,
                  rotation: bool = False) -> keras.Model:
    """The guide's discriminator, optionally spectrally normalised: one logit per image.

    ``rotation``: also the logits of SS-GAN's rotation task (Chen et al. 2019) from
    the last feature map flattened; the model then returns ``{"logit": (batch, 1),
    "rotation": (batch, 4)}``.
    """
    image = keras.Input(shape=shape, name="image")
    maps = _convolutions(image, spectral_norm)
    logit = _sn(layers.Dense(1), spectral_norm)(layers.GlobalMaxPooling2D()(maps))
    return keras.Model(image, _with_heads(logit, maps, None, rotation, spectral_norm),
                       name="discriminator")


def label_input() -> Any:
    """The symbolic integer labels a conditional network takes: shape ``(batch,)``."""
    return keras.Input((), dtype="int32", name="label")


def conditional_generator(latent_dim: int, num_classes: int,
                          shape: tuple[int, int, int]) -> keras.Model:
    """``{"z": (batch, latent_dim), "label": (batch,)}`` to images of ``shape``."""
    z, label = keras.Input((latent_dim,), name="z"), label_input()
    h = layers.Concatenate()([z, layers.Embedding(num_classes, latent_dim)(label)])
    return keras.Model({"z": z, "label": label}, _generator_body(h, shape), name="generator")


def projection_discriminator(shape: tuple[int, int, int], num_classes: int,
                             spectral_norm: bool = False, classifier: bool = False,
                             rotation: bool = False) -> keras.Model:
    """``{"image", "label"}`` to ``dense(features) + <embed(label), features>`` (one logit).

    ``classifier``: also an auxiliary classifier's class logits (AC-GAN, Odena et
    al. 2017), from the last feature map flattened; the model then returns
    ``{"logit": (batch, 1), "classes": (batch, num_classes)}``. Flattened, not
    max-pooled: global pooling keeps which local patterns occur but not where, and
    on the digits a classifier on the pooled features reached 38% accuracy after
    two epochs, 92% on the flattened ones. (The logit keeps the pooled features: a
    projection on the flattened ones made the discriminator win outright.)
    ``rotation``: also SS-GAN's rotation logits, ``"rotation": (batch, 4)``.
    """
    image, label = keras.Input(shape=shape, name="image"), label_input()
    maps = _convolutions(image, spectral_norm)
    features = layers.GlobalMaxPooling2D()(maps)
    logit = _sn(layers.Dense(1), spectral_norm)(features)
    # Not spectrally normalised: keras.layers.SpectralNormalization(Embedding) leaves the
    # embeddings without gradient on TensorFlow (Keras 3.15), so they would never train.
    embedded = layers.Embedding(num_classes, features.shape[-1])(label)
    logit = layers.Add()([logit, layers.Dot(axes=1)([embedded, features])])
    out = _with_heads(logit, maps, num_classes if classifier else None, rotation,
                      spectral_norm)
    return keras.Model({"image": image, "label": label}, out, name="discriminator")


def default_networks(loss: str, latent_dim: int, shape: tuple[int, int, int],
                     num_classes: int | None, classifier: bool = False,
                     rotation: bool = False) -> dict[str, keras.Model]:
    """The generator and discriminator that suit ``loss`` (and ``num_classes``, if given).

    ``bce`` without classes or heads gives exactly the guide's networks; ``hinge``
    gets a spectrally normalised discriminator; ``classifier`` and ``rotation`` add
    the auxiliary classifier's and the rotation task's heads to the discriminator.
    """
    spectral_norm = loss == "hinge"
    if num_classes:
        return {"generator": conditional_generator(latent_dim, num_classes, shape),
                "discriminator": projection_discriminator(shape, num_classes, spectral_norm,
                                                          classifier, rotation)}
    return {"generator": dcgan_generator(latent_dim, shape),
            "discriminator": discriminator(shape, spectral_norm, rotation)
            if spectral_norm or rotation else dcgan_discriminator(shape)}
