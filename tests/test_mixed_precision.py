"""mixed_float16: every role's optimizer scales its loss and skips non-finite steps."""

import keras
import numpy as np
import pytest

from stepkit import StepModel


def _gan():
    keras.utils.set_random_seed(0)
    model = StepModel(step="gan", config={"latent_dim": 8}, seed=1)
    model.compile(optimizer={"generator": keras.optimizers.SGD(0.1),
                             "discriminator": keras.optimizers.SGD(0.1)})
    return model


def _step_sizes(policy):
    keras.mixed_precision.set_global_policy(policy)
    images = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    model = _gan()
    model.build_from_data(images)
    before = {r: [w.numpy() for w in n.trainable_weights] for r, n in model.networks.items()}
    model.fit(images, batch_size=16, epochs=1, shuffle=False, verbose=0)
    moved = {r: sum(float(np.abs(w.numpy().astype("float32") - b).sum())
                    for w, b in zip(n.trainable_weights, before[r], strict=True))
             for r, n in model.networks.items()}
    return model, moved


@pytest.mark.skipif(
    keras.backend.backend() == "torch" and not keras.src.backend.torch.core.get_device()
    .startswith("cuda"),
    reason="Keras' torch backend cannot run a float16 Conv2DTranspose backward pass on CPU "
           "(slow_conv2d: grad_weight must be contiguous); the per-backend mixed precision "
           "checks are in test_backend_fidelity.py")
def test_every_role_scales_its_loss_and_moves_like_float32():
    mixed, moved_mixed = _step_sizes("mixed_float16")
    for opt in mixed.optimizers.values():
        assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert mixed.networks["generator"].layers[0].compute_dtype == "float16"
    _, moved_f32 = _step_sizes("float32")
    for role in ("generator", "discriminator"):
        assert 0.5 < moved_mixed[role] / moved_f32[role] < 2.0, (role, moved_mixed, moved_f32)


def test_non_finite_steps_are_skipped_not_applied():
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model = StepModel(net, step="supervised")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.full((4, 3), np.inf, "float32")
    before = [w.numpy() for w in net.weights]
    model.fit(x, np.zeros((4, 1), "float32"), verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    for w, b in zip(net.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)
    assert float(model.optimizer.dynamic_scale) < 32768.0


@pytest.mark.parametrize("policy", ["mixed_float16"])
def test_supervised_mixed_precision_reports_float32_loss(policy, mlp, regression_data):
    keras.mixed_precision.set_global_policy(policy)
    x, y = regression_data
    model = StepModel(mlp(), step="supervised")
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][1] < history["loss"][0]
