import keras
import numpy as np
import pytest
import stepkit
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits():
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


def mlp(units):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(10)])


def test_student_learns_from_a_frozen_teacher():
    x_train, x_val, y_train, y_val = digits()
    keras.utils.set_random_seed(0)
    teacher = mlp(128)
    trainer = stepkit.StepModel(teacher, step="supervised")
    trainer.compile(optimizer="adam",
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(x_train, y_train, batch_size=32, epochs=15, verbose=0)
    frozen = [w.copy() for w in teacher.get_weights()]

    student = mlp(32)
    model = stepkit.StepModel({"student": student, "teacher": teacher}, step="distill")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  metrics=["sparse_categorical_accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=10, verbose=0,
                        validation_data=(x_val, y_val)).history

    assert history["val_sparse_categorical_accuracy"][-1] >= 0.90
    assert all(np.array_equal(a, b) for a, b in zip(frozen, teacher.get_weights(), strict=True))
    assert list(model.optimizers) == ["student"]
    # predict is the student's output, and compile metrics are measured on it (vs Keras).
    logits = model.predict(x_val, verbose=0)
    np.testing.assert_allclose(logits, student.predict(x_val, verbose=0), rtol=1e-5, atol=1e-5)
    logs = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
    acc = keras.metrics.SparseCategoricalAccuracy()
    acc.update_state(y_val, logits)
    assert logs["sparse_categorical_accuracy"] == pytest.approx(float(acc.result()), abs=1e-6)


def test_loss_is_the_weighted_sum_of_student_and_distillation_losses():
    x_train, _, y_train, _ = digits()
    model = stepkit.StepModel({"student": mlp(8), "teacher": mlp(8)}, step="distill",
                              config={"alpha": 0.25, "temperature": 2.0})
    model.compile()
    logs = model.evaluate(x_train[:64], y_train[:64], verbose=0, return_dict=True)
    expected = 0.25 * logs["student_loss"] + 0.75 * logs["distillation_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_the_teacher_takes_no_optimizer():
    model = stepkit.StepModel({"student": mlp(8), "teacher": mlp(8)}, step="distill")
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['teacher'\]"):
        model.compile(optimizer={"student": "adam", "teacher": "adam"})


def test_bad_config_is_a_clear_error():
    with pytest.raises(stepkit.ConfigError, match="alpha"):
        stepkit.StepModel({"student": mlp(8), "teacher": mlp(8)}, step="distill",
                          config={"alpha": 1.5})


def test_each_output_of_a_two_output_student_gets_the_logits_term():
    def net(units, prefix):
        x = keras.Input((64,))
        h = keras.layers.Dense(units, activation="relu")(x)
        return keras.Model(x, [keras.layers.Dense(10)(h), keras.layers.Dense(3)(h)], name=prefix)

    x_train, _, y_train, _ = digits()
    x, y = x_train[:64], y_train[:64]
    student, teacher = net(8, "student"), net(16, "teacher")
    model = stepkit.StepModel({"student": student, "teacher": teacher}, step="distill",
                              config={"temperature": 2.0})
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=[ce, ce])
    logs = model.evaluate(x, (y, y % 3), batch_size=64, verbose=0, return_dict=True)
    expected = sum(
        float(np.mean(keras.losses.kl_divergence(keras.ops.softmax(t / 2.0),
                                                 keras.ops.softmax(s / 2.0)))) * 4.0
        for t, s in zip(teacher(x), student(x), strict=True))
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-5)
