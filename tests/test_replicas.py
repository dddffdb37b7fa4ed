"""MirroredStrategy over 2 logical CPU devices gives the single-device results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def results():
    script = Path(__file__).with_name("replicas_script.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("step", ["supervised", "custom-loss", "custom-loss-unreduced",
                                  "two-updates"])
def test_two_replicas_match_one_device(results, step):
    assert results["replicas"] == 2
    one, two = results[step]["one"], results[step]["two"]
    # 2 epochs x 3 batches, one optimizer update each (two for "two-updates")
    assert one["iterations"] == two["iterations"] == (12 if step == "two-updates" else 6)
    assert one["history"].keys() == two["history"].keys()
    for key in one["history"]:
        np.testing.assert_allclose(two["history"][key], one["history"][key], atol=1e-5)
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_gan_trains_with_unscaled_losses_and_per_replica_noise(results):
    one, two = results["gan"]["one"], results["gan"]["two"]
    assert two["iterations"] == {"generator": 4, "discriminator": 4}
    for key in ("d_loss", "g_loss"):
        values = np.array(two["history"][key])
        assert np.isfinite(values).all()
        # BCE at the start of training is about log(2) = 0.69; a loss left scaled
        # by 1/replicas would report about half of the single-device figure.
        np.testing.assert_allclose(values, one["history"][key], rtol=0.35)
    first, second = two["noise"]
    assert not np.allclose(first, second)


def test_unreduced_loss_trains_like_mse_on_one_and_two_replicas(results):
    for devices in ("one", "two"):
        mse, unreduced = results["custom-loss"][devices], results["custom-loss-unreduced"][devices]
        for key in mse["history"]:
            np.testing.assert_allclose(unreduced["history"][key], mse["history"][key], atol=1e-6)
        for a, b in zip(mse["weights"], unreduced["weights"], strict=True):
            np.testing.assert_allclose(b, a, atol=1e-6)
