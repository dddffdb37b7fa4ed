"""``StepModel.export`` does on each backend what ``keras.Model.export`` does for its network.

Runs in-process on the current Keras backend (``ON_EVERY_BACKEND``). For every format
Keras 3.15 knows and four models (``supervised`` over a functional and over a subclassed
network; ``gan`` and a conditional ``gan``, whose generator serves latent vectors, and
labels in a dict), the network alone is exported with ``keras.Model.export`` and the
StepModel with ``StepModel.export``, in the same test:

* where Keras exports, so does StepModel, and both artifacts, reloaded
  (``tf.saved_model.load``, ``torch.export.load``, the LiteRT interpreter, onnxruntime
  where installed), give ``model.predict``'s outputs to rtol 1e-5;
* where Keras fails for want of a package (onnx, openvino, jax2onnx, litert-torch),
  StepModel fails with the same error;
* where Keras cannot export on this backend (``torch`` on TensorFlow and JAX, ``litert``
  on JAX, ``tf_saved_model`` with a free batch dimension on torch), StepModel raises a
  ``ValueError`` naming the backend, the format and the alternatives.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import stepkit  # noqa: E402
from stepkit import StepModel  # noqa: E402

BACKEND = keras.backend.backend()
FORMATS = ("tf_saved_model", "onnx", "openvino", "litert", "torch")
SUFFIX = {"tf_saved_model": "", "onnx": ".onnx", "openvino": ".xml", "litert": ".tflite",
          "torch": ".pt2"}
# Keras 3.15 refuses these (or, for a SavedModel on torch, fails inside torch.export).
CANNOT = {("tensorflow", "torch"), ("jax", "torch"), ("jax", "litert"),
          ("torch", "tf_saved_model")}
NATIVE = {"tensorflow": "tf_saved_model", "jax": "tf_saved_model", "torch": "torch"}
CASES = ("functional", "subclassed", "gan", "conditional-gan")
RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 5)).astype("float32")
Y = np.stack([X[:, 0] * 2 + 1, X[:, 1] - X[:, 2]], 1).astype("float32")
IMAGES = RNG.uniform(size=(16, 8, 8, 1)).astype("float32")
LABELS = RNG.integers(0, 3, size=16).astype("int32")
Z = RNG.normal(size=(4, 4)).astype("float32")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, activation="relu")
        self.out = keras.layers.Dense(2)

    def call(self, x):
        return self.out(self.hidden(x))


def _gan_networks(conditional):
    """A small generator (BatchNorm: served with its moving statistics) and discriminator."""
    z, label = keras.Input((4,), name="z"), keras.Input((), dtype="int32", name="label")
    h = keras.layers.Concatenate()([z, keras.layers.Embedding(3, 4)(label)]) if conditional \
        else z
    h = keras.layers.BatchNormalization()(keras.layers.Dense(16, activation="relu")(h))
    fake = keras.layers.Reshape((8, 8, 1))(keras.layers.Dense(64, activation="sigmoid")(h))
    image = keras.Input((8, 8, 1), name="image")
    features = keras.layers.Flatten()(image)
    if conditional:
        features = keras.layers.Concatenate()([features, keras.layers.Embedding(3, 4)(label)])
    logit = keras.layers.Dense(1)(features)
    if conditional:
        return {"generator": keras.Model({"z": z, "label": label}, fake),
                "discriminator": keras.Model({"image": image, "label": label}, logit)}
    return {"generator": keras.Model(z, fake), "discriminator": keras.Model(image, logit)}


def _fit(case):
    keras.utils.set_random_seed(1)
    if case in ("functional", "subclassed"):
        net = Subclassed() if case == "subclassed" else keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
        model = StepModel(net, step="supervised")
        model.compile(optimizer="sgd", loss="mse")
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
        return model, net, X[:4]
    conditional = case == "conditional-gan"
    config = {"latent_dim": 4, "num_classes": 3} if conditional else {"latent_dim": 4}
    model = StepModel(_gan_networks(conditional), step="gan", config=config, seed=0)
    model.compile()
    # Built from a batch, not trained: a GAN step's XLA compilation costs ~10 s on JAX's
    # CPU and changes nothing that export does.
    model.build_from_data((IMAGES, LABELS) if conditional else IMAGES)
    inputs = {"z": Z, "label": np.array([0, 1, 2, 1], "int32")} if conditional else Z
    model.predict(inputs, verbose=0)  # Keras exports ONNX only from a network called before
    return model, model.generator, inputs


@pytest.fixture(scope="module")
def trained():
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = _fit(case)
        return cache[case]

    return get


def _attempt(export, path, fmt, **kwargs):
    try:
        export(str(path), format=fmt, verbose=False, **kwargs)
    except Exception as e:  # compared with what Keras raised
        return e
    return None


def _rows(fn, inputs):
    """``fn`` on each row (the default torch program has a batch of 1), stacked."""
    n = len(keras.tree.flatten(inputs)[0])
    return np.concatenate([np.asarray(fn(keras.tree.map_structure(lambda a, i=i: a[i:i + 1],
                                                                  inputs))) for i in range(n)])


def _litert(path, inputs):
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=path).get_signature_runner()
    feed = inputs if isinstance(inputs, dict) else {next(iter(runner.get_input_details())): inputs}
    return next(iter(runner(**feed).values()))


def _onnx(path, inputs):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime reloads the ONNX artifact")
    session = ort.InferenceSession(path)
    flat = keras.tree.flatten(inputs)
    return session.run(None, {i.name: v for i, v in zip(session.get_inputs(), flat,
                                                         strict=True)})[0]


def _serve(fmt, path, inputs):
    """The reloaded artifact's outputs for ``inputs`` (numpy)."""
    if fmt == "tf_saved_model":
        import tensorflow as tf

        served = tf.saved_model.load(path)
        return served.serve(keras.tree.map_structure(tf.constant, inputs)).numpy()
    if fmt == "torch":
        import torch

        program = torch.export.load(path).module()
        return _rows(lambda row: program(keras.tree.map_structure(torch.from_numpy, row))
                     .detach().cpu().numpy(), inputs)
    if fmt == "litert":
        return _rows(lambda row: _litert(path, row), inputs)
    if fmt == "onnx":
        return _rows(lambda row: _onnx(path, row), inputs)
    pytest.skip(f"this test has no runtime to reload a {fmt} artifact")


def _input_names(fmt, path):
    """The names the artifact takes its inputs by (SavedModel and LiteRT signatures)."""
    import tensorflow as tf

    if fmt == "tf_saved_model":
        return sorted(tf.saved_model.load(path).signatures["serving_default"]
                      .structured_input_signature[1])
    if fmt == "litert":
        return sorted(tf.lite.Interpreter(model_path=path).get_signature_runner()
                      .get_input_details())
    return None


def _message(error, path):
    return str(error).replace(str(path), "<path>")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_export_does_what_keras_does_for_the_network(trained, tmp_path, case, fmt):
    model, net, inputs = trained(case)
    keras_path, step_path = tmp_path / f"keras{SUFFIX[fmt]}", tmp_path / f"step{SUFFIX[fmt]}"
    keras_error = _attempt(net.export, keras_path, fmt)
    step_error = _attempt(model.export, step_path, fmt)
    if (BACKEND, fmt) in CANNOT:
        assert keras_error is not None, f"Keras now exports {fmt} on {BACKEND}"
        assert isinstance(step_error, ValueError), step_error
        text = str(step_error)
        assert f"format={fmt!r}" in text and f"on the {BACKEND} backend" in text, text
        assert f"On {BACKEND} it exports: " in text and "stepkit.load_model" in text, text
        assert "KERAS_BACKEND=" in text, text
        return
    if fmt == NATIVE[BACKEND]:
        assert keras_error is None, keras_error
    if keras_error is not None:  # a missing package: the same error as Keras
        assert type(step_error) is type(keras_error), (step_error, keras_error)
        assert _message(step_error, step_path) == _message(keras_error, keras_path)
        return
    assert step_error is None, step_error
    expected = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(net.predict(inputs, verbose=0), expected, rtol=1e-5, atol=1e-6)
    from_keras = _serve(fmt, str(keras_path), inputs)
    from_step = _serve(fmt, str(step_path), inputs)
    np.testing.assert_allclose(from_keras, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_step, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_step, from_keras, rtol=1e-5, atol=1e-6)
    if isinstance(inputs, dict):  # fed by name: the names of the network's inputs
        assert _input_names(fmt, str(step_path)) == _input_names(fmt, str(keras_path))


def test_a_loaded_model_exports_with_its_saved_input_spec(trained, tmp_path):
    # The route the refusal names: save, load (on the backend that has the format), export.
    model, _, inputs = trained("conditional-gan")
    model.save(str(tmp_path / "model.keras"))
    loaded = stepkit.load_model(str(tmp_path / "model.keras"))
    assert loaded.get_build_config() == model.get_build_config()
    path = str(tmp_path / f"loaded{SUFFIX[NATIVE[BACKEND]]}")
    loaded.export(path, format=NATIVE[BACKEND], verbose=False)
    np.testing.assert_allclose(_serve(NATIVE[BACKEND], path, inputs),
                               model.predict(inputs, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.export's dynamic_shapes")
def test_torch_export_takes_keras_dynamic_shapes(trained, tmp_path):
    import torch

    model, net, _ = trained("functional")
    batch = {0: torch.export.Dim("batch", min=1, max=64)}
    for exporter, name in ((net, "keras.pt2"), (model, "step.pt2")):
        exporter.export(str(tmp_path / name), format="torch", verbose=False, dynamic_shapes=batch)
        program = torch.export.load(str(tmp_path / name)).module()
        out = program(torch.from_numpy(X[:7])).detach().numpy()
        np.testing.assert_allclose(out, model.predict(X[:7], verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="Keras' SavedModel route from torch")
def test_a_static_signature_takes_keras_savedmodel_route_on_torch(trained, tmp_path):
    model, net, _ = trained("functional")
    static = [keras.InputSpec(shape=(2, 5), dtype="float32")]
    keras_error = _attempt(net.export, tmp_path / "keras", "tf_saved_model",
                           input_signature=static)
    step_error = _attempt(model.export, tmp_path / "step", "tf_saved_model",
                          input_signature=static)
    if keras_error is None:  # torch-xla installed
        assert step_error is None, step_error
        return
    assert type(step_error) is type(keras_error), (step_error, keras_error)
    assert str(step_error) == str(keras_error)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="tf.saved_model.save takes Keras models on TF")
def test_tf_saved_model_save_refuses_the_model_as_it_refuses_keras_models(trained, tmp_path):
    import tensorflow as tf

    model, net, _ = trained("functional")
    for saved, name in ((net, "keras"), (model, "step")):  # model.export writes a SavedModel
        with pytest.raises(ValueError, match="Expected an object of type `Trackable`"):
            tf.saved_model.save(saved, str(tmp_path / name))
