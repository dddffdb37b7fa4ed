"""torch: a step's gradients are laid out like their parameters, as ``.grad`` after backward().

``torch.autograd.grad`` returns the layout its backward op made; Keras' torch
convolutions permute their kernels, so kernel gradients came back
non-contiguous and every optimizer update on them ran several times slower
(bench/bench_backends.py: the torch ``gan`` step 5-8% slower than the
hand-written one). Values must not change, only the layout.
"""

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="strides of torch tensors; runs with KERAS_BACKEND=torch")


def test_gradients_have_their_parameters_strides_and_the_same_values():
    import torch

    from stepkit import backend

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3),
                            keras.layers.Conv2DTranspose(2, 3), keras.layers.Flatten(),
                            keras.layers.Dense(1)])
    x = keras.random.normal((2, 6, 6, 1))
    params = [v.value for v in net.trainable_variables]
    raw = torch.autograd.grad(keras.ops.sum(net(x) ** 2), params)
    assert not all(g.is_contiguous() for g in raw), "autograd.grad no longer permutes: no test"
    loss = keras.ops.sum(net(x) ** 2)
    loss.backward()
    grads, aux = backend.value_and_grad(lambda: (keras.ops.sum(net(x) ** 2), "aux"),
                                        net.trainable_variables)
    assert aux == "aux"
    for g, r, p in zip(grads, raw, params, strict=True):
        assert g.stride() == p.stride() == p.grad.stride(), p.shape
        torch.testing.assert_close(g, r, rtol=0, atol=0)
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)
