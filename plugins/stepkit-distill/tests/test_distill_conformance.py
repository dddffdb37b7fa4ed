import keras
from sklearn.datasets import load_digits
from stepkit.testing import Sample, conformance_tests


def make_sample():
    d = load_digits()
    return Sample((d.data[:40] / 16.0).astype("float32"), d.target[:40], batch_size=16)


def make_networks():
    def mlp(units):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"),
                                 keras.layers.Dense(10)])

    return {"student": mlp(8), "teacher": mlp(16)}


globals().update(conformance_tests("distill", sample=make_sample, networks=make_networks,
                                   compile={"metrics": ["sparse_categorical_accuracy"]}))
