"""A small conditional GAN: trains on (images, labels); predict takes latent vectors and labels.

``model.predict({"z": z, "label": labels})`` (or ``predict((z, labels))``) makes
one image of class ``labels[i]`` from each latent vector ``z[i]``. A test
plugin of the conformance kit: its data kind is ``labeled-images`` and its
``predict`` input is a structure, not one array.
"""

import attrs
import keras
import numpy as np
from attrs import validators as v
from keras import layers, ops

import stepkit


@attrs.frozen
class CGANConfig:
    """Settings of the ``cgan`` step.

    Attributes:
        latent_dim: size of the generator's input noise vector.
        num_classes: number of labels (labels are integers in ``[0, num_classes)``).
    """

    latent_dim: int = attrs.field(default=8, validator=[v.instance_of(int), v.gt(0)])
    num_classes: int = attrs.field(default=10, validator=[v.instance_of(int), v.gt(1)])


def _label_input():
    return keras.Input((), dtype="int32", name="label")


def generator(latent_dim, num_classes, shape):
    z, label = keras.Input((latent_dim,), name="z"), _label_input()
    h = layers.Concatenate()([z, layers.Embedding(num_classes, latent_dim)(label)])
    h = layers.Dense(32, activation="relu")(h)
    h = layers.Dense(int(np.prod(shape)), activation="sigmoid")(h)
    return keras.Model({"z": z, "label": label}, layers.Reshape(shape)(h), name="generator")


def discriminator(num_classes, shape):
    image, label = keras.Input(shape, name="image"), _label_input()
    h = layers.Concatenate()([layers.Flatten()(image), layers.Embedding(num_classes, 4)(label)])
    h = layers.Dense(32)(h)
    h = layers.LeakyReLU(negative_slope=0.2)(h)
    return keras.Model({"image": image, "label": label}, layers.Dense(1)(h),
                       name="discriminator")


def _bce(targets, logits):
    logits = ops.cast(logits, "float32")
    return ops.mean(keras.losses.binary_crossentropy(targets, logits, from_logits=True))


class CGAN(stepkit.Step):
    """A conditional GAN: the discriminator sees (image, label); so does the generator.

    Data is ``(images, labels)`` with integer labels. ``model(inputs)`` and
    ``predict(inputs)`` take ``{"z": latent, "label": labels}`` or ``(z, labels)``.
    """

    name = "cgan"
    description = "Conditional GAN on (images, labels); predict({'z', 'label'}) (a test plugin)."
    config_class = CGANConfig
    roles = ("generator", "discriminator")
    tracked = ("d_loss", "g_loss")
    data_kind = "labeled-images"
    generative = True

    def default_optimizers(self):
        return {role: keras.optimizers.Adam(1e-3) for role in self.roles}

    def check_data(self, batch):
        x, y = batch.x, batch.y
        images = x is not None and not isinstance(x, list | tuple | dict) and len(x.shape) == 4
        labels = y is not None and not isinstance(y, list | tuple | dict) and "int" in str(y.dtype)
        if not (images and labels):
            raise stepkit.DataStructureError(
                f"Step {self.name!r} trains on (images, integer labels). Received a batch with "
                f"{batch.describe()}.")
        stepkit.StepContext.fail_on_sample_weight(self, batch)

    def default_networks(self, batch, missing):
        shape = tuple(batch.x.shape[1:])
        c = self.config
        made = {"generator": generator(c.latent_dim, c.num_classes, shape),
                "discriminator": discriminator(c.num_classes, shape)}
        return {role: made[role] for role in missing}

    def call_spec(self, batch):
        return {"z": keras.KerasTensor((None, self.config.latent_dim)),
                "label": keras.KerasTensor((None,), dtype="int32")}

    def build_inputs(self, batch):
        label = keras.KerasTensor((None,), dtype="int32")
        return {"generator": self.call_spec(batch),
                "discriminator": {"image": batch.x, "label": label}}

    def sample_inputs(self, n, seed):
        # One class per grid row: n // num_classes samples of each class.
        c = self.config
        per_class = max(1, n // c.num_classes)
        z = np.random.default_rng(seed).standard_normal((per_class * c.num_classes, c.latent_dim))
        labels = np.repeat(np.arange(c.num_classes, dtype="int32"), per_class)
        return {"z": z.astype("float32"), "label": labels}

    def sample_grid_columns(self, n):
        return max(1, n // self.config.num_classes)

    def call(self, ctx, inputs, training=False):
        if isinstance(inputs, list | tuple):
            inputs = dict(zip(("z", "label"), inputs, strict=True))
        label = ops.reshape(ops.cast(inputs["label"], "int32"), (-1,))
        return ctx.networks["generator"]({"z": inputs["z"], "label": label}, training=training)

    def _losses(self, ctx, real, labels, training):
        g, d = ctx.networks["generator"], ctx.networks["discriminator"]
        n = ctx.batch_size(real)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        z = ctx.normal((n, self.config.latent_dim))
        fake = ops.cast(g({"z": z, "label": labels}, training=training), real.dtype)

        def d_loss_fn():
            return (_bce(ops.ones((n, 1)), d({"image": fake, "label": labels}, training=training))
                    + _bce(ops.zeros((n, 1)), d({"image": real, "label": labels},
                                                training=training)))

        z2 = ctx.normal((n, self.config.latent_dim))

        def g_loss_fn():
            made = g({"z": z2, "label": labels}, training=training)
            return _bce(ops.zeros((n, 1)), d({"image": made, "label": labels}, training=training))

        return n, d_loss_fn, g_loss_fn

    def train_step(self, ctx, data):
        real, labels, _ = ctx.unpack(data)
        n, d_loss_fn, g_loss_fn = self._losses(ctx, real, labels, training=True)
        d_loss = ctx.minimize("discriminator", d_loss_fn)
        g_loss = ctx.minimize("generator", g_loss_fn)
        ctx.track("d_loss", d_loss, n)
        ctx.track("g_loss", g_loss, n)

    def test_step(self, ctx, data):
        real, labels, _ = ctx.unpack(data)
        n, d_loss_fn, g_loss_fn = self._losses(ctx, real, labels, training=False)
        ctx.track("d_loss", d_loss_fn(), n)
        ctx.track("g_loss", g_loss_fn(), n)


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(CGAN)
