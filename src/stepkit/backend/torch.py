"""PyTorch implementations of the backend pieces (see :mod:`stepkit.backend`).

Keras' torch trainer runs the step eagerly with autograd (keras-io, "Customizing
what happens in fit() with PyTorch"): gradients come from
``torch.autograd.grad`` on the role's parameters (not ``backward()``, so that
several roles' losses in one step never mix their ``.grad`` buffers), and
optimizer updates run under ``torch.no_grad()``. Keras' ``fit`` has no
multi-device path on torch: :func:`check_distribution` refuses one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import torch

from stepkit.backend.common import PythonLoopTrainer


def num_replicas() -> int:
    return 1


def all_reduce_sum(values: Any) -> list[Any]:
    """``values``: torch trains one replica."""
    return list(values)


def replica_id() -> Any:
    return torch.tensor(0, dtype=torch.int32)


def local_value(v: Any) -> Any:
    return v


def dataset_spec(dataset: Any) -> Any:
    return None


def is_multi_worker(strategy: Any) -> bool:
    return False


def value_and_grad(fn: Callable[[], tuple[Any, Any]],
                   variables: Sequence[Any]) -> tuple[list[Any], Any]:
    """``torch.autograd.grad`` of ``fn()[0]`` w.r.t. ``variables``; unused ones get zeros.

    A target that depends on none of them gives ``None`` for every variable, as
    TensorFlow's tape does.

    Gradients come back laid out like their parameters, as ``loss.backward()``
    stores ``.grad``: ``autograd.grad`` returns the layout the backward op made
    (Keras' torch convolutions give permuted, non-contiguous kernel gradients),
    on which the optimizer's elementwise updates run several times slower.
    """
    with torch.enable_grad():
        target, aux = fn()
        params = [v.value for v in variables]
        if not target.requires_grad:  # computed from none of them (the caller says so)
            return [None] * len(params), aux
        grads = torch.autograd.grad(target, params, allow_unused=True)
    pairs = zip(grads, params, strict=True)
    return [torch.zeros_like(p) if g is None else _laid_out_like(g, p) for g, p in pairs], aux


def _laid_out_like(grad: Any, param: Any) -> Any:
    if param.is_contiguous() and not grad.is_contiguous():
        return grad.contiguous()
    return grad


def input_gradients(fn: Callable[[Any], Any], inputs: Any) -> Any:
    """Differentiable gradient of ``sum(fn(inputs))`` w.r.t. ``inputs`` (``create_graph``)."""
    with torch.enable_grad():
        if not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
        out = torch.sum(fn(inputs))
        (grad,) = torch.autograd.grad(out, inputs, create_graph=True)
    return grad


def apply_gradients(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> None:
    with torch.no_grad():
        optimizer.apply(list(grads), list(variables))


def cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """Eager: a Python branch on ``pred``'s value."""
    return true_fn() if bool(pred) else false_fn()


_M64 = 0xFFFFFFFFFFFFFFFF


def _generator(seed: Any) -> torch.Generator:
    """A generator seeded from both ints of ``seed`` (the model's seed and a counter).

    torch's CPU generator (mt19937) keeps only the low 32 bits of its seed, so the
    pair is mixed into them (splitmix64's finaliser): otherwise every model seed
    would give the same noise.
    """
    s = torch.as_tensor(seed).to(torch.int64).reshape(-1).tolist()
    z = (((int(s[0]) & 0xFFFFFFFF) << 32 | (int(s[1]) & 0xFFFFFFFF)) + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    gen = torch.Generator(device="cpu")
    gen.manual_seed((z ^ (z >> 31)) & 0xFFFFFFFF)
    return gen


def _device() -> Any:
    from keras.src.backend.torch.core import get_device

    return get_device()


def stateless_normal(shape: Any, seed: Any, dtype: str = "float32", mean: float = 0.0,
                     stddev: float = 1.0) -> Any:
    """Normal draws from a ``torch.Generator`` seeded with the int pair ``seed``."""
    shape = tuple(int(d) for d in shape)
    z = torch.randn(shape, generator=_generator(seed), dtype=torch.float32)
    return keras.ops.cast((mean + stddev * z).to(_device()), dtype)


def stateless_uniform(shape: Any, seed: Any, dtype: str = "float32", minval: float = 0.0,
                      maxval: float = 1.0) -> Any:
    shape = tuple(int(d) for d in shape)
    u = torch.rand(shape, generator=_generator(seed), dtype=torch.float32)
    return keras.ops.cast((minval + (maxval - minval) * u).to(_device()), dtype)


def serving_function(model: Any, spec: Any) -> Any:
    """What Keras' exporters trace for ``model(inputs)`` on torch: a :class:`ServingModel`.

    ``StepModel.export`` hands it to ``keras.Model.export`` together with the
    input signature ``spec``, which Keras' exporter reads. ``tf.saved_model.save``
    takes no Keras model on torch (as for a plain ``keras.Model``), so there is
    no ``serving_default`` function to give.
    """
    return ServingModel(model)


class ServingModel(keras.Model):
    """``model(inputs, training=False)`` as a Keras model whose torch module owns the weights.

    ``torch.export`` (behind Keras' ``"torch"``, ``"onnx"`` and ``"litert"`` formats on
    torch) reaches a module's parameters by attribute access, which ``StepModel``'s
    ``__getattr__`` (roles as attributes) does not pass on to ``torch.nn.Module``. This
    model tracks the same variables (the same ``torch.nn.Parameter`` objects) and keeps
    ``model`` out of torch's module tree, so the exported program lifts every weight.
    """

    def __init__(self, model: Any) -> None:
        super().__init__(name=model.name)
        object.__setattr__(self, "_served", model)  # neither a torch submodule nor a layer
        self.served_variables = list(model.variables)
        self.build(None)  # Keras' build wrapper registers the weights with torch

    def build(self, input_shape: Any = None) -> None:
        """Nothing to create: the served model is built."""

    def call(self, inputs: Any) -> Any:
        return self._served(inputs, training=False)


_TORCH_OPTIMIZERS = "keras.src.backend.torch.optimizers."


def _public_optimizers(config: Any) -> Any:
    """``config`` with Keras' torch-only optimizer classes named by their public class.

    Keras serializes ``keras.optimizers.Adam`` on torch as
    ``keras.src.backend.torch.optimizers.torch_adam.Adam``, which another backend
    loads and cannot run; TensorFlow and JAX files name ``keras.optimizers.Adam``.
    """
    if isinstance(config, list):
        return [_public_optimizers(v) for v in config]
    if not isinstance(config, dict):
        return config
    config = {k: _public_optimizers(v) for k, v in config.items()}
    module, name = config.get("module"), config.get("class_name")
    if isinstance(module, str) and module.startswith(_TORCH_OPTIMIZERS) \
            and isinstance(name, str) and hasattr(keras.optimizers, name):
        config["module"] = "keras.optimizers"
    return config


def check_devices() -> None:
    """Refuse to train on one device when several accelerators are visible.

    Keras' ``fit`` on torch has no multi-device path: it would train on the
    first GPU and leave the others idle, silently.
    """
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count > 1:
        raise RuntimeError(
            f"Keras' torch backend trains on one device, and {count} GPUs are visible: "
            "stepkit will not silently leave all but one idle. Make one visible "
            "(CUDA_VISIBLE_DEVICES=0) to train on one GPU, or use KERAS_BACKEND=jax with "
            "keras.distribution.DataParallel (or TensorFlow with tf.distribute."
            "MirroredStrategy) to train on all of them."
        )


class StepTrainer(PythonLoopTrainer):
    """Keras' torch trainer protocol for :class:`stepkit.StepModel` (eager, stateful)."""

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        check_devices()
        return super().fit(*args, **kwargs)

    def train_step(self, data: Any) -> dict[str, Any]:
        # Only a loss function records a graph (value_and_grad and input_gradients enable
        # it), as only what runs under the tape or jax.grad is differentiated on TensorFlow
        # and JAX: a forward pass outside ctx.minimize (a GAN's generated images for its
        # discriminator's update) builds no graph nobody differentiates.
        with torch.no_grad():
            return self._train_body(_as_tensors(data))

    def test_step(self, data: Any) -> dict[str, Any]:
        return self._test_body(_as_tensors(data))

    def get_compile_config(self) -> dict[str, Any]:
        # A file saved here loads and trains on every backend (see _public_optimizers).
        return _public_optimizers(super().get_compile_config())


def _as_tensors(data: Any) -> Any:
    """A batch's numeric NumPy arrays as torch tensors, as fit()'s data adapters give them.

    Keras' torch ``train_on_batch`` / ``test_on_batch`` pass the arrays as given, so
    ``net(x) - y`` would meet a NumPy ``y`` (NumPy then converts the tensor, and a tensor
    that requires grad cannot be converted).
    """
    def convert(v: Any) -> Any:
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
            return keras.ops.convert_to_tensor(v)
        return v

    return keras.tree.map_structure(convert, data)
