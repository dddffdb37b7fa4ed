import numpy as np
from sklearn.datasets import load_digits
from stepkit.testing import Sample, conformance_tests


def make_sample():
    images = (load_digits().images[:40] / 16.0).astype("float32")
    z = np.random.default_rng(0).normal(size=(8, 8)).astype("float32")
    return Sample(images, predict_x=z, batch_size=16)


# --8<-- [start:conformance]
globals().update(conformance_tests("wgan-gp", sample=make_sample,
                                   config={"latent_dim": 8, "n_critic": 2}))
# --8<-- [end:conformance]
