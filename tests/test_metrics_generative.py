"""stepkit.metrics: FID and KID against closed forms and direct formulas, the shipped digits
classifier, InceptionV3's missing-weights error, and the per-epoch callback in History,
the run's files and TensorBoard."""

import json

import keras
import numpy as np
import pytest
import scipy.linalg
from keras import ops

import stepkit
from stepkit import Step, StepModel
from stepkit.callbacks import HistoryFiles
from stepkit.data import load_digits
from stepkit.metrics import (
    DigitsClassifier,
    FrechetDistance,
    KernelDistance,
    MissingWeightsError,
    SampleQuality,
    class_recognition_rate,
    distinct_classes,
    feature_statistics,
    frechet_distance,
    inception_features,
    intra_class_frechet_distance,
    kernel_distance,
)
from stepkit.metrics import digits as shipped

RNG = np.random.default_rng(0)


def with_moments(n, mean, cov, seed=0):
    """``n`` samples whose sample mean and (unbiased) covariance are exactly ``mean``, ``cov``."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x @ np.linalg.cholesky(cov).T + mean


def sqrtm_reference(mu1, s1, mu2, s2):
    """The FID formula with scipy's general matrix square root (Heusel et al.'s code does this)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def random_cov(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    x = RNG.normal(3.0, 2.0, size=(300, 16))  # a large mean: no cancellation in the covariance
    fid = FrechetDistance()
    fid.update_state(x, x)
    np.testing.assert_allclose(float(fid.result()), 0.0, atol=1e-4)


def test_fid_of_diagonal_gaussians_equals_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    fid = FrechetDistance()
    fid.update_state(with_moments(400, mu1, np.diag(var1)),
                     with_moments(300, mu2, np.diag(var2), seed=1))
    np.testing.assert_allclose(float(fid.result()), closed, rtol=1e-3)
    np.testing.assert_allclose(sqrtm_reference(mu1, np.diag(var1), mu2, np.diag(var2)), closed,
                               rtol=1e-6)


def test_fid_of_gaussians_with_full_covariances_equals_the_closed_form():
    d = 5
    q = np.linalg.qr(RNG.normal(size=(d, d)))[0]
    a, b = np.array([1.0, 2.0, 3.0, 0.5, 0.1]), np.array([0.3, 2.0, 1.0, 4.0, 0.2])
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # commuting: a closed form
    mu1, mu2 = RNG.normal(size=d), RNG.normal(size=d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), closed, rtol=1e-9)
    s3 = random_cov(d, seed=7)  # not commuting with s1: scipy's sqrtm is the reference
    fid = FrechetDistance()
    fid.update_state(with_moments(200, mu1, s1), with_moments(250, mu2, s3, seed=2))
    np.testing.assert_allclose(float(fid.result()), sqrtm_reference(mu1, s1, mu2, s3), rtol=1e-3)
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s3),
                               sqrtm_reference(mu1, s1, mu2, s3), rtol=1e-6)


def test_intra_class_fid_is_the_mean_of_each_class_closed_form_and_sees_collapse():
    mu = {0: np.zeros(3), 1: np.full(3, 4.0)}
    real = np.concatenate([with_moments(200, mu[c], np.eye(3), seed=c) for c in (0, 1)])
    real_labels = np.repeat([0, 1], 200)
    shift = np.array([1.0, 0.0, 0.0])  # class 0 generated off by 1 (FID 1), class 1 exact
    made = np.concatenate([with_moments(150, mu[0] + shift, np.eye(3), seed=5),
                           with_moments(150, mu[1], np.eye(3), seed=6)])
    made_labels = np.repeat([0, 1], 150)
    np.testing.assert_allclose(intra_class_frechet_distance(real, real_labels, made, made_labels),
                               (1.0 + 0.0) / 2, rtol=1e-6, atol=1e-9)
    # One image per class (variance 1e-6 around each class mean): the intra-class FID is
    # the variance lost, Tr(I_3) = 3 in each class.
    collapsed = np.concatenate([mu[c] + 1e-3 * RNG.normal(size=(150, 3)) for c in (0, 1)])
    intra = intra_class_frechet_distance(real, real_labels, collapsed, made_labels)
    np.testing.assert_allclose(intra, 3.0, rtol=0.01)
    with pytest.raises(ValueError, match="class 1 has 200 real and 1 generated"):
        intra_class_frechet_distance(real, real_labels, made[:151], made_labels[:151])
    with pytest.raises(ValueError, match="400 real rows with 399 labels"):
        intra_class_frechet_distance(real, real_labels[1:], made, made_labels)


def test_fid_does_not_depend_on_the_batches():
    x, y = RNG.normal(size=(90, 6)) + 5.0, RNG.normal(size=(70, 6))
    whole, batched = FrechetDistance(), FrechetDistance()
    whole.update_state(x, y)
    for i in range(0, 90, 32):
        batched.update_state(x[i:i + 32], y[i:i + 32] if i < 70 else None)
    np.testing.assert_allclose(float(batched.result()), float(whole.result()), rtol=1e-6)
    expected = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    np.testing.assert_allclose(float(whole.result()), expected, rtol=1e-6)
    whole.reset_state()
    with pytest.raises(ValueError, match="at least 2 real samples; it has 0"):
        whole.result()


# ---------------------------------------------------------------- KID


def kid_by_hand(x, y):
    """Bińkowski et al.'s unbiased MMD^2, written out with the kernel matrices."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def test_kid_equals_the_unbiased_estimator_written_out_and_does_not_depend_on_batches():
    x, y = RNG.normal(size=(1100, 4)), RNG.normal(size=(50, 4)) + 0.3  # 1100: two row blocks
    kid = KernelDistance()
    for i in range(0, 1100, 400):
        kid.update_state(x[i:i + 400], y if i == 0 else None)
    np.testing.assert_allclose(float(kid.result()), kid_by_hand(x, y), rtol=1e-5)
    # one subset of every sample is the exact estimate again
    np.testing.assert_allclose(kernel_distance(x[:50], y, num_subsets=1, subset_size=50),
                               kid_by_hand(x[:50], y), rtol=1e-9)


def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shift():
    same = kernel_distance(RNG.normal(size=(400, 8)), RNG.normal(size=(400, 8)))
    shifted = kernel_distance(RNG.normal(size=(400, 8)), RNG.normal(size=(400, 8)) + 0.5)
    assert abs(same) < 0.02 < 0.2 < shifted  # shifted: about 1.5 here
    subsets = kernel_distance(RNG.normal(size=(400, 8)), RNG.normal(size=(400, 8)) + 0.5,
                              num_subsets=10, subset_size=100)
    np.testing.assert_allclose(subsets, shifted, rtol=0.3)


# ---------------------------------------------------------------- feature extractors


def test_the_shipped_digits_classifier_keeps_its_recorded_held_out_accuracy():
    record = shipped.training_record()
    assert shipped.WEIGHTS_PATH.stat().st_size < 300_000
    x, y = load_digits()
    _, held = shipped.held_out_split(len(x), record["held_out"]["fraction"],
                                     record["held_out"]["seed"])
    assert len(held) == record["held_out"]["samples"]
    accuracy = np.mean(DigitsClassifier().predict_classes(x[held]) == y[held])
    assert accuracy >= record["held_out_accuracy"] - 0.005 >= 0.97, accuracy


def test_digits_features_of_other_sizes_and_channels_are_resized():
    x, _ = load_digits(image_size=None)  # 8x8
    clf = DigitsClassifier()
    small = clf.features(np.repeat(x[:16], 3, axis=-1))
    big = clf.features(ops.image.resize(x[:16], (28, 28), interpolation="bilinear"))
    np.testing.assert_allclose(small, big, atol=1e-5)
    assert small.shape == (16, 64)


def test_fid_and_kid_on_digits_features_rank_real_halves_above_noise():
    x, _ = load_digits()
    noise = RNG.uniform(size=(200, 28, 28, 1)).astype("float32")
    values = {}
    for name, metric in (("fid", FrechetDistance("digits")), ("kid", KernelDistance("digits"))):
        metric.update_state(x[:200], x[200:400])
        values[name] = float(metric.result())
        metric.reset_state()
        metric.update_state(x[:200], noise)
        values[name + "_noise"] = float(metric.result())
    assert values["fid_noise"] > 20 * values["fid"] and values["kid_noise"] > 20 * values["kid"]


def test_inception_without_weights_on_disk_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = str(tmp_path / "models" / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(MissingWeightsError) as error:
        inception_features()
    message = str(error.value)
    assert expected in message and "never downloads" in message
    assert "keras.applications.InceptionV3(include_top=False, weights='imagenet')" in message
    assert "inception_features(weights=" in message
    with pytest.raises(MissingWeightsError, match="not in the Keras cache"):
        FrechetDistance(feature_extractor="inception")
    with pytest.raises(MissingWeightsError, match="not in the file given: 'nope.h5'"):
        inception_features(weights="nope.h5")
    with pytest.raises(ValueError, match="Valid choices: 'digits', 'inception'"):
        KernelDistance(feature_extractor="incepton")


# ---------------------------------------------------------------- recognition


def painted_class(images):
    """A classifier with a known answer: class = round(10 * mean pixel), as one-hot scores."""
    level = np.rint(10 * np.asarray(images).reshape(len(images), -1).mean(axis=1)).astype(int)
    return np.eye(11)[level]


def test_class_recognition_rate_and_distinct_classes_equal_a_hand_count():
    asked = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    made = np.array([0, 1, 2, 2, 4, 9, 6, 6])  # 5 of 8 as asked, 6 distinct classes
    images = np.ones((8, 4, 4, 1)) * made[:, None, None, None] / 10
    assert class_recognition_rate(images, asked, classifier=painted_class) == 5 / 8
    assert class_recognition_rate(images, np.eye(10)[asked], classifier=painted_class) == 5 / 8
    assert distinct_classes(images, classifier=painted_class) == 6
    x, y = load_digits()
    assert distinct_classes(x[:100]) == 10
    assert distinct_classes(np.repeat(x[:1], 20, axis=0)) == 1


class LabelPainter(Step):
    """A conditional 'generator' that paints label/10, except odd labels as the next one."""

    name = "test-label-painter"
    roles = ("generator",)
    data_kind = "labeled-images"
    generative = True

    def sample_inputs(self, n, seed):
        labels = np.repeat(np.arange(10, dtype="int32"), max(1, n // 10))
        z = np.random.default_rng(seed).normal(size=(len(labels), 2)).astype("float32")
        return {"z": z, "label": labels}

    def train_step(self, ctx, data):  # never trained: the test only samples
        raise NotImplementedError

    test_step = train_step

    def call(self, ctx, inputs, training=False):
        label = ops.cast(inputs["label"], "float32")
        painted = ops.where(ops.mod(label, 2.0) == 0.0, label, label + 1.0) / 10.0
        bias = ctx.networks["generator"](inputs["z"])  # zero: the network is a role, unused
        return ops.ones((ops.shape(label)[0], 4, 4, 1)) * ops.reshape(painted + bias[:, 0],
                                                                       (-1, 1, 1, 1))


class PainterPlugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(LabelPainter)


def test_the_callback_reports_class_recognition_for_a_conditional_step():
    stepkit.register_plugin(PainterPlugin(), name="test-label-painter")
    generator = keras.Sequential([keras.Input((2,)),
                                  keras.layers.Dense(1, kernel_initializer="zeros")])
    model = StepModel({"generator": generator}, step="test-label-painter")
    real = np.ones((6, 4, 4, 1)) * np.arange(6)[:, None, None, None] / 10
    quality = SampleQuality(real, metrics=("fid", "distinct_classes"), n_samples=40,
                            feature_extractor=lambda im: np.asarray(im).reshape(len(im), -1),
                            classifier=painted_class)
    quality.set_model(model)
    quality.set_params({"epochs": 1})
    quality.on_train_begin()
    logs = {}
    quality.on_epoch_end(0, logs)
    # labels 0-9 four times each; the even ones come out as asked, the odd ones as label + 1
    assert logs["class_recognition"] == 0.5
    assert logs["distinct_classes"] == 6  # 0, 2, 4, 6, 8, 10
    assert np.isfinite(logs["fid"]) and quality.records == [{"epoch": 1, **logs}]


# ---------------------------------------------------------------- the callback in fit


def tiny_gan():
    keras.utils.set_random_seed(1)
    generator = keras.Sequential([keras.Input((8,)), keras.layers.Dense(28 * 28, "sigmoid"),
                                  keras.layers.Reshape((28, 28, 1))])
    discriminator = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                      keras.layers.Dense(1)])
    model = StepModel({"generator": generator, "discriminator": discriminator}, step="gan",
                      config={"latent_dim": 8}, seed=0)
    model.compile()
    return model


def test_the_callback_logs_fid_and_kid_into_history_files_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    x, _ = load_digits()
    model = tiny_gan()
    quality = SampleQuality(x[:64], n_samples=32)
    model.fit(x[:8], epochs=2, batch_size=8, verbose=0,
              callbacks=[quality, HistoryFiles(tmp_path), keras.callbacks.TensorBoard(tmp_path)])
    history = model.history.history
    assert len(history["fid"]) == len(history["kid"]) == 2
    # the logged value is the metric of the final generator's samples
    samples = model.predict(model.step.sample_inputs(32, 0), verbose=0)
    fid = FrechetDistance("digits")
    fid.update_state(x[:64], samples)
    kid = KernelDistance("digits")
    kid.update_state(x[:64], samples)
    np.testing.assert_allclose(history["fid"][-1], float(fid.result()), rtol=1e-5)
    np.testing.assert_allclose(history["kid"][-1], float(kid.result()), rtol=1e-5)
    records = json.loads((tmp_path / "history.json").read_text())
    assert [r["fid"] for r in records] == pytest.approx(history["fid"])
    events = EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
    events.Reload()
    logged = [float(make_ndarray(t.tensor_proto)) for t in events.Tensors("epoch_fid")]
    np.testing.assert_allclose(logged, history["fid"], rtol=1e-6)


def test_the_callback_rejects_unknown_metrics_and_a_non_conditional_class_recognition():
    with pytest.raises(ValueError, match="Unknown sample-quality metrics \\['fdi'\\]. Valid "
                                         "choices: 'fid', 'kid'"):
        SampleQuality(np.zeros((4, 28, 28, 1)), metrics=("fdi",))
    quality = SampleQuality(np.zeros((4, 28, 28, 1)), metrics=("class_recognition",),
                            n_samples=4)
    quality.set_model(tiny_gan())
    with pytest.raises(ValueError, match="class_recognition needs a conditional step"):
        quality.evaluate()


def test_stepkit_fit_logs_fid_and_kid_of_a_generative_step_on_the_digits(tmp_path, capsys):
    from stepkit.cli import main

    out = tmp_path / "run"
    assert main(["fit", "--step", "gan", "--epochs", "1", "--limit", "32", "--batch-size", "32",
                 "--image-size", "8", "--verbose", "0", "--out", str(out)]) == 0
    (record,) = json.loads((out / "history.json").read_text())
    assert record["fid"] > 0 and np.isfinite(record["kid"]) and "d_loss" in record
    assert "fid " in capsys.readouterr().out  # the final report lists it with the losses
