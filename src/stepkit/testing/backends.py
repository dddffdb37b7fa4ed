"""The Keras backends the conformance kit checks a step on, and what each cannot run.

Keras' backend is fixed when ``keras`` is first imported, so a check on a
backend other than this process' runs in a child interpreter with
``KERAS_BACKEND`` set (:mod:`stepkit.testing._backend_child`):
:func:`run_in_backend` sends it the step name, the sample, the wrapper specs,
the ``networks`` and ``compile`` callables (pickled with ``cloudpickle`` when it
is installed, so lambdas and local functions travel too) and, for a step or
wrappers registered by hand, their classes' import paths; the child sends back
the report, or the failure.

Some checks cannot run on some backends (:data:`SKIPS`); they are skipped,
each with its reason. Importing this module does not import Keras.

Example::

    from stepkit.testing.backends import resolve_backends, run_in_backend

    resolve_backends("all")        # ("tensorflow", "jax", "torch")
    run_in_backend("jax", "gan", sample, checks=["fit"])["fit"]["history"]
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any

__all__ = ["SKIPS", "SUPPORTED", "CheckSkipped", "current_backend", "resolve_backends",
           "run_in_backend", "skip_reason"]

from stepkit.testing import BACKENDS as SUPPORTED  # noqa: E402 - the package's constant

#: ``XLA_FLAGS`` that give a JAX process 2 CPU devices (the ``replicas`` check on JAX).
TWO_CPU_DEVICES = "--xla_force_host_platform_device_count=2"
#: Seconds a child interpreter may take for one backend's checks.
TIMEOUT_S = 1200

_NO_MULTI_DEVICE_TORCH = ("Keras' fit() has no multi-device path on the torch backend (no "
                          "tf.distribute strategy, no keras.distribution), so there is no run "
                          "on 2 devices to compare")
#: ``(check, backend)`` -> why that check cannot run on that backend.
SKIPS: dict[tuple[str, str], str] = {
    ("replicas", "torch"): f"{_NO_MULTI_DEVICE_TORCH}.",
    ("multiworker", "torch"): f"{_NO_MULTI_DEVICE_TORCH}, nor one on 2 workers.",
    ("multiworker", "jax"): (
        "MultiWorkerMirroredStrategy is tf.distribute, which only the TensorFlow backend "
        "runs; multi-process JAX needs jax.distributed.initialize, which stepkit.launch does "
        "not do. The replicas check covers keras.distribution.DataParallel on JAX."),
    ("steps_per_execution", "torch"): (
        "Keras' torch backend requires steps_per_execution=1 (compile() refuses 3)."),
    ("jit_compile", "torch"): (
        "jit_compile=True on torch is torch.compile (TorchDynamo and Inductor), which took "
        "150 s to compile a 2-layer MLP's step on 2 CPU cores: too slow for the kit. Call "
        "stepkit.testing.checks.check_jit_compile under KERAS_BACKEND=torch to check it."),
}


class CheckSkipped(Exception):  # noqa: N818 - reads as a state, like pytest's Skipped
    """A check that cannot run on this backend; ``str()`` is the reason."""


def skip_reason(check: str, backend: str) -> str | None:
    """Why ``check`` cannot run on ``backend`` (prefixed with the backend), or None."""
    reason = SKIPS.get((check, backend))
    return None if reason is None else f"{check} is not run on {backend}: {reason}"


def current_backend() -> str:
    """This process' Keras backend, read without importing Keras when it is not imported yet.

    The same order as Keras: ``KERAS_BACKEND``, else ``backend`` in ``keras.json``
    (under ``KERAS_HOME`` or ``~/.keras``), else ``"tensorflow"``.
    """
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def resolve_backends(value: Any, option: str = "backends") -> tuple[str, ...]:
    """The backends named by ``value``: None (this process'), ``"all"``, a name or names.

    Names may also be comma-separated (``"jax,torch"``). Raises ValueError naming
    ``option`` for an unknown one.
    """
    if value is None:
        return (current_backend(),)
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"`{option}` must be backend names or 'all'. Received: {value!r}.")
        for name in (n.strip() for n in item.split(",")):
            names.extend(SUPPORTED if name == "all" else [name] if name else [])
    unknown = [n for n in names if n not in SUPPORTED]
    if unknown or not names:
        raise ValueError(f"`{option}`: unknown Keras backend(s) {unknown} in {value!r}. Valid: "
                         f"{', '.join(SUPPORTED)}, or 'all'.")
    return tuple(dict.fromkeys(names))


def _dumps(payload: dict[str, Any]) -> bytes:
    try:
        import cloudpickle
    except ImportError:  # plain pickle: module-level functions only
        cloudpickle = None
    try:
        return (cloudpickle or pickle).dumps(payload)
    except Exception as exc:
        extra = "" if cloudpickle else (" (or install cloudpickle, which also pickles lambdas "
                                        "and local functions)")
        raise TypeError(
            "Checking on another Keras backend runs the check in a child process, which gets "
            "`sample`, `networks`, `config` and `compile` pickled, but pickling them failed: "
            f"{exc!r}. Pass module-level functions{extra}."
        ) from exc


def run_in_backend(backend: str, step: str, sample: Any = None, networks: Any = None,
                   config: Any = None, checks: Any = None, *, compile: Any = None,
                   generic: bool = False, wrappers: Any = None) -> dict[str, Any]:
    """Run ``checks`` on ``step`` in a child interpreter with ``KERAS_BACKEND=backend``.

    Returns :func:`stepkit.testing.checks.run_conformance`'s report (a skipped
    check's entry is ``{"skipped": reason}``); with ``generic=True`` the child
    takes the step's generic sample (:mod:`stepkit.testing.generic`) and the
    report has ``"_generic"``: the sample's description, or ``{"none": why}``.
    ``wrappers`` (names, dicts or registered :class:`stepkit.Wrapper` instances,
    outermost first) are sent as specs; a wrapper registered by hand is imported
    there by its class path.
    Raises what the check raised there: :class:`ConformanceError` with the
    child's message, or an exception of the same type when it can be rebuilt.
    """
    from stepkit.testing._harness import ConformanceError, class_path
    from stepkit.testing._wrappers import (
        as_specs,
        rebuildable,
        stack_label,
        wrapper_class_paths,
    )

    __tracebackhide__ = True
    names = list(checks) if checks is not None else None
    specs = rebuildable(as_specs(wrappers))
    stepped = f"step {step!r}" + (f" wrapped in {stack_label(specs)}" if specs else "")
    label = f"[{'/'.join(names or ['all'])}] {stepped} on {backend}"
    try:
        path, wrapper_paths = class_path(step), wrapper_class_paths(specs)
    except ValueError as exc:
        raise ConformanceError(f"{label}: {exc}") from None
    payload = {"step": step, "sample": sample, "networks": networks, "config": config,
               "compile": compile, "checks": names, "generic": generic, "step_class": path,
               "wrappers": list(specs), "wrapper_classes": wrapper_paths}
    what = f"the {backend} child process checking {stepped}"
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "payload.pkl"), "wb") as f:
            f.write(_dumps(payload))
        env = {**_child_env(), "KERAS_BACKEND": backend}
        if backend == "jax":  # 2 CPU devices: the replicas check runs there, not in a grandchild
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {TWO_CPU_DEVICES}".strip()
        log_path = os.path.join(tmp, "child.log")
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "stepkit.testing._backend_child", tmp],
                    stdout=log, stderr=subprocess.STDOUT, env=env, timeout=TIMEOUT_S)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        result_path = os.path.join(tmp, "result.pkl")
        if code != 0 or not os.path.exists(result_path):
            with open(log_path) as f:
                tail = "\n".join(f.read().strip().splitlines()[-15:])
            ended = f"did not finish within {TIMEOUT_S} s" if code is None else (
                f"ended with exit code {code}")
            raise ConformanceError(f"{label}: {what} {ended}:\n{tail}")
        with open(result_path, "rb") as f:
            result = pickle.load(f)
    if result["status"] == "ok":
        return result["report"]
    if result["status"] == "failed":
        raise ConformanceError(result["message"]) from None
    raise _rebuild(result, what) from None


def _rebuild(result: dict[str, Any], what: str) -> BaseException:
    """The child's exception, as its own type when that takes a message, else ConformanceError."""
    from stepkit.testing._harness import ConformanceError

    message = (f"{result['message']}\n\nIn {what}:\n{result['traceback'].rstrip()}")
    module, _, name = result["type"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    except Exception:  # noqa: BLE001, S110 - fall back to a ConformanceError below
        pass
    return ConformanceError(f"{result['type']}: {message}")


def _child_env() -> dict[str, str]:
    from stepkit.testing._children import child_env

    return child_env()

