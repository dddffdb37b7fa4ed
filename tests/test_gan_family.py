"""The gan step's family: each loss, penalty and trick against its formula, on every backend.

Each reference is written here from the paper's formula with ``keras.ops`` and the
backend's own gradient (``tf.GradientTape``, ``jax.grad``, ``torch.autograd``),
on tiny networks (8x8x1 images, latent 8, batch 8) updated by SGD, and compared
with what one to three training steps of the step leave in the weights.
The generator of these comparisons makes one learned image whatever its noise,
so the reference needs none of the step's random draws.
"""

import json

import keras
import numpy as np
import pytest
from keras import layers, ops

import stepkit
from stepkit import ConfigError, StepModel
from stepkit.callbacks import SampleGrid
from stepkit.config import structure_config
from stepkit.describe import describe_step, format_step
from stepkit.steps.gan import GAN, GANConfig
from stepkit.steps.gan_augment import cutout, diff_augment, translation
from stepkit.steps.gan_heads import rotate, turns_for
from stepkit.steps.gan_presets import PRESETS

BACKEND = keras.backend.backend()
N, SIDE, LATENT, LR, CLASSES = 8, 8, 8, 0.1, 3
RTOL = 1e-5
STEPS_PER_EXECUTION = 1 if BACKEND == "torch" else 2  # torch runs one step per call


@keras.saving.register_keras_serializable(package="test_gan_family")
class LearnedImage(layers.Layer):
    """G(z) = sigmoid(b) for every z (with labels: sigmoid(b[label]))."""

    def __init__(self, classes=1, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}

    def build(self, input_shape):
        self.b = self.add_weight(shape=(self.classes, SIDE, SIDE, 1),
                                 initializer=keras.initializers.RandomNormal(seed=1))

    def call(self, inputs):
        z, label = (inputs["z"], inputs["label"]) if isinstance(inputs, dict) else (inputs, None)
        image = self.b[:1] if label is None else ops.take(self.b, label, axis=0)
        return ops.sigmoid(image) + 0.0 * ops.reshape(z[:, :1], (-1, 1, 1, 1))


def critic():
    init = keras.initializers.RandomNormal(stddev=0.5, seed=2)
    return keras.Sequential([keras.Input((SIDE, SIDE, 1)), layers.Flatten(),
                             layers.Dense(6, activation="tanh", kernel_initializer=init),
                             layers.Dense(1, kernel_initializer=init)])


def learned_image_gan(**config):
    nets = {"generator": keras.Sequential([keras.Input((LATENT,)), LearnedImage()]),
            "discriminator": critic()}
    model = StepModel(nets, step="gan", config={"latent_dim": LATENT, **config}, seed=1)
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in nets})
    return model


def real_images(seed=0):
    return np.random.default_rng(seed).random((N, SIDE, SIDE, 1)).astype("float32")


# ---------------------------------------------------------------- the backend's gradients


def grad(fn, values):
    """Gradients of the scalar ``fn(values)`` for a list of arrays, as NumPy arrays."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        values = [tf.convert_to_tensor(v) for v in values]
        with tf.GradientTape() as tape:
            tape.watch(values)
            out = fn(values)
        return [None if g is None else np.asarray(tf.convert_to_tensor(g))  # IndexedSlices too
                for g in tape.gradient(out, values)]
    if BACKEND == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(fn)([np.asarray(v) for v in values])]
    import torch

    values = [torch.tensor(np.asarray(v), requires_grad=True) for v in values]
    grads = torch.autograd.grad(fn(values), values, allow_unused=True)
    return [None if g is None else g.detach().cpu().numpy() for g in grads]


def input_grad(fn, x):
    """Differentiable gradient of ``sum(fn(x))`` for the input ``x``."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.reduce_sum(fn(x))
        return tape.gradient(out, x)
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        return jax.grad(lambda t: jnp.sum(fn(t)))(x)
    import torch

    x = torch.as_tensor(np.asarray(x)).requires_grad_(True)
    return torch.autograd.grad(torch.sum(fn(x)), x, create_graph=True)[0]


def forward(net, values, x):
    return net.stateless_call(list(values), [v.value for v in net.non_trainable_variables],
                              x, training=True)[0]


def sgd(values, fn):
    """One SGD update; a weight without gradient (None: the loss does not depend on it) stays."""
    return [np.asarray(v) - (0 if g is None else LR * g)
            for v, g in zip(values, grad(fn, values), strict=True)]


def weights(net):
    return [np.asarray(v) for v in net.trainable_variables]


def assert_all_close(actual, expected, rtol=RTOL):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-6)


# ---------------------------------------------------------------- the papers' formulas


def sq_norms(d, dv, x):
    g = input_grad(lambda t: forward(d, dv, t), x)
    return ops.sum(ops.square(g), axis=(1, 2, 3))


def adversarial(loss, d_fake, d_real, smoothing=0.0):
    """(discriminator loss, generator loss) on logits, as the papers write them."""
    if loss == "bce":  # the guide's coding: 1 = generated; BCE from logits: softplus(l) - t l
        def bce(t, logit):
            return ops.mean(ops.softplus(logit) - t * logit)
        return (0.5 * bce(1.0, d_fake) + 0.5 * bce(smoothing, d_real)), bce(0.0, d_fake)
    if loss == "hinge":  # Lim & Ye 2017
        return (ops.mean(ops.relu(1 - d_real)) + ops.mean(ops.relu(1 + d_fake)),
                -ops.mean(d_fake))
    if loss == "least-squares":  # Mao et al. 2017, a=0, b=c=1
        return (0.5 * ops.mean((d_real - (1 - smoothing)) ** 2) + 0.5 * ops.mean(d_fake ** 2),
                0.5 * ops.mean((d_fake - 1) ** 2))
    assert loss == "wasserstein"  # Arjovsky et al. 2017
    return ops.mean(d_fake) - ops.mean(d_real), -ops.mean(d_fake)


def penalty(d, dv, real, fake, r1=0.0, r2=0.0, gp=0.0):
    total = 0.0
    if r1:  # Mescheder et al. 2018
        total = total + r1 / 2 * ops.mean(sq_norms(d, dv, real))
    if r2:
        total = total + r2 / 2 * ops.mean(sq_norms(d, dv, fake))
    if gp:  # Gulrajani et al. 2017, at x_hat = real (the tests make fake == real)
        total = total + gp * ops.mean((ops.sqrt(sq_norms(d, dv, real) + 1e-12) - 1) ** 2)
    return total


def reference_steps(model, batches, loss="hinge", smoothing=0.0, n_dis=1, split=True,
                    every=1, **weights_of_penalties):
    """The generator's and discriminator's weights after one step per batch, and the
    discriminator losses of the last step."""
    g, d = model.generator, model.discriminator
    gv, dv = weights(g), weights(d)

    def generated(g_values, n):
        return forward(g, g_values, np.zeros((n, LATENT), "float32"))

    def d_loss(w, real, fake):
        m = len(real)
        logits = forward(d, w, ops.concatenate([fake, real], axis=0))
        value = adversarial(loss, logits[:m], logits[m:], smoothing)[0]
        if every == 1 and weights_of_penalties:
            value = value + penalty(d, w, real, fake, **weights_of_penalties)
        return value

    def g_loss(w, d_values):
        d_fake = forward(d, d_values, generated(w, N))
        return adversarial(loss, d_fake, d_fake, smoothing)[1]

    scaled = {k: every * v for k, v in weights_of_penalties.items()}
    for step, real in enumerate(batches):
        parts = np.split(real, n_dis) if split else [real] * n_dis
        d_losses = []
        for part in parts:
            fake = generated(gv, len(part))
            d_losses.append(float(d_loss(dv, part, fake)))
            dv = sgd(dv, lambda w, part=part, fake=fake: d_loss(w, part, fake))
        if every > 1 and step % every == 0:  # lazy: its own update, weights times every
            fake = generated(gv, len(parts[-1]))
            dv = sgd(dv, lambda w, p=parts[-1], f=fake: penalty(d, w, p, f, **scaled))
        gv = sgd(gv, lambda w, d_values=dv: g_loss(w, d_values))
    return gv, dv, d_losses


def run_steps(model, batches):
    logs = [model.train_on_batch(b, return_dict=True) for b in batches]
    return weights(model.generator), weights(model.discriminator), logs[-1]


# ---------------------------------------------------------------- losses and penalties


@pytest.mark.parametrize("config", [
    {"loss": "bce", "label_noise": 0.0, "label_smoothing": 0.1},
    {"loss": "hinge", "label_noise": 0.0},
    {"loss": "least-squares", "label_noise": 0.0, "label_smoothing": 0.2},
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_each_loss_is_its_papers_formula(config):
    model = learned_image_gan(**config)
    real = real_images()
    expected = reference_steps(model, [real], config["loss"],
                               config.get("label_smoothing", 0.0))
    got = run_steps(model, [real])
    assert_all_close(got[0] + got[1], expected[0] + expected[1])
    np.testing.assert_allclose(got[2]["d_loss"], expected[2][0], rtol=RTOL)


@pytest.mark.parametrize("penalty_config", [{"r1_gamma": 2.0}, {"r2_gamma": 3.0},
                                            {"gp_lambda": 10.0, "loss": "wasserstein"}],
                         ids=["r1", "r2", "wgan-gp"])
def test_each_penalty_is_its_papers_formula(penalty_config):
    config = {"loss": "hinge", "label_noise": 0.0, **penalty_config}
    model = learned_image_gan(**config)
    real = real_images()
    if "gp_lambda" in config:  # real == generated: x_hat is the real image for every alpha
        real = np.asarray(model.generator.predict(np.zeros((N, LATENT)), verbose=0))
    names = {"r1_gamma": "r1", "r2_gamma": "r2", "gp_lambda": "gp"}
    weights_of = {names[k]: v for k, v in penalty_config.items() if k in names}
    expected = reference_steps(model, [real], config["loss"], **weights_of)
    got = run_steps(model, [real])
    assert_all_close(got[0] + got[1], expected[0] + expected[1])
    np.testing.assert_allclose(got[2]["d_loss"], expected[2][0], rtol=RTOL)


def test_lazy_r1_runs_every_k_steps_in_its_own_update_with_weight_times_k():
    # compiled with XLA on TensorFlow too, two steps per execution: the schedule reads the
    # step counter inside the compiled loop
    model = learned_image_gan(loss="hinge", label_noise=0.0, r1_gamma=2.0, penalty_every=2)
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in GAN.roles},
                  jit_compile=BACKEND != "torch", steps_per_execution=STEPS_PER_EXECUTION)
    batches = [real_images(0), real_images(1), real_images(2)]
    expected = reference_steps(model, batches, "hinge", every=2, r1=2.0)
    model.fit(np.concatenate(batches), batch_size=N, shuffle=False, verbose=0)
    assert_all_close(weights(model.generator) + weights(model.discriminator),
                     expected[0] + expected[1])
    # three main updates and two R1 updates (steps 0 and 2)
    assert int(model.optimizers["discriminator"].iterations) == 5
    assert int(model.optimizers["generator"].iterations) == 3


@pytest.mark.parametrize("batches", ["split", "same"])
def test_n_dis_updates_on_slices_or_on_the_whole_batch(batches):
    model = learned_image_gan(loss="hinge", label_noise=0.0, n_dis=2, n_dis_batches=batches)
    real = real_images()
    expected = reference_steps(model, [real], "hinge", n_dis=2, split=batches == "split")
    got = run_steps(model, [real])
    assert_all_close(got[0] + got[1], expected[0] + expected[1])
    assert int(model.optimizers["discriminator"].iterations) == 2
    np.testing.assert_allclose(got[2]["d_loss"], np.mean(expected[2]), rtol=RTOL)


# ---------------------------------------------------------------- DiffAugment


def fixed(*draws):
    """A ``uniform`` that returns the given per-image values, call after call."""
    queue = list(draws)

    def uniform(shape, dtype="float32"):
        return ops.cast(ops.reshape(ops.convert_to_tensor(queue.pop(0)), shape), dtype)

    return uniform


def test_translation_shifts_whole_pixels_and_fills_with_zeros():
    x = np.arange(2 * 8 * 8, dtype="float32").reshape(2, 8, 8, 1) + 1
    # r = 1 pixel for 8x8; u in [0, 1) picks a shift in {-1, 0, 1}: 0.9 -> +1, 0.1 -> -1
    out = np.asarray(translation(x, fixed([0.9, 0.1], [0.5, 0.9])))
    np.testing.assert_array_equal(out[0, :7, :, 0], x[0, 1:, :, 0])  # rows up by one
    np.testing.assert_array_equal(out[0, 7], 0)
    np.testing.assert_array_equal(out[1, 1:, :7, 0], x[1, :7, 1:, 0])  # down, and left
    np.testing.assert_array_equal(out[1, 0], 0)
    np.testing.assert_array_equal(out[1, :, 7], 0)


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    x = np.ones((2, 8, 8, 1), "float32")
    # cut 4x4 at a centre uniform over 0..8 (9 values): u=0.5 -> 4, 0.0 -> 0, 0.99 -> 8;
    # rows first, then columns; the square [c - 2, c + 2) is clipped at the borders
    out = np.asarray(cutout(x, fixed([0.5, 0.0], [0.5, 0.99])))[..., 0]
    assert (out[0] == 0).sum() == 16 and (out[0, 2:6, 2:6] == 0).all()
    assert (out[1] == 0).sum() == 4 and (out[1, 0:2, 6:8] == 0).all()


def test_color_is_brightness_saturation_contrast_per_image():
    x = real_images()[:2]
    u = [0.2, 0.9], [0.3, 0.6], [0.1, 0.8]
    out = np.asarray(diff_augment(x, "color", fixed(*u)))
    for i in range(2):
        b = x[i] + (u[0][i] - 0.5)  # one channel: saturation changes nothing
        expected = (b - b.mean()) * (u[2][i] + 0.5) + b.mean()
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-6)


def test_diffaugment_passes_gradients_to_its_input():
    x = real_images()[:2]
    w = np.random.default_rng(3).random(x.shape).astype("float32")
    draws = ([0.9, 0.1], [0.5, 0.9], [0.5, 0.0], [0.5, 0.99])

    def augment(v):
        return diff_augment(v, "translation,cutout", fixed(*draws))

    (g,) = grad(lambda v: ops.sum(augment(v[0]) * ops.convert_to_tensor(w)), [x])
    # translation and cutout are linear maps A, so the gradient is A^T w: <A^T w, x> = <w, A x>
    np.testing.assert_allclose((g * x).sum(), (w * np.asarray(augment(x))).sum(), rtol=1e-5)
    assert 0 < (g != 0).sum() < x.size


def test_a_step_with_diffaugment_trains_the_generator_through_it():
    model = learned_image_gan(loss="hinge", label_noise=0.0, augment="color,translation,cutout")
    before = weights(model.generator)
    model.train_on_batch(real_images())
    assert not np.allclose(weights(model.generator)[0], before[0])


# ---------------------------------------------------------------- generator EMA


def dense_gan(**config):
    keras.utils.set_random_seed(4)
    generator = keras.Sequential([keras.Input((LATENT,)), layers.Dense(SIDE * SIDE,
                                  activation="sigmoid"), layers.Reshape((SIDE, SIDE, 1))])
    model = StepModel({"generator": generator, "discriminator": critic()}, step="gan",
                      config={"latent_dim": LATENT, "loss": "hinge", "label_noise": 0.0,
                              **config}, seed=1)
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in GAN.roles})
    return model


def shadows(model):
    """The generator EMA's weights (model weights named generator_ema_0, _1, ...)."""
    found = {w.name: np.asarray(w) for w in model.weights if w.name.startswith("generator_ema_")}
    return [found[f"generator_ema_{i}"] for i in range(len(found))]


def test_ema_of_the_generator_is_the_hand_computed_average_and_predict_uses_it(tmp_path):
    model = dense_gan(ema_decay=0.9)
    seen = [weights(model.generator)]
    assert_all_close(shadows(model), seen[0])  # starts as a copy
    for i in range(2):
        model.train_on_batch(real_images(i))
        seen.append(weights(model.generator))
    expected = seen[0]
    for t, w in enumerate(seen[1:]):  # decay min(0.9, (1 + t) / (10 + t)): 0.1, then 2/11
        d = min(0.9, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * x for e, x in zip(expected, w, strict=True)]
    assert_all_close(shadows(model), expected)
    assert not np.allclose(expected[0], seen[-1][0])

    z = np.random.default_rng(5).standard_normal((4, LATENT)).astype("float32")
    averaged = keras.models.clone_model(model.generator)
    averaged.set_weights(expected)
    np.testing.assert_allclose(model.predict(z, verbose=0), averaged.predict(z, verbose=0),
                               rtol=RTOL, atol=1e-6)
    trained = ops.convert_to_numpy(model(z, training=True))  # the trained weights
    np.testing.assert_allclose(trained, model.generator.predict(z, verbose=0), rtol=RTOL,
                               atol=1e-6)

    model.save(tmp_path / "gan.keras")
    loaded = stepkit.load_model(tmp_path / "gan.keras")
    assert loaded.step.config == model.step.config
    assert_all_close(shadows(loaded), expected)
    np.testing.assert_allclose(loaded.predict(z, verbose=0), model.predict(z, verbose=0),
                               rtol=RTOL, atol=1e-6)


class SubclassedGenerator(keras.Model):
    """What users write: a subclassed, unbuilt generator whose call takes no ``training``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(SIDE * SIDE, activation="sigmoid")
        self.reshape = layers.Reshape((SIDE, SIDE, 1))

    def call(self, z):
        return self.reshape(self.dense(z))


def test_ema_predicts_through_a_subclassed_generator_without_a_training_argument():
    keras.utils.set_random_seed(8)
    model = StepModel({"generator": SubclassedGenerator(), "discriminator": critic()},
                      step="gan", config={"latent_dim": LATENT, "ema_decay": 0.5}, seed=1)
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in GAN.roles})
    model.fit(np.concatenate([real_images(0), real_images(1)]), batch_size=N, epochs=1,
              verbose=0)
    z = np.random.default_rng(5).standard_normal((4, LATENT)).astype("float32")
    averaged = SubclassedGenerator()
    averaged(z)
    averaged.set_weights(shadows(model))
    np.testing.assert_allclose(model.predict(z, verbose=0), averaged.predict(z, verbose=0),
                               rtol=RTOL, atol=1e-6)
    assert not np.allclose(shadows(model)[0], weights(model.generator)[0])


# ---------------------------------------------------------------- class conditioning


def conditional_gan(classifier=False, rotation=False, **config):
    """A conditional GAN; with ``classifier`` its discriminator also returns class logits,
    with ``rotation`` rotation logits."""
    keras.utils.set_random_seed(6)
    z, label = keras.Input((LATENT,), name="z"), keras.Input((), dtype="int32", name="label")
    generator = keras.Model({"z": z, "label": label}, LearnedImage(CLASSES)(
        {"z": z, "label": label}), name="generator")
    image, d_label = keras.Input((SIDE, SIDE, 1), name="image"), keras.Input(
        (), dtype="int32", name="label")
    h = layers.Concatenate()([layers.Flatten()(image), layers.Embedding(CLASSES, 2)(d_label)])
    h = layers.Dense(6, activation="tanh")(h)
    out = layers.Dense(1)(h)
    if classifier or rotation:
        out = {"logit": out}
    if classifier:
        out["classes"] = layers.Dense(CLASSES)(h)
    if rotation:
        out["rotation"] = layers.Dense(4)(h)
    discriminator = keras.Model({"image": image, "label": d_label}, out)
    model = StepModel({"generator": generator, "discriminator": discriminator}, step="gan",
                      config={"latent_dim": LATENT, "num_classes": CLASSES, **config}, seed=1)
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in GAN.roles})
    return model


def test_a_conditional_gan_trains_on_labels_and_predicts_each_class(tmp_path):
    model = conditional_gan(loss="hinge", label_noise=0.0)
    labels = np.arange(N, dtype="int32") % CLASSES
    grid = SampleGrid(tmp_path, num_samples=6)
    history = model.fit(real_images(), labels, epochs=1, batch_size=N, verbose=0,
                        callbacks=[grid]).history
    assert np.isfinite(history["d_loss"] + history["g_loss"]).all()
    table = ops.convert_to_numpy(ops.sigmoid(model.generator.trainable_variables[0]))
    z = np.zeros((CLASSES, LATENT), "float32")
    wanted = np.array([2, 0, 1], "int32")
    made = model.predict({"z": z, "label": wanted}, verbose=0)
    np.testing.assert_allclose(made, table[wanted], rtol=RTOL)  # one image per class
    np.testing.assert_allclose(ops.convert_to_numpy(model((z, wanted))), made, rtol=RTOL)
    with pytest.raises(stepkit.DataStructureError, match="integer labels"):
        model.fit(real_images(), epochs=1, verbose=0)

    inputs = model.step.sample_inputs(64, seed=0)  # one class per grid row
    assert inputs["z"].shape == (63, LATENT)
    assert inputs["label"].tolist() == [c for c in range(CLASSES) for _ in range(21)]
    assert model.step.sample_grid_columns(64) == 21
    import matplotlib.image

    picture = matplotlib.image.imread(grid.paths[0])  # 3 rows (classes) x 2 tiles of 8 + 1
    assert picture.shape[:2] == (2 * (3 * 9 + 1), 2 * (2 * 9 + 1))


def test_the_auxiliary_classifier_adds_ac_gans_cross_entropy_to_both_losses():
    weight = 0.5
    model = conditional_gan(classifier=True, loss="hinge", label_noise=0.0,
                            classifier_weight=weight)
    real, labels = real_images(), np.arange(N, dtype="int32") % CLASSES
    g, d = model.generator, model.discriminator
    gv, dv = weights(g), weights(d)

    def cross_entropy(class_logits):  # Odena et al. 2017: -log p(c | x)
        log_p = ops.log_softmax(class_logits, axis=-1)
        return -ops.mean(ops.sum(ops.one_hot(labels, CLASSES) * log_p, axis=-1))

    def generated(g_values):
        return forward(g, g_values, {"z": np.zeros((N, LATENT), "float32"), "label": labels})

    def d_loss(w, fake):
        out = forward(d, w, {"image": ops.concatenate([fake, real], axis=0),
                             "label": np.concatenate([labels, labels])})
        hinge = adversarial("hinge", out["logit"][:N], out["logit"][N:])[0]
        return hinge + weight * cross_entropy(out["classes"][N:])  # real images' classes

    def g_loss(w, d_values):
        out = forward(d, d_values, {"image": generated(w), "label": labels})
        return -ops.mean(out["logit"]) + weight * cross_entropy(out["classes"])

    fake = generated(gv)
    expected_d_loss = float(d_loss(dv, fake))
    dv = sgd(dv, lambda w: d_loss(w, fake))
    gv = sgd(gv, lambda w: g_loss(w, dv))
    logs = model.train_on_batch(real, labels, return_dict=True)
    assert_all_close(weights(g) + weights(d), gv + dv)
    np.testing.assert_allclose(logs["d_loss"], expected_d_loss, rtol=RTOL)


def test_the_auxiliary_classifier_needs_classes_and_a_class_head():
    with pytest.raises(ConfigError, match="classifier_weight.*num_classes is not set"):
        structure_config(GANConfig, {"classifier_weight": 1.0}, step="gan")
    model = conditional_gan(loss="hinge", label_noise=0.0, classifier_weight=1.0)
    with pytest.raises(stepkit.DataStructureError) as info:
        model.train_on_batch(real_images(), np.zeros(N, "int32"))
    for words in ("'logit'", "'classes'", "AC-GAN", "Received: ", "classifier_weight=0"):
        assert words in str(info.value)


def test_rotate_turns_image_i_by_i_mod_4_quarter_turns_as_numpy_does():
    images = np.random.default_rng(3).random((6, 5, 5, 2)).astype("float32")
    turns = turns_for(6)
    assert ops.convert_to_numpy(turns).tolist() == [0, 1, 2, 3, 0, 1]
    expected = np.stack([np.rot90(x, k, axes=(0, 1)) for x, k in zip(images, range(6),
                                                                      strict=True)])
    np.testing.assert_array_equal(ops.convert_to_numpy(rotate(images, turns)), expected)


def rotation_gan(weight):
    """learned_image_gan's networks, with a rotation head on the critic's hidden layer."""
    init = keras.initializers.RandomNormal(stddev=0.5, seed=2)
    image = keras.Input((SIDE, SIDE, 1))
    h = layers.Dense(6, activation="tanh", kernel_initializer=init)(layers.Flatten()(image))
    out = {"logit": layers.Dense(1, kernel_initializer=init)(h),
           "rotation": layers.Dense(4, kernel_initializer=init)(h)}
    nets = {"generator": keras.Sequential([keras.Input((LATENT,)), LearnedImage()]),
            "discriminator": keras.Model(image, out)}
    model = StepModel(nets, step="gan", seed=1, config={
        "latent_dim": LATENT, "loss": "hinge", "label_noise": 0.0, "rotation_weight": weight})
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in nets})
    return model


def test_the_rotation_task_adds_ss_gans_cross_entropy_to_both_losses():
    weight = 0.5
    model = rotation_gan(weight)
    real = real_images()
    g, d = model.generator, model.discriminator
    gv, dv = weights(g), weights(d)
    turns = np.arange(N) % 4

    def rotated(images):  # Chen et al. 2019: image i turned by turns[i] * 90 degrees
        return ops.stack([ops.rot90(images[i], int(turns[i]), axes=(0, 1)) for i in range(N)])

    def cross_entropy(rotation_logits):  # -log p(turns | rotated image)
        log_p = ops.log_softmax(rotation_logits, axis=-1)
        return -ops.mean(ops.sum(ops.one_hot(turns, 4) * log_p, axis=-1))

    def generated(g_values):
        return forward(g, g_values, np.zeros((N, LATENT), "float32"))

    def d_loss(w, fake):
        hinge = adversarial("hinge", forward(d, w, fake)["logit"],
                            forward(d, w, real)["logit"])[0]
        return hinge + weight * cross_entropy(forward(d, w, rotated(real))["rotation"])

    def g_loss(w, d_values):
        made = generated(w)
        return (-ops.mean(forward(d, d_values, made)["logit"])
                + weight * cross_entropy(forward(d, d_values, rotated(made))["rotation"]))

    fake = generated(gv)
    expected = [float(d_loss(dv, fake))]
    dv = sgd(dv, lambda w: d_loss(w, fake))
    expected.append(float(g_loss(gv, dv)))
    gv = sgd(gv, lambda w: g_loss(w, dv))
    logs = model.train_on_batch(real, return_dict=True)
    assert_all_close(weights(g) + weights(d), gv + dv)
    np.testing.assert_allclose([logs["d_loss"], logs["g_loss"]], expected, rtol=RTOL)
    # evaluate() computes the same losses without updating
    after = weights(g) + weights(d)
    fake = generated(gv)
    logs = model.evaluate(real, batch_size=N, verbose=0, return_dict=True)
    np.testing.assert_allclose([logs["d_loss"], logs["g_loss"]],
                               [float(d_loss(dv, fake)), float(g_loss(gv, dv))], rtol=RTOL)
    assert_all_close(weights(g) + weights(d), after)


def test_the_rotation_task_needs_a_rotation_head_and_square_images():
    model = learned_image_gan(loss="hinge", label_noise=0.0, rotation_weight=1.0)
    with pytest.raises(stepkit.DataStructureError) as info:
        model.train_on_batch(real_images())
    for words in ("'logit'", "'rotation': (batch, 4)", "SS-GAN",
                  "Received: one tensor of shape (",
                  "rotation_weight=0"):
        assert words in str(info.value)
    model = conditional_gan(classifier=True, loss="hinge", label_noise=0.0,
                            classifier_weight=1.0, rotation_weight=1.0)
    with pytest.raises(stepkit.DataStructureError) as info:  # names both heads
        model.train_on_batch(real_images(), np.zeros(N, "int32"))
    for words in ("'classes'", "'rotation'", "Received: a dict with keys ['classes', 'logit']",
                  "classifier_weight=0 and rotation_weight=0"):
        assert words in str(info.value)
    model = rotation_gan(1.0)
    with pytest.raises(stepkit.DataStructureError) as info:
        model.train_on_batch(np.zeros((N, SIDE, SIDE + 2, 1), "float32"))
    for words in ("square", "(8, 8, 10, 1)", "rotation_weight=0"):
        assert words in str(info.value)


@pytest.mark.tensorflow_only("the architecture does not depend on the backend, and JAX "
                             "compiles each initializer of the convolutional networks (~15 s)")
def test_default_networks_fit_the_loss_and_the_classes():
    def nets(**config):
        model = StepModel(step="gan", config={"latent_dim": LATENT, **config})
        model.build_from_data((np.zeros((2, SIDE, SIDE, 1), "float32"), np.zeros(2, "int32")))
        return model.generator, model.discriminator

    def kinds(net):
        return {type(layer).__name__ for layer in net.layers}

    generator, discriminator = nets()
    assert "SpectralNormalization" not in kinds(discriminator)
    assert [type(x).__name__ for x in discriminator.layers] == [
        "Conv2D", "LeakyReLU", "Conv2D", "LeakyReLU", "GlobalMaxPooling2D", "Dense"]
    assert "SpectralNormalization" in kinds(nets(loss="hinge", label_noise=0.0)[1])
    generator, discriminator = nets(num_classes=10)
    assert set(generator.input) == {"z", "label"} and set(discriminator.input) == {
        "image", "label"}
    assert "Dot" in kinds(discriminator)  # the projection <embed(label), features>
    assert discriminator.output.shape == (None, 1) and "Flatten" not in kinds(discriminator)
    discriminator = nets(num_classes=10, classifier_weight=1.0)[1]
    assert {k: v.shape for k, v in discriminator.output.items()} == {
        "logit": (None, 1), "classes": (None, 10)}
    # The classes from the flattened map (where each pattern is), the logit max-pooled.
    assert {"Flatten", "GlobalMaxPooling2D"} <= kinds(discriminator)
    discriminator = nets(num_classes=10, classifier_weight=1.0, rotation_weight=1.0)[1]
    assert {k: v.shape for k, v in discriminator.output.items()} == {
        "logit": (None, 1), "classes": (None, 10), "rotation": (None, 4)}
    discriminator = nets(rotation_weight=1.0)[1]
    assert {k: v.shape for k, v in discriminator.output.items()} == {
        "logit": (None, 1), "rotation": (None, 4)}
    assert {"Flatten", "GlobalMaxPooling2D"} <= kinds(discriminator)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("config,words", [
    ({"loss": "hnge"}, ["loss must be one of 'bce', 'hinge', 'least-squares', 'wasserstein'",
                        "'hnge'"]),
    ({"r1_gamma": -1}, ["r1_gamma must be >= 0.0, got -1.0"]),
    ({"r1_gamma": 1, "penalty_every": 0}, ["penalty_every must be >= 1, got 0"]),
    ({"penalty_every": 16}, ["penalty_every", "no penalty is on", "r1_gamma"]),
    ({"n_dis": 0}, ["n_dis must be >= 1, got 0"]),
    ({"n_dis_batches": "each"}, ["n_dis_batches must be one of 'split', 'same'", "'each'"]),
    ({"augment": "translation,flip"}, ["unknown augmentation(s) ['flip']", "color",
                                       "cutout", "'translation,flip'"]),
    ({"loss": "wasserstein", "label_noise": 0}, ["needs a penalty", "gp_lambda",
                                                 "gp_lambda=0.0"]),
    ({"loss": "hinge"}, ["has no targets", "label_noise=0.05", "Set label_noise=0"]),
    ({"label_smoothing": 1.0}, ["label_smoothing must be < 1.0, got 1.0"]),
    ({"ema_decay": 1}, ["ema_decay must be < 1.0, got 1.0"]),
    ({"num_classes": 1}, ["num_classes must be >= 2, got 1"]),
    ({"rotation_weight": -0.5}, ["rotation_weight must be >= 0.0, got -0.5"]),
    ({"adam_beta_1": 1}, ["adam_beta_1 must be < 1.0, got 1.0"]),
], ids=lambda v: "-".join(map(str, v)) if isinstance(v, dict) else "")
def test_every_setting_is_checked_with_what_was_wrong_and_the_fix(config, words):
    with pytest.raises(ConfigError) as info:
        structure_config(GANConfig, config, step="gan")
    for word in words:
        assert word in info.value.plain, info.value.plain


def test_presets_are_defaults_under_the_settings_given_with_them():
    assert structure_config(GANConfig, {"preset": "dcgan"}, step="gan") == GANConfig()
    config = structure_config(GANConfig, {"preset": "recommended", "ema_decay": "0.99"},
                              step="gan")
    assert config == GANConfig(**{**PRESETS["recommended"], "ema_decay": 0.99})
    for name in PRESETS:
        structure_config(GANConfig, {"preset": name}, step="gan")  # each one is valid
    with pytest.raises(ConfigError, match="Unknown preset 'best' for step 'gan'. Valid "
                                          "presets: dcgan, recommended, conditional"):
        StepModel(step="gan", config={"preset": "best"})
    with pytest.raises(ConfigError, match="Step 'supervised' has no presets"):
        StepModel(keras.Sequential([layers.Dense(1)]), step="supervised",
                  config={"preset": "recommended"})
    info = describe_step("gan")
    assert info["presets"]["recommended"] == json.loads(json.dumps(
        dict(PRESETS["recommended"])))
    assert "  recommended: loss='bce'" in format_step(info)


def test_the_command_line_takes_a_preset_and_lists_them(tmp_path, capsys):
    from stepkit.cli import main

    assert main(["info", "gan"]) == 0
    assert "  recommended: loss='bce'" in capsys.readouterr().out
    assert main(["fit", "--step", "gan", "--limit", "16", "--image-size", "8", "--out",
                 str(tmp_path / "run"), "--set", "preset=best"]) == 2  # before any training
    assert "Unknown preset 'best' for step 'gan'. Valid presets: dcgan, recommended" in (
        capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_compile_loss_the_config_would_ignore_is_refused():
    model = learned_image_gan(loss="hinge", label_noise=0.0)
    model.compile(loss="mse")
    with pytest.raises(ConfigError, match="loss='hinge' computes its own loss"):
        model.fit(real_images(), epochs=1, verbose=0)  # refused when fit() builds


def test_adam_beta_1_sets_the_default_optimizers_and_refuses_others():
    model = StepModel(step="gan", config={"adam_beta_1": 0.5})
    model.compile()
    for optimizer in model.optimizers.values():  # DCGAN's Adam(3e-4, beta_1=0.5)
        assert isinstance(optimizer, keras.optimizers.Adam)
        expected = keras.optimizers.Adam(3e-4, beta_1=0.5).get_config()
        assert {**optimizer.get_config(), "name": None} == {**expected, "name": None}
    guide = StepModel(step="gan")
    guide.compile()
    assert {float(o.beta_1) for o in guide.optimizers.values()} == {0.9}

    model = learned_image_gan(adam_beta_1=0.5)  # compiled with SGD: beta_1 would be lost
    with pytest.raises(ConfigError) as info:
        model.fit(real_images(), epochs=1, verbose=0)
    for words in ("adam_beta_1=0.5", "'generator' optimizer", "SGD with no beta_1",
                  "beta_1=0.5", "adam_beta_1=0.9"):
        assert words in str(info.value), str(info.value)
    model = learned_image_gan(adam_beta_1=0.5)
    model.predict(np.zeros((2, LATENT), "float32"), verbose=0)  # built before compile()
    model.compile(optimizer={"generator": keras.optimizers.Adam(beta_1=0.5),
                             "discriminator": keras.optimizers.Adam(beta_1=0.9)})
    with pytest.raises(ConfigError, match="'discriminator' optimizer.*Adam with beta_1=0.9"):
        model.fit(real_images(), epochs=1, verbose=0)
    model.compile(optimizer={r: keras.optimizers.Adam(beta_1=0.5) for r in GAN.roles})
    assert np.isfinite(model.fit(real_images(), epochs=1, verbose=0).history["d_loss"]).all()


def test_probability_bce_with_label_noise_trains_or_names_the_fix():
    # The guide's noisy targets reach 1.05: torch's binary_cross_entropy refuses them.
    model = learned_image_gan()
    model.discriminator.layers[-1].activation = keras.activations.sigmoid
    model.compile(optimizer={r: keras.optimizers.SGD(LR) for r in GAN.roles},
                  loss="binary_crossentropy")
    if BACKEND != "torch":
        model.build_from_data(real_images())  # checked when fit() builds: nothing to refuse
        return
    with pytest.raises(ConfigError, match=r"targets reach 1.05.*compile\(\) without loss="):
        model.fit(real_images(), epochs=1, verbose=0)


# ---------------------------------------------------------------- the framework's guarantees

EVERYTHING = {"loss": "hinge", "label_noise": 0.0, "n_dis": 2, "r1_gamma": 1.0,
              "penalty_every": 2, "augment": "color,translation,cutout", "ema_decay": 0.9}


def test_every_part_together_under_mixed_precision_and_steps_per_execution(tmp_path):
    # (XLA: JAX always compiles with it; on TensorFlow the lazy-R1 test compiles with it)
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = conditional_gan(classifier=True, rotation=True, classifier_weight=0.5,
                            rotation_weight=0.5, **EVERYTHING)
    # a small first loss scale: no update is skipped for overflow, so the counts are exact
    model.compile(optimizer={r: keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(LR), initial_scale=2.0 ** 6) for r in GAN.roles},
        steps_per_execution=STEPS_PER_EXECUTION)
    x = np.concatenate([real_images(0), real_images(1)])
    y = np.arange(2 * N, dtype="int32") % CLASSES
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(history["d_loss"] + history["g_loss"]).all()
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer)
               for o in model.optimizers.values())
    # 4 steps: 2 discriminator updates each, and R1 in an update of its own on
    # steps 0 and 2 (the schedule reads the step counter inside each execution)
    assert int(model.optimizers["discriminator"].iterations) == 4 * 2 + 2
    assert int(model.optimizers["generator"].iterations) == 4
    assert np.isfinite(shadows(model)[0]).all()
    model.save(tmp_path / "gan.keras")
    loaded = stepkit.load_model(tmp_path / "gan.keras")
    assert loaded.step.config == model.step.config
    assert_all_close(shadows(loaded), shadows(model))
