"""The multi-network steps (gan and the three plugin packages) on what users bring.

Unbuilt and subclassed networks, loss names, pre-wrapped optimizers under
mixed precision, frozen roles, and learning-rate callbacks with several
optimizers, each against keras.Model's documented behaviour.
"""

import keras
import numpy as np
import pytest
from keras import ops

from stepkit import StepModel

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(size=(32, 8, 8, 1)).astype("float32")
LABELS = RNG.integers(0, 3, size=(32,)).astype("int32")


class Decoder(keras.Model):
    """Latent vectors (or logits) to 8x8x1 images, built on first call."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(64)
        self.reshape = keras.layers.Reshape((8, 8, 1))

    def call(self, z, training=False):
        return self.reshape(ops.sigmoid(self.dense(z)))


class Encoder(keras.Model):
    def __init__(self, latent_dim):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.mean = keras.layers.Dense(latent_dim)
        self.log_var = keras.layers.Dense(latent_dim)

    def call(self, x, training=False):
        h = self.flatten(x)
        return self.mean(h), self.log_var(h)


def critic():
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)])  # no keras.Input


def classifier():
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3)])


# step name -> (networks made unbuilt, config, fit data as (x, y)).
CASES = {
    "gan": (lambda: {"generator": Decoder(), "discriminator": critic()},
            {"latent_dim": 4}, (IMAGES, None)),
    "wgan-gp": (lambda: {"generator": Decoder(), "critic": critic()},
                {"latent_dim": 4, "n_critic": 2}, (IMAGES, None)),
    "vae": (lambda: {"encoder": Encoder(2), "decoder": Decoder()},
            {"latent_dim": 2}, (IMAGES, None)),
    "distill": (lambda: {"student": classifier(), "teacher": classifier()},
                {}, (IMAGES, LABELS)),
}


def make(step, seed=0):
    networks, config, _ = CASES[step]
    keras.utils.set_random_seed(seed)
    return StepModel(networks(), step=step, config=config, seed=seed)


def fit(model, step, **kwargs):
    x, y = CASES[step][2]
    return model.fit(x, y, batch_size=16, verbose=0, **{"epochs": 1, **kwargs}).history


@pytest.mark.parametrize("step", sorted(CASES))
def test_unbuilt_and_subclassed_networks_train(step):
    model = make(step)
    model.compile()
    assert not any(n.built for n in model.networks.values())
    x, y = CASES[step][2]
    model.build_from_data(x[:16] if y is None else (x[:16], y[:16]))
    before = {r: [w.copy() for w in n.get_weights()] for r, n in model.networks.items()}
    history = fit(model, step, epochs=2)
    assert all(np.isfinite(v).all() for v in history.values())
    trained = [r for r in model.networks if r != "teacher"]
    for role in trained:
        moved = max(np.abs(a - b).max() for a, b in zip(
            before[role], model.networks[role].get_weights(), strict=True))
        assert moved > 0, role
    if step == "distill":  # the teacher is never updated
        for a, b in zip(before["teacher"], model.networks["teacher"].get_weights(),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_distill_takes_its_student_loss_by_name_like_keras():
    model = make("distill")
    model.compile(loss="sparse_categorical_crossentropy")  # a bare per-sample function
    history = fit(model, "distill")
    assert np.isfinite(history["student_loss"]).all()


@pytest.mark.parametrize("step", sorted(CASES))
def test_every_role_gets_one_loss_scale_optimizer_when_one_was_pre_wrapped(step):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = make(step)
    roles = model.step.trained_roles()
    opts = {r: keras.optimizers.Adam(1e-3) for r in roles}
    opts[roles[-1]] = keras.optimizers.LossScaleOptimizer(opts[roles[-1]])
    model.compile(optimizer=opts)
    for role, opt in model.optimizers.items():
        assert isinstance(opt, keras.optimizers.LossScaleOptimizer), role
        assert not isinstance(opt.inner_optimizer, keras.optimizers.LossScaleOptimizer), role
    assert model.optimizers[roles[-1]] is opts[roles[-1]]
    history = fit(model, step)
    assert all(np.isfinite(v).all() for v in history.values())


@pytest.mark.parametrize("step,frozen", [("gan", "discriminator"), ("wgan-gp", "critic"),
                                         ("gan", "generator")])
def test_a_frozen_role_is_skipped_and_the_others_train(step, frozen):
    model = make(step)
    x, _ = CASES[step][2]
    model.build_from_data(x[:16])
    model.networks[frozen].trainable = False
    model.compile()
    before = {r: [w.copy() for w in n.get_weights()] for r, n in model.networks.items()}
    with pytest.warns(UserWarning, match=f"Role '{frozen}'.*no trainable variables"):
        fit(model, step)
    for role, net in model.networks.items():
        moved = max(np.abs(a - b).max() for a, b in zip(before[role], net.get_weights(),
                                                         strict=True))
        assert (moved == 0) == (role == frozen), role
    model.networks[frozen].trainable = True
    model.compile()
    fit(model, step)
    moved = max(np.abs(a - b).max() for a, b in zip(
        before[frozen], model.networks[frozen].get_weights(), strict=True))
    assert moved > 0


@pytest.mark.parametrize("step", ["gan", "wgan-gp"])
@pytest.mark.parametrize("callback", ["scheduler", "plateau"])
def test_learning_rate_callbacks_scale_every_role_by_the_same_factor(step, callback):
    model = make(step)
    first, second = model.step.trained_roles()
    model.compile(optimizer={first: keras.optimizers.Adam(1e-4),
                             second: keras.optimizers.Adam(4e-4)})
    if callback == "scheduler":
        cb = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    else:  # min_delta so large that every epoch is a plateau
        cb = keras.callbacks.ReduceLROnPlateau(monitor="g_loss", factor=0.5, patience=0,
                                               min_delta=1e9, mode="min")
    history = fit(model, step, epochs=3, callbacks=[cb])
    rates_first = np.array(history[f"{first}_learning_rate"])
    rates_second = np.array(history[f"{second}_learning_rate"])
    np.testing.assert_allclose(history["learning_rate"], rates_first, rtol=1e-6)
    np.testing.assert_allclose(rates_second / rates_first, 4.0, rtol=1e-5)
    assert rates_first[0] == pytest.approx(1e-4 if callback == "plateau" else 5e-5)
    assert rates_first[-1] < rates_first[0]
    np.testing.assert_allclose(float(model.optimizers[second].learning_rate),
                               4 * float(model.optimizers[first].learning_rate), rtol=1e-5)


@pytest.mark.parametrize("step,monitor", [("gan", "val_d_loss"), ("wgan-gp", "val_c_loss"),
                                          ("vae", "val_kl_loss")])
def test_tracked_losses_need_no_mode_for_monitoring_callbacks(step, monitor):
    model = make(step)
    model.compile()
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=10)
    checkpoint = keras.callbacks.ModelCheckpoint("unused.keras", monitor=monitor,
                                                 save_best_only=True)
    x, y = CASES[step][2]
    model.build_from_data(x[:16])
    for cb in (stop, checkpoint):
        cb.set_model(model)
        cb._set_monitor_op()  # what on_train_begin does in mode="auto"
        assert cb.monitor_op is ops.less, type(cb).__name__


def test_a_tracked_value_without_a_direction_needs_a_mode_like_keras():
    model = make("wgan-gp")
    model.compile()
    model.build_from_data(IMAGES[:16])
    stop = keras.callbacks.EarlyStopping(monitor="val_w_distance")
    stop.set_model(model)
    with pytest.raises(ValueError, match="Pass `mode='max'`"):
        stop._set_monitor_op()


def test_a_role_on_a_schedule_is_left_alone_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = make("gan")
    schedule = keras.optimizers.schedules.ExponentialDecay(4e-4, 2, 0.5)
    model.compile(optimizer={"generator": keras.optimizers.Adam(1e-4),
                             "discriminator": keras.optimizers.Adam(schedule)})
    assert isinstance(model.optimizers["discriminator"], keras.optimizers.LossScaleOptimizer)
    cb = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    history = fit(model, "gan", epochs=2, callbacks=[cb])
    np.testing.assert_allclose(history["generator_learning_rate"], [5e-5, 2.5e-5], rtol=1e-5)
    assert "discriminator_learning_rate" not in history
