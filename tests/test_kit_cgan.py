"""``pytest --stepkit-step`` on a conditional GAN: labelled images in, a dict to predict().

The test plugin ``tests/data/stepkit-cgan`` declares ``data_kind = "labeled-images"``;
its ``predict`` takes ``{"z": latent vectors, "label": labels}``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stepkit.testing.backends import current_backend

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(DATA / "stepkit-cgan")],
        check=True, capture_output=True)
    return target


def _env(site):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STEPKIT_") and k != "PYTHONWARNINGS"}
    return {**env, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3",
            "STEPKIT_PLUGINS": "stepkit-cgan"}


def test_generic_sample_of_a_conditional_gan_has_labels_and_a_dict_to_predict(site):
    code = textwrap.dedent("""
        import json
        import keras
        from stepkit.testing.generic import generic_case
        case = generic_case("cgan")
        s = case["sample"]
        def describe(t):
            return keras.tree.map_structure(lambda a: [list(a.shape), str(a.dtype)], t)
        print(json.dumps({"kind": case["kind"], "x": describe(s.x), "y": describe(s.y),
                          "predict_x": describe(s.predict_x),
                          "labels": sorted(set(s.predict_x["label"].tolist()) - set(
                              s.y.tolist()))}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=_env(site), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kind"] == "labeled-images"
    assert out["x"] == [[40, 8, 8, 1], "float32"] and out["y"] == [[40], "int32"]
    # shaped like the step's call_spec; the labels are ones the sample has
    assert out["predict_x"] == {"z": [[8, 8], "float32"], "label": [[8], "int32"]}
    assert out["labels"] == []


def test_option_runs_the_checks_on_labelled_images_and_a_structured_predict(site, tmp_path):
    (tmp_path / "conftest.py").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "--stepkit-step", "cgan", "--stepkit-checks", "fit,predict,save_load"],
        cwd=tmp_path, env=_env(site), capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "3 passed" in out and "skipped" not in out, out[-3000:]
    backend = current_backend()
    assert (f"cgan on {backend}: 3 check(s) run on the generic sample (images 8x8x1, int32 "
            "labels 0..9).") in out, out[-3000:]


def test_stepkit_fit_draws_a_conditional_step_s_grid_one_class_per_row(site, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "stepkit.cli", "fit", "--step", "cgan", "--epochs", "1",
         "--limit", "64", "--out", str(out), "--verbose", "0"],
        env=_env(site), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    code = textwrap.dedent(f"""
        import json
        from stepkit import load_model
        from stepkit.callbacks import SampleGrid
        model = load_model({str(out / "model.keras")!r})
        grid = SampleGrid("unused")
        grid.set_model(model)
        inputs = grid.latent_vectors()
        print(json.dumps({{"labels": inputs["label"].tolist(),
                          "cols": model.step.sample_grid_columns(64)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=_env(site), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    cols = got["cols"]
    assert cols == 6  # 64 samples, 10 classes: 6 of each class per row
    rows = [got["labels"][i:i + cols] for i in range(0, len(got["labels"]), cols)]
    assert [sorted(set(r)) for r in rows] == [[c] for c in range(10)]
    from PIL import Image

    grid = sorted((out / "samples").glob("*.png"))[-1]
    width, height = Image.open(grid).size
    assert width < height  # 6 tiles across, 10 rows down (plus the epoch label)


@pytest.mark.skipif(
    current_backend() == "torch",
    reason="Keras 3.15 exports format='tf_saved_model' from TensorFlow and JAX, not from torch "
           "with a free batch dimension (StepModel.export says so and names the formats that "
           "work; test_export_backends.py compares each backend's formats)")
def test_a_conditional_step_exports_with_its_structured_call_spec(site, tmp_path):
    code = textwrap.dedent(f"""
        import json
        import numpy as np
        import tensorflow as tf
        from stepkit import StepModel
        x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
        y = (np.arange(32) % 10).astype("int32")
        model = StepModel(step="cgan", seed=0)
        model.compile()
        model.fit(x, y, epochs=1, verbose=0)
        inputs = model.step.sample_inputs(20, 0)  # {{"z": (20, 8), "label": (20,)}}
        model.export({str(tmp_path / "exported")!r}, verbose=False)
        loaded = tf.saved_model.load({str(tmp_path / "exported")!r})
        served = loaded.serve(inputs)
        print(json.dumps(float(np.abs(np.asarray(served)
                                      - model.predict(inputs, verbose=0)).max())))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=_env(site), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) < 1e-6
