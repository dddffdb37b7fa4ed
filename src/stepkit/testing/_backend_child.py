"""Child process that runs conformance checks on its own Keras backend for a parent.

Run as ``KERAS_BACKEND=jax python -m stepkit.testing._backend_child WORKDIR``
(see :func:`stepkit.testing.backends.run_in_backend`). ``WORKDIR/payload.pkl``
holds the step name, the sample (or ``generic``: take the step's generic
sample), ``networks``, ``config``, ``compile``, ``wrappers`` (specs), the
checks and, for a step or wrappers registered by hand, their classes' import
paths. The outcome goes to
``WORKDIR/result.pkl``: ``status`` is ``"ok"`` (with ``report``), ``"failed"``
(a ConformanceError's ``message``) or ``"error"`` (any other exception's
``type``, ``message`` and ``traceback``).
"""

import os
import pickle
import sys
import traceback

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _run(payload: dict) -> dict:
    from stepkit.testing._child import register_classes
    from stepkit.testing.checks import run_conformance

    register_classes(payload["step_class"], payload["wrapper_classes"])
    sample, extra = payload["sample"], {}
    if payload["generic"]:
        from stepkit.testing.generic import NoGenericSample, generic_case

        try:
            case = generic_case(payload["step"], payload["wrappers"])
        except NoGenericSample as exc:
            return {"_generic": {"none": str(exc)}}
        sample, extra = case["sample"], {"_generic": case["data"]}
    report = run_conformance(payload["step"], sample, payload["networks"], payload["config"],
                             payload["checks"], compile=payload["compile"],
                             wrappers=payload["wrappers"])
    return {**report, **extra}


def _plain(value):
    """``value`` with every tensor as a NumPy value, so that the parent unpickles it anywhere."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "__array__") and not isinstance(value, np.ndarray | np.generic):
        import keras

        return keras.ops.convert_to_numpy(value)
    return value


def main(workdir: str) -> None:
    from stepkit.testing._harness import ConformanceError

    try:
        try:
            with open(os.path.join(workdir, "payload.pkl"), "rb") as f:
                payload = pickle.load(f)
        except Exception as exc:
            raise TypeError(
                f"The {os.environ.get('KERAS_BACKEND')} child process could not unpickle the "
                f"step's sample, networks, config or compile arguments: {exc!r}. They must be "
                "importable here: define them at module level of an importable module (or as "
                "lambdas, which cloudpickle sends by value).") from exc
        result = {"status": "ok", "report": _plain(_run(payload))}
    except ConformanceError as exc:
        result = {"status": "failed", "message": str(exc)}
    except Exception as exc:  # sent to the parent, which raises it again
        result = {"status": "error", "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                  "message": str(exc), "traceback": "".join(traceback.format_exc())[-6000:]}
    with open(os.path.join(workdir, "result.pkl"), "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
