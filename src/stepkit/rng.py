"""The model's random-number generator, safe to advance inside replicas."""

from __future__ import annotations

import keras
from keras.src.random.seed_generator import make_default_seed


@keras.saving.register_keras_serializable(package="stepkit")
class StepSeedGenerator(keras.random.SeedGenerator):
    """A ``SeedGenerator`` whose state every replica advances identically.

    Keras' own generator creates its state with ``aggregation="none"``, which
    ``tf.distribute`` refuses to update inside a replica. Replicas get different
    noise by folding their replica id into each drawn seed
    (:meth:`stepkit.StepContext.normal`).
    """

    def __init__(self, seed: int | None = None, name: str | None = None, **kwargs) -> None:
        super().__init__(seed=seed, name=name, **kwargs)
        start = seed if seed is not None else make_default_seed()
        dtype = self.backend.random_seed_dtype()

        def init(*args, **kw):
            return self.backend.convert_to_tensor([start, 0], dtype=kw.get("dtype", dtype))

        with self.backend.name_scope(self.name, caller=self):
            self.state = self.backend.Variable(
                init, shape=(2,), dtype=dtype, trainable=False,
                aggregation="only_first_replica", name="seed_generator_state")
