"""Building a :class:`stepkit.StepModel` from data: networks, step state, optimizers."""

from __future__ import annotations

import weakref
from typing import Any

import keras
from keras.src.trainers.trainer import Trainer

from stepkit import backend
from stepkit.context import missing_targets
from stepkit.errors import StepDefinitionError
from stepkit.step import Batch


def _symbolic(v: Any) -> Any:
    if v is None:
        return None
    return keras.KerasTensor(tuple(v.shape), keras.backend.standardize_dtype(v.dtype))


def _from_spec(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dict) and set(v) == {"shape", "dtype"}:
        return keras.KerasTensor(tuple(v["shape"]), v["dtype"])
    if isinstance(v, dict):
        return {k: _from_spec(x) for k, x in v.items()}
    return type(v)(_from_spec(x) for x in v)


class BuildMixin:
    """How :class:`stepkit.StepModel` builds itself from the first batch (or its spec)."""

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras calls this before fit/evaluate/train_on_batch. stepkit always builds
        # here, eagerly and in the strategy scope, from the local replica's batch.
        if data_batch is None:
            checked = self._checked_iterator
            if self.built and checked is not None and checked() is iterator:
                return
            data_batch = self._first_batch(iterator)
            # weakly: holding the last fit's iterator keeps its buffers alive
            self._checked_iterator = weakref.ref(iterator)
        batch = Batch.from_data(keras.tree.map_structure(_symbolic, data_batch))
        with self._build_scope():
            self._prepare(batch)

    @staticmethod
    def _first_batch(iterator: Any) -> Any:
        # Keras' epoch iterator holds its dataset, whose element spec has every shape
        # and dtype needed: no iterator is created and no batch read on each fit().
        spec = backend.dataset_spec(getattr(iterator, "_distributed_dataset", None))
        if spec is not None:
            return spec
        for item in iterator:
            it = item[-1]
            batch = it[0] if isinstance(it, list | tuple) else next(it)
            return keras.tree.map_structure(backend.local_value, batch)
        raise ValueError("The data is empty: fit/evaluate received no batch.")

    def build_from_data(self, data: Any) -> None:
        """Build every network and optimizer from one batch (or its spec) without training."""
        batch = Batch.from_data(keras.tree.map_structure(_symbolic, data))
        with self._build_scope():
            self._prepare(batch)

    def _prepare(self, batch: Batch) -> None:
        self.step.check_data(batch)
        for w in self._wrappers:
            w.check_data(batch)
        missing = [r for r in self.step.roles if r not in self._networks]
        if missing:
            made = dict(self.step.default_networks(batch, missing))
            if sorted(made) != sorted(missing):
                raise StepDefinitionError(
                    f"Step {self.step.name!r}: default_networks() returned roles "
                    f"{sorted(made)}, expected {sorted(missing)}."
                )
            self._networks.update(made)
        if batch.y is None and self._compile_loss is not None:
            raise missing_targets(self.step.name, f"a batch with {batch.describe()}")
        self.step.build(self._ctx, batch)
        unbuilt = [r for r, n in self._networks.items() if not n.built]
        if unbuilt:
            raise StepDefinitionError(
                f"Step {self.step.name!r}: network(s) {unbuilt} were not built from the first "
                f"batch ({batch.describe()}). The step must say what each role is called on: "
                "return every role from build_inputs(batch) (e.g. {'generator': "
                "keras.KerasTensor((None, latent_dim)), 'discriminator': batch.x}), or "
                "override build(). Or pass networks that are already built."
            )
        self._build_batch = batch
        self._finish_build()
        if self.compiled and (
            (self._compile_metrics is not None and not self._compile_metrics.built)
            or (self._compile_loss is not None and not self._compile_loss.built)
        ):
            Trainer._symbolic_build(self, data_batch=(batch.x, batch.y, batch.sample_weight))
        self._check_metric_names()

    def _finish_build(self) -> None:
        if not self.built:
            self.step.build_state(self._ctx)
            for w in self._wrappers:
                w.build_state(self._ctx)
            self.built = True
        if self.compiled:
            self._build_optimizers()

    def get_build_config(self) -> dict[str, Any] | None:
        if self._build_batch is None:
            return None

        def spec(v):
            return None if v is None else keras.tree.map_structure(
                lambda t: {"shape": list(t.shape), "dtype": t.dtype}, v)

        b = self._build_batch
        return {"x": spec(b.x), "y": spec(b.y), "sample_weight": spec(b.sample_weight)}

    def build_from_config(self, config: dict[str, Any]) -> None:
        self._prepare(Batch(_from_spec(config["x"]), _from_spec(config["y"]),
                            _from_spec(config["sample_weight"])))
