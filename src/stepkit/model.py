"""``StepModel``: one generic ``keras.Model`` whose training step is a plugin."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from stepkit import backend
from stepkit.backend.foreign import foreign_api_error
from stepkit.building import BuildMixin, _from_spec
from stepkit.compiling import CompileMixin
from stepkit.config import structure_config, unstructure_config
from stepkit.context import StepContext
from stepkit.errors import StepDefinitionError
from stepkit.host import ModelHost
from stepkit.learning_rates import with_role_learning_rates
from stepkit.registry import get_step, get_wrapper
from stepkit.resume import with_resume
from stepkit.rng import StepSeedGenerator
from stepkit.step import Batch, Step
from stepkit.trackers import MetricsMixin, StepTrackers
from stepkit.wrapper import check_stack, make_wrapper
from stepkit.wrapping import WrappedContext, run_call, run_step


@keras.saving.register_keras_serializable(package="stepkit")
class StepModel(backend.StepTrainer, BuildMixin, CompileMixin, MetricsMixin, keras.Model):
    """A Keras model whose ``train_step`` and ``test_step`` are a step plugin's.

    Args:
        networks: one Keras model (for single-network steps) or a dict from role
            name to Keras model. Roles left out are built by the step from the
            first batch, where the step has defaults (the ``gan`` step does).
        step: the registered name of the step (``stepkit list`` shows them).
        config: an instance of the step's config class, or a mapping structured
            into it; omitted means the defaults.
        seed: seed of the model's random-number generator (noise in steps).
        wrappers: step wrappers stacked over the step, outermost first: names
            (``"sam"``), dicts (``{"name": "ema", "decay": 0.999, "roles":
            ["generator"]}``) or :class:`stepkit.Wrapper` instances. ``stepkit
            list`` shows the installed ones; :mod:`stepkit.wrapper` gives the
            ordering rules.
        **kwargs: passed to ``keras.Model`` (``name``, ``dtype``...).

    Example::

        model = StepModel(net, step="supervised")
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        model.fit(x, y, epochs=5)

        gan = StepModel(step="gan", config={"latent_dim": 64})
        gan.compile()
        gan.fit(images, epochs=5)
        gan.generator  # every role is also an attribute
    """

    def __init__(self, networks: Any = None, *, step: str = "supervised", config: Any = None,
                 seed: int | None = None, wrappers: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        step_class: type[Step] = get_step(step)
        self.step = step_class(structure_config(step_class.config_class, config, step=step))
        self._seed = seed
        self._wrappers = self._make_wrappers(wrappers)
        host = ModelHost(self)
        self._ctx = WrappedContext(host, self._wrappers) if self._wrappers else StepContext(host)
        self._networks = self._normalise_networks(networks)
        tracked = [n for n in step_class.tracked if n != "loss"]
        # only a step that tracks values of its own has the container (Keras' own
        # `model.metrics` stays [loss, compile metrics, the network's metrics])
        self._step_trackers = StepTrackers(tracked, step_class.directions) if tracked else None
        # The generator's state is a weight of the model, so it is saved, restored
        # and mirrored like any other (Keras saves no SeedGenerator state itself).
        seed_generator = StepSeedGenerator(seed, name="step_seed_generator")
        object.__setattr__(self, "_seed_generator", seed_generator)
        self._rng_state = seed_generator.state
        self._step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="only_first_replica")
        self._step_state: dict[str, Any] = {}
        self._step_loss = None
        self._build_batch: Batch | None = None
        self._checked_iterator = None
        if all(r in self._networks and self._networks[r].built for r in step_class.roles):
            self._finish_build()

    # ------------------------------------------------------------ networks

    def _normalise_networks(self, networks: Any) -> dict[str, Any]:
        roles = self.step.roles
        if networks is None:
            return {}
        if isinstance(networks, keras.layers.Layer):
            if len(roles) != 1:
                raise ValueError(
                    f"Step {self.step.name!r} has {len(roles)} roles ({', '.join(roles)}): "
                    "pass networks as a dict {role: model}. Received one "
                    f"{type(networks).__name__}."
                )
            return {roles[0]: networks}
        if not isinstance(networks, Mapping):
            raise TypeError(
                f"`networks` must be a Keras model or a dict from role to Keras model. "
                f"Received: networks={networks!r}."
            )
        unknown = [k for k in networks if k not in roles]
        if unknown:
            raise ValueError(
                f"Unknown role(s) {unknown} for step {self.step.name!r}. Valid roles: "
                f"{', '.join(roles)}."
            )
        for role, net in networks.items():
            if not isinstance(net, keras.layers.Layer):
                raise TypeError(
                    f"networks[{role!r}] must be a Keras model or layer. Received: {net!r}."
                )
        return {r: networks[r] for r in roles if r in networks}

    def _make_wrappers(self, specs: Any) -> tuple[Any, ...]:
        if specs is None:
            return ()
        if isinstance(specs, str | Mapping) or not isinstance(specs, list | tuple):
            specs = [specs]
        made = [make_wrapper(spec, get_wrapper) for spec in specs]
        for w in made:
            w.bind(self.step)
        check_stack(made)
        return tuple(made)

    @property
    def wrappers(self) -> tuple[Any, ...]:
        """The step's wrappers, outermost first (empty without wrappers)."""
        return self._wrappers

    @property
    def networks(self) -> Mapping[str, Any]:
        """The networks by role (read-only)."""
        return MappingProxyType({r: self._networks[r] for r in self.step.roles
                                 if r in self._networks})

    @property
    def optimizers(self) -> Mapping[str, Any]:
        """The optimizers by role (read-only); ``model.optimizer`` is the first role's."""
        return MappingProxyType(dict(getattr(self, "_role_optimizers", {}) or {}))

    def __getattr__(self, name: str) -> Any:
        networks = self.__dict__.get("_networks")
        step = self.__dict__.get("step")
        if networks is not None and step is not None and name in step.roles:
            if name in networks:
                return networks[name]
            raise AttributeError(
                f"Role {name!r} has no network yet: step {step.name!r} builds it from the "
                "first batch (call fit() or build_from_data()), or pass it in `networks`."
            )
        # One network: its public attributes read through the model, so callbacks written
        # for net.fit (self.model.<attribute of the network>) keep working.
        if networks is not None and step is not None and len(step.roles) == 1 \
                and not name.startswith("_") and step.roles[0] in networks:
            net = networks[step.roles[0]]
            try:
                return getattr(net, name)
            except AttributeError:
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def weights(self) -> list[Any]:
        """The networks' weights, then the framework's own (step counter, RNG, step state).

        ``model.get_weights()`` therefore starts with the networks' weights, in
        role order; ``model.networks[role].get_weights()`` is exactly one
        network's.
        """
        own = [self._step_counter, self._rng_state, *self._step_state.values()]
        ids = {id(v) for v in own}
        return [w for w in super().weights if id(w) not in ids] + own

    @property
    def output_names(self) -> list[str]:
        """The output names of the network ``model(x)`` calls (for compile dicts)."""
        net = self.__dict__.get("_networks", {}).get(self.step.roles[0])
        names = getattr(net, "output_names", None)
        if not names:
            raise AttributeError("output_names")
        return names

    # ------------------------------------------------------------ the step

    def _variables_for(self, role: str) -> list[Any]:
        return self.step.trainable_variables(self._ctx, role)

    def _add_step_state(self, name: str, shape: Any, dtype: str, initializer: Any) -> Any:
        if name in self._step_state:
            raise StepDefinitionError(f"Step state {name!r} was created twice.")
        var = self.add_weight(name=name, shape=shape, dtype=dtype, initializer=initializer,
                              trainable=False, aggregation="only_first_replica")
        self._step_state[name] = var
        return var

    def call(self, inputs: Any, training: bool = False) -> Any:
        missing = [r for r in self.step.roles if r not in self._networks]
        if missing:
            raise ValueError(
                f"Role(s) {missing} of step {self.step.name!r} have no network yet: the step "
                "builds them from the first batch of fit()/evaluate(), or from "
                "model.build_from_data(batch). Pass them in `networks` to predict before that."
            )
        return run_call(self._ctx, inputs, training)

    def _run(self, method: str, data: Any) -> dict[str, Any]:
        try:
            result = run_step(self._ctx, method, data)
        except Exception as e:
            error = foreign_api_error(self.step, e, backend.BACKEND)
            if error is None:
                raise
            raise error from e
        if result is not None:
            raise StepDefinitionError(
                f"{type(self.step).__name__}.{method} returned {type(result).__name__}; steps "
                "report values with ctx.track(name, value, batch_size) and return None "
                "(returned tensors would be last-batch values, not epoch means)."
            )
        return self.get_metrics_result()

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """``keras.Model.fit``; a mid-epoch ``BackupAndRestore`` resumes where it stopped."""
        def extend(callbacks: Any) -> Any:
            return with_role_learning_rates(with_resume(callbacks), self)

        if len(args) > 5:
            args = (*args[:5], extend(args[5]), *args[6:])
        else:
            kwargs["callbacks"] = extend(kwargs.get("callbacks"))
        return super().fit(*args, **kwargs)

    def _train_body(self, data: Any) -> dict[str, Any]:
        logs = self._run("train_step", data)
        self._step_counter.assign_add(1)
        return self._for_reduction(logs)

    def _test_body(self, data: Any) -> dict[str, Any]:
        return self._for_reduction(self._run("test_step", data))

    def _for_reduction(self, logs: dict[str, Any]) -> dict[str, Any]:
        # Keras reduces per-step logs across workers with a MEAN over axis 0, which
        # scalars do not have; metric results are already equal on every replica.
        if not self._multi_worker():
            return logs
        return {k: keras.ops.reshape(v, (1,)) if len(getattr(v, "shape", (0,))) == 0 else v
                for k, v in logs.items()}

    # ------------------------------------------------------------ serialisation

    def export(self, filepath: Any, format: str = "tf_saved_model", verbose: Any = None,
               input_signature: Any = None, **kwargs: Any) -> Any:
        """``keras.Model.export``; the input signature defaults to the step's ``call_spec``.

        For ``supervised`` that is the network's input; for a generative step
        its sampling inputs (latent vectors). The formats are Keras' on each
        backend: TensorFlow ``tf_saved_model``, ``litert``, ``onnx``,
        ``openvino``; JAX ``tf_saved_model``, ``onnx``, ``openvino``; torch
        ``torch``, ``onnx``, ``openvino``, ``litert`` (``onnx``, ``openvino``
        and torch's ``litert`` need their packages, as in Keras).

        Raises:
            ValueError: the model has seen no data (fit it, or call
                ``build_from_data``), or Keras cannot export ``format`` on this
                backend (the message names the formats it can, and the backends
                that export ``format`` from the saved ``.keras`` file).
        """
        if input_signature is None:
            if self._build_batch is None:
                raise ValueError(
                    "The model has seen no data, so its input signature is unknown: fit() it "
                    "or call model.build_from_data(batch), or pass input_signature=[...]."
                )
            spec = self.step.call_spec(self._build_batch)

            def input_spec(t: Any, name: str | None = None) -> Any:
                return keras.InputSpec(shape=(None, *t.shape[1:]), dtype=t.dtype, name=name)

            # Dict inputs are named by their keys, as a functional model's by its Inputs.
            input_signature = [{k: input_spec(t, k) for k, t in spec.items()}
                               if isinstance(spec, Mapping) and all(
                                   isinstance(t, keras.KerasTensor) for t in spec.values())
                               else keras.tree.map_structure(input_spec, spec)]
        # What Keras 3.15 exports on each backend (onnx, openvino, torch's litert: with
        # their packages).
        formats = {"tensorflow": ("tf_saved_model", "litert", "onnx", "openvino"),
                   "jax": ("tf_saved_model", "onnx", "openvino"),
                   "torch": ("torch", "onnx", "openvino", "litert")}
        here, why = backend.BACKEND, ""
        where = [b for b, names in formats.items() if format in names and b != here]
        blocked = bool(where) and format not in formats[here]
        if here == "torch" and format == "tf_saved_model":
            # Keras traces it with torch.export, which rejects the dynamic shapes Keras gives
            # for a free (None) dimension or a nested input; a flat static one needs torch-xla.
            blocked = not all(getattr(s, "shape", None) is not None and None not in tuple(s.shape)
                              for s in input_signature)
            why = (" with a free (None) dimension or a nested input in its signature (Keras "
                   "exports it from torch only with a flat, static input_signature and torch-xla)")
        if blocked:
            raise ValueError(
                f"Keras {keras.version()} cannot export format={format!r} on the {here} "
                f"backend{why}. On {here} it exports: {', '.join(formats[here])}. Or save the "
                f"model (model.save('model.keras')), load it with stepkit.load_model under "
                f"KERAS_BACKEND={' or '.join(where)} (stepkit files load on every backend) "
                f"and export format={format!r} there."
            )
        # torch: a model over the same weights that torch.export can trace; else the model
        served = backend.serving_function(self, input_signature)
        exporter = served if isinstance(served, keras.Model) else self
        return keras.Model.export(exporter, filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)

    @property
    def _default_save_signature(self) -> Any:
        # tf.saved_model.save(model), TensorFlow only (on JAX and torch a Keras model is not
        # a TF trackable): serving_default takes the step's call_spec (Keras derives it
        # from a functional model's inputs, which StepModel has not).
        if self._build_batch is None or backend.BACKEND != "tensorflow":
            return None  # (Keras' saving reads properties: make nothing on other backends)
        return backend.serving_function(self, self.step.call_spec(self._build_batch))

    def save(self, filepath: Any, overwrite: bool = True, **kwargs: Any) -> None:
        """``keras.Model.save``; fails before writing if the config cannot be saved."""
        self.get_config()  # e.g. an unregistered lambda: raise before a file exists
        super().save(filepath, overwrite=overwrite, **kwargs)

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        base.update({
            "step": self.step.name,
            "config": unstructure_config(self.step.config),
            "networks": {r: keras.saving.serialize_keras_object(n)
                         for r, n in self.networks.items()},
            "seed": self._seed,
        })
        if self._wrappers:
            base["wrappers"] = [w.spec() for w in self._wrappers]
        # Keras builds a loaded model from its build_config only when it is not built,
        # and a StepModel whose networks load built is: keep the batch spec here too
        # (export's signature, saving again).
        build = self.get_build_config()
        if build is not None:
            base["build_batch"] = build
        return base

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> StepModel:
        config = dict(config)
        networks = {r: keras.saving.deserialize_keras_object(n, custom_objects=custom_objects)
                    for r, n in (config.pop("networks", None) or {}).items()}
        step = config.pop("step")
        step_config = config.pop("config", None)
        seed = config.pop("seed", None)
        wrappers = config.pop("wrappers", None)
        build = config.pop("build_batch", None)
        model = cls(networks or None, step=step, config=step_config, seed=seed,
                    wrappers=wrappers, **config)
        if build is not None and model.built and model._build_batch is None:
            model._build_batch = Batch(*(_from_spec(build[k]) for k in
                                         ("x", "y", "sample_weight")))
        return model
