"""An exponential moving average (EMA) of a network's weights, for sampling.

After the ``t``-th update (``t = 0, 1, ...``) ``shadow <- d_t * shadow + (1 - d_t) *
weight`` for every trainable weight of the network, with
``d_t = min(decay, (1 + t) / (10 + t))``: the warm-up of TensorFlow's
``tf.train.ExponentialMovingAverage(decay, num_updates)``, so that early on the
average is not dominated by the random initial weights. The shadows start as
copies of the weights.

Sampling from the averaged generator is standard practice in GANs (Karras et
al. 2018, "Progressive Growing of GANs"; Yazici et al. 2019, "The Unusual
Effectiveness of Averaging in GAN Training"; BigGAN, StyleGAN). The shadows are
step state (``ctx.add_state``), so they are weights of the model: saved,
restored, mirrored across replicas. Non-trainable weights (batch-norm
statistics) are used as they are.

Example::

    ema = WeightAverage(0.999)
    ema.build(ctx, generator, "generator_ema")      # in Step.build_state
    ema.update(ctx.iterations)                       # after each generator update
    images = ema.call(generator, z)                  # inference with the averages
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class WeightAverage:
    """The EMA of one network's trainable weights, held as step state.

    Args:
        decay: the EMA decay in (0, 1); e.g. 0.999 averages over about 1000 updates.
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)
        self.pairs: list[tuple[Any, Any]] = []  # (weight, shadow)

    def build(self, ctx: Any, network: Any, prefix: str) -> None:
        """Create one shadow per trainable weight of ``network`` (named ``prefix_i``)."""
        self.pairs = []
        for i, weight in enumerate(network.trainable_variables):
            shadow = ctx.add_state(f"{prefix}_{i}", tuple(weight.shape), weight.dtype)
            shadow.assign(weight.value)
            self.pairs.append((weight, shadow))

    def decay_at(self, step: Any) -> Any:
        """``min(decay, (1 + step) / (10 + step))``, a float32 scalar."""
        t = ops.cast(step, "float32")
        return ops.minimum(self.decay, (1.0 + t) / (10.0 + t))

    def update(self, step: Any) -> None:
        """One EMA step of every shadow towards its weight's current value.

        ``step``: updates made before this one (``ctx.iterations``), for the warm-up.
        """
        decay = self.decay_at(step)
        for weight, shadow in self.pairs:
            d = ops.cast(decay, shadow.dtype)
            shadow.assign(d * shadow.value + (1.0 - d) * ops.cast(weight.value, shadow.dtype))

    def call(self, network: Any, inputs: Any, training: bool = False) -> Any:
        """``network(inputs)`` with the averaged weights in place of the trained ones.

        Runs the network's ``__call__`` inside a ``keras.StatelessScope`` that maps
        each weight to its shadow, so nothing is assigned (JAX traces it too), and
        ``training`` reaches only networks whose ``call`` takes it, as in any Keras
        call (``stateless_call`` would pass it to every subclassed ``call``).
        """
        mapping = [(weight, shadow.value) for weight, shadow in self.pairs]
        with keras.StatelessScope(state_mapping=mapping):
            return network(inputs, training=training)
