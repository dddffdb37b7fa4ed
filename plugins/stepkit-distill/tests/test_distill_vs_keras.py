"""``distill`` against ``keras.distillation.Distiller``, number for number.

Each test trains the same networks from the same weights on the same batches
(no shuffling, no dropout) with stepkit and with Keras' reference, and compares
the student's weights. Where the two deliberately differ (regularisation,
sample weights, reloading), the test pins both behaviours; the README explains why.
"""

import os

import keras
import numpy as np
import pytest
import stepkit
import tensorflow as tf
from keras import ops
from keras.distillation import Distiller, FeatureDistillation, LogitsDistillation

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(96, 16)).astype("float32")
Y = RNG.integers(0, 5, size=(96,)).astype("int32")
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def student_net(reg=None):
    return keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(8, activation="relu", kernel_regularizer=reg, name="s_hidden"),
        keras.layers.Dense(5, kernel_regularizer=reg, name="s_logits"),
    ], name="student")


def teacher_net(reg=None):
    return keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(12, activation="relu", kernel_regularizer=reg, name="t_hidden"),
        keras.layers.Dense(8, activation="relu", kernel_regularizer=reg, name="t_mid"),
        keras.layers.Dense(5, kernel_regularizer=reg, name="t_logits"),
    ], name="teacher")


def twins(reg=None):
    """Two (student, teacher) pairs with equal weights: one for stepkit, one for Keras."""
    keras.utils.set_random_seed(1)
    pairs = [(student_net(reg), teacher_net(reg)) for _ in range(2)]
    for a, b in zip(pairs[0], pairs[1], strict=True):
        b.set_weights(a.get_weights())
    return pairs


def fit_stepkit(student, teacher, config, epochs=5, **fit):
    keras.utils.set_random_seed(2)  # the projections' initial weights
    model = stepkit.StepModel({"student": student, "teacher": teacher}, step="distill",
                              config=config, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
    history = model.fit(X, Y, batch_size=32, epochs=epochs, shuffle=False, verbose=0, **fit)
    return model, history.history


def fit_keras(student, teacher, losses, weights=None, alpha=0.1, cls=Distiller, epochs=5):
    model = cls(teacher, student, losses, distillation_loss_weights=weights,
                student_loss_weight=alpha)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
    history = model.fit(X, Y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history


def gap(a, b):
    return max(float(np.abs(u - w).max()) for u, w in zip(a.get_weights(), b.get_weights(),
                                                          strict=True))


class RegularizedDistiller(Distiller):
    """The Distiller plus ``model.losses``, as ``keras.Model.compute_loss`` adds them.

    The stock Distiller overrides ``compute_loss`` and never adds them. Its teacher is
    frozen (``trainable = False``), so only the student's penalties are in ``self.losses``.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        return loss + ops.sum(self.losses)


def test_hinton_kl_equals_the_distiller():
    (s, t), (s_ref, t_ref) = twins()
    _, history = fit_stepkit(s, t, {"alpha": 0.1, "temperature": 10.0})
    _, ref = fit_keras(s_ref, t_ref, LogitsDistillation(10.0, loss=keras.losses.KLDivergence()))
    assert gap(s, s_ref) == 0.0
    for key in ("loss", "student_loss", "distillation_loss"):  # full batches: same means
        np.testing.assert_allclose(history[key], ref[key], rtol=1e-6)


def test_a_trained_role_is_regularised_at_full_strength_and_a_frozen_one_not_at_all():
    l2 = keras.regularizers.L2(1e-2)
    (s, t), (s_ref, t_ref) = twins(l2)
    model, history = fit_stepkit(s, t, {"alpha": 0.1, "temperature": 10.0})
    kd = LogitsDistillation(10.0, loss=keras.losses.KLDivergence())
    _, ref = fit_keras(s_ref, t_ref, kd, cls=RegularizedDistiller)
    assert gap(s, s_ref) == 0.0
    np.testing.assert_allclose(history["loss"], ref["loss"], rtol=1e-6)
    np.testing.assert_allclose(history["student_loss"], ref["student_loss"], rtol=1e-6)

    # What is logged: the student loss is the cross-entropy alone; the total adds the
    # student's penalty once, unweighted by alpha; the teacher's penalty is nowhere.
    logs = model.evaluate(X, Y, batch_size=96, verbose=0, return_dict=True)
    logits = s(X)
    assert logs["student_loss"] == pytest.approx(float(CE(Y, logits)), rel=1e-5)
    penalty = {n: float(ops.sum(net.losses)) for n, net in (("student", s), ("teacher", t))}
    assert penalty["teacher"] > 0.1 and penalty["student"] > 0.01
    mixed = 0.1 * logs["student_loss"] + 0.9 * logs["distillation_loss"]
    assert logs["loss"] - mixed == pytest.approx(penalty["student"], rel=1e-4)

    # The stock Distiller drops every regularisation loss: L2 changes nothing there.
    (s_l2, t_l2), _ = twins(l2)
    (s_plain, t_plain), _ = twins()
    for student, teacher in ((s_l2, t_l2), (s_plain, t_plain)):
        fit_keras(student, teacher, LogitsDistillation(10.0, loss=keras.losses.KLDivergence()),
                  epochs=2)
    assert gap(s_l2, s_plain) == 0.0


def test_several_weighted_terms_with_features_by_name_equal_the_distiller():
    (s, t), (s_ref, t_ref) = twins()
    config = {"alpha": 0.5, "temperature": 3.0,
              "features": [{"teacher_layer": "t_mid", "student_layer": "s_hidden",
                            "weight": 0.5}]}
    _, history = fit_stepkit(s, t, config)
    losses = [LogitsDistillation(3.0, loss=keras.losses.KLDivergence()),
              FeatureDistillation("mse", teacher_layer_name="t_mid",
                                  student_layer_name="s_hidden")]
    _, ref = fit_keras(s_ref, t_ref, losses, weights=[1.0, 0.5], alpha=0.5)
    # Keras runs the student twice (output, then features); stepkit once. The same
    # numbers, but gradients summed in another order: equal to float32 rounding.
    assert gap(s, s_ref) < 1e-5
    np.testing.assert_allclose(history["distillation_loss"], ref["distillation_loss"],
                               rtol=1e-5)


@pytest.mark.parametrize("config, reference", [
    ({"temperature": 2.0, "divergence": "mse"}, LogitsDistillation(2.0, loss="mse")),
    ({"logits": [], "features": [{"teacher_layer": "t_mid", "student_layer": "s_hidden",
                                  "loss": "cosine"}]},
     FeatureDistillation("cosine_similarity", "t_mid", "s_hidden")),
    ({"logits": [], "features": [{"loss": "mae"}]}, FeatureDistillation("mae")),
], ids=["logits-mse", "features-cosine", "outputs-mae"])
def test_other_divergences_equal_the_distiller(config, reference):
    (s, t), (s_ref, t_ref) = twins()
    fit_stepkit(s, t, config, epochs=2)
    fit_keras(s_ref, t_ref, reference, epochs=2)
    assert gap(s, s_ref) < 1e-5


def test_two_logits_terms_at_two_temperatures_equal_the_distiller():
    (s, t), (s_ref, t_ref) = twins()
    config = {"logits": [{"temperature": 2.0, "weight": 0.7},
                         {"temperature": 8.0, "divergence": "reverse_kl", "weight": 0.3}]}
    fit_stepkit(s, t, config, epochs=2)

    class ReverseKL(keras.losses.KLDivergence):  # the Distiller's T^2 branch, arguments swapped
        def call(self, y_true, y_pred):
            return super().call(y_pred, y_true)

    losses = [LogitsDistillation(2.0, loss=keras.losses.KLDivergence()),
              LogitsDistillation(8.0, loss=ReverseKL())]
    fit_keras(s_ref, t_ref, losses, weights=[0.7, 0.3], epochs=2)
    assert gap(s, s_ref) < 1e-6


class ProjectedReference(keras.Model):
    """A hand-written FitNets-style step: KL on logits plus MSE on projected features."""

    def __init__(self, student, teacher, projection, temperature, weight, alpha):
        super().__init__()
        self.student, self.teacher, self.projection = student, teacher, projection
        self.t_features = keras.Model(teacher.inputs, [teacher.outputs[0],
                                                       teacher.get_layer("t_hidden").output])
        self.s_features = keras.Model(student.inputs, [student.outputs[0],
                                                       student.get_layer("s_hidden").output])
        self.temperature, self.weight, self.alpha = temperature, weight, alpha

    def train_step(self, data):
        x, y = data
        t = self.temperature
        t_logits, t_hidden = self.t_features(x, training=False)
        with tf.GradientTape() as tape:
            s_logits, s_hidden = self.s_features(x, training=True)
            kd = ops.mean(keras.losses.kl_divergence(ops.softmax(t_logits / t),
                                                     ops.softmax(s_logits / t))) * t ** 2
            feat = ops.mean(keras.losses.mean_squared_error(t_hidden,
                                                            self.projection(s_hidden)))
            loss = self.alpha * CE(y, s_logits) + (1 - self.alpha) * (kd + self.weight * feat)
        variables = self.student.trainable_variables + self.projection.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables,
                                           strict=True))
        return {"loss": loss}


def projected_config():
    return {"alpha": 0.5, "temperature": 3.0,
            "features": [{"teacher_layer": "t_hidden", "student_layer": "s_hidden",
                          "projection": True, "weight": 0.5}]}


def test_a_projection_maps_student_features_to_the_teachers_width():
    (s, t), (s_ref, t_ref) = twins()
    model = stepkit.StepModel({"student": s, "teacher": t}, step="distill",
                              config=projected_config(), seed=0)
    projection = {w.name: w.numpy() for w in model.weights if "distill_projection" in w.name}
    assert sorted(v.shape for v in projection.values()) == [(8, 12), (12,)]
    dense = keras.layers.Dense(12)
    dense.build((None, 8))
    dense.set_weights([projection["distill_projection_0_kernel"],
                       projection["distill_projection_0_bias"]])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
    model.fit(X, Y, batch_size=32, epochs=3, shuffle=False, verbose=0)

    ref = ProjectedReference(s_ref, t_ref, dense, temperature=3.0, weight=0.5, alpha=0.5)
    ref.compile(optimizer=keras.optimizers.Adam(1e-2))
    ref.fit(X, Y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    assert gap(s, s_ref) < 1e-5
    trained = [w.numpy() for w in model.weights if "distill_projection" in w.name]
    for a, b in zip(trained, dense.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sample_weights_weigh_every_term():
    (s, t), _ = twins()
    model = stepkit.StepModel({"student": s, "teacher": t}, step="distill",
                              config={"temperature": 4.0})
    model.compile(loss=CE)
    w = RNG.uniform(size=(96,)).astype("float32")
    logs = model.evaluate(X, Y, sample_weight=w, batch_size=96, verbose=0, return_dict=True)
    kl = keras.losses.kl_divergence(ops.softmax(t(X) / 4.0), ops.softmax(s(X) / 4.0))
    assert logs["distillation_loss"] == pytest.approx(float(np.mean(w * kl)) * 16.0, rel=1e-5)
    assert logs["student_loss"] == pytest.approx(float(CE(Y, s(X), sample_weight=w)), rel=1e-5)


def test_save_load_resume_is_exact_and_the_reloaded_distiller_has_no_optimizer(tmp_path):
    (s, t), (s_ref, t_ref) = twins()
    first, _ = fit_stepkit(s, t, projected_config(), epochs=1)
    path = os.fspath(tmp_path / "distill.keras")
    first.save(path)
    resumed = stepkit.load_model(path)
    assert int(resumed.optimizers["student"].iterations) == 3
    resumed.fit(X, Y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    straight, _ = fit_stepkit(s_ref, t_ref, projected_config(), epochs=2)
    assert [w.name for w in resumed.weights] == [w.name for w in straight.weights]
    # Bit-exact without feature terms; with one, the reloaded graph may sum the two
    # gradients reaching the hidden layer in the other order (float32 rounding).
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    keras_model, _ = fit_keras(*twins()[0], LogitsDistillation(3.0), epochs=1)
    keras_model.save(os.fspath(tmp_path / "distiller.keras"))
    with pytest.warns(UserWarning, match="compile"):
        reloaded = keras.saving.load_model(os.fspath(tmp_path / "distiller.keras"))
    # Keras 3.15.1: no optimizer (nor its state) and no student loss; fit() fails.
    assert getattr(reloaded, "optimizer", None) is None


def test_feature_errors_name_the_layer_and_the_fix():
    with pytest.raises(ValueError, match=r"no layer named 'nope'.*\['s_hidden', 's_logits'\]"):
        stepkit.StepModel({"student": student_net(), "teacher": teacher_net()}, step="distill",
                          config={"features": [{"teacher_layer": "t_mid",
                                                "student_layer": "nope"}]})
    with pytest.raises(ValueError, match=r"\(None, 12\).*\(None, 8\).*projection=True"):
        stepkit.StepModel({"student": student_net(), "teacher": teacher_net()}, step="distill",
                          config={"features": [{"teacher_layer": "t_hidden",
                                                "student_layer": "s_hidden"}]})
