"""Why a check failed on a backend: the likely cause, for the failure message.

A step written with ``tf.reduce_mean`` or ``tf.GradientTape`` passes every
check on TensorFlow and fails on JAX or torch, deep inside TensorFlow, with an
error about tensor types. :func:`explain` finds the step's line that called
another backend's API, from

1. the exception and its chain (``__cause__``, ``__context__``): a frame of
   the step's code that called into another backend's package, or whose line
   uses a name the file imported from one (``import tensorflow as tf``);
2. a traceback quoted in text (the tail of a child process' stderr);
3. failing those, the source of the step class itself;

and otherwise recognises a few backend-specific errors (a Python branch on a
traced JAX value, a torch tensor that requires grad converted to NumPy, Keras'
own float16 limits on torch CPU). It does not rely on the step's error having
been rewritten by :class:`stepkit.StepModel`.

Example::

    explain(exc, "jax", step_class)
    # "the step calls TensorFlow directly at my_step.py:31 (`tf.reduce_mean` in ...): ..."
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import itertools
import linecache
import os
import re
import sysconfig
import tokenize
import traceback
from collections.abc import Iterator
from typing import Any

import attrs

__all__ = ["ForeignCall", "explain", "from_exception", "from_source", "from_text",
           "keras_limitation"]

NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
_TOP = {"tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax", "torch": "torch"}
_LIBRARIES = ("tensorflow", "jax", "jaxlib", "torch", "keras", "tf_keras", "numpy", "optree",
              "pluggy", "_pytest", "pytest", "stepkit")


@attrs.frozen
class ForeignCall:
    """A line of the step's code that uses another backend's API."""

    path: str
    line: int
    code: str
    api: str  # e.g. "tf.reduce_mean"
    backend: str  # the backend that API belongs to

    @property
    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


def _rel(path: str) -> str:
    """``path`` relative to the working directory when it is under it."""
    return os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path


def _foreign(backend: str) -> set[str]:
    return {b for b in NAMES if b != backend}


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    dirs = []
    for name in _LIBRARIES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        dirs += [os.path.realpath(d) for d in (spec and spec.submodule_search_locations) or []]
    return tuple(dirs)


def _is_user_file(path: str) -> bool:
    """Not Keras, a backend, NumPy, stepkit's framework (its built-in steps are code) or stdlib."""
    if not path or path.startswith("<"):
        return False
    real = os.path.realpath(path)
    if os.sep + os.path.join("stepkit", "steps") + os.sep in real:
        return True
    if any(real.startswith(d + os.sep) for d in _library_dirs()):
        return False
    paths = sysconfig.get_paths()
    if any(real.startswith(os.path.realpath(paths[k]) + os.sep) for k in ("purelib", "platlib")):
        return True
    return not real.startswith(os.path.realpath(paths["stdlib"]) + os.sep)


@functools.cache
def _aliases(path: str) -> dict[str, str]:
    """Names ``path`` binds to another backend's modules: ``{"tf": "tensorflow", ...}``."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return {}
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in _TOP:
                    names[a.asname or top] = _TOP[top]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top = node.module.split(".")[0]
            if top in _TOP:
                names.update({a.asname or a.name: _TOP[top] for a in node.names})
    return names


def _tokens(code: str) -> Iterator[tokenize.TokenInfo]:
    lines = iter([code, ""])
    try:
        yield from tokenize.generate_tokens(lambda: next(lines))
    except (tokenize.TokenError, IndentationError, SyntaxError, StopIteration):
        return


def _api_in(code: str, aliases: dict[str, str], foreign: set[str]) -> tuple[str, str] | None:
    """``("tf.reduce_mean", "tensorflow")``: the first use of a foreign alias in ``code``."""
    tokens = [t for t in _tokens(code) if t.type in (tokenize.NAME, tokenize.OP)]
    for i, tok in enumerate(tokens):
        backend = aliases.get(tok.string) if tok.type == tokenize.NAME else None
        if backend not in foreign or (i and tokens[i - 1].string == "."):
            continue
        return ".".join(_dotted(tokens, i)), backend
    return None


def _dotted(tokens: list[tokenize.TokenInfo], i: int) -> list[str]:
    parts, j = [tokens[i].string], i + 1
    while j + 1 < len(tokens) and tokens[j].string == "." and tokens[j + 1].type == tokenize.NAME:
        parts.append(tokens[j + 1].string)
        j += 2
    return parts


def _call_at(path: str, line: int, backend: str) -> ForeignCall | None:
    if not _is_user_file(path):
        return None
    code = linecache.getline(path, line).strip()
    found = _api_in(code, _aliases(path), _foreign(backend)) if code else None
    return ForeignCall(path, line, code, *found) if found else None


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _package(frame: Any) -> str | None:
    return _TOP.get(str(frame.f_globals.get("__name__", "")).split(".")[0])


def from_exception(exc: BaseException, backend: str) -> ForeignCall | None:
    """The step's call into another backend, from ``exc``'s traceback or its chain's."""
    foreign = _foreign(backend)
    for e in _chain(exc):
        frames = list(traceback.walk_tb(e.__traceback__))
        for (caller, line), (callee, _) in itertools.pairwise(frames):
            path = caller.f_code.co_filename
            if _package(callee) in foreign and _is_user_file(path):
                code = linecache.getline(path, line).strip()
                found = _api_in(code, _aliases(path), foreign)
                api, pkg = found or (f"{_package(callee)}: {callee.f_code.co_name}",
                                     _package(callee))
                return ForeignCall(path, line, code, api, pkg)
        for frame, line in reversed(frames):
            call = _call_at(frame.f_code.co_filename, line, backend)
            if call:
                return call
    return None


def from_text(text: str, backend: str) -> ForeignCall | None:
    """The innermost step line that uses another backend's API, in a quoted traceback."""
    for path, line in reversed(re.findall(r'File "([^"]+)", line (\d+)', text or "")):
        call = _call_at(path, int(line), backend)
        if call:
            return call
    return None


def from_source(step_class: type | None, backend: str) -> list[ForeignCall]:
    """Every line of ``step_class`` (and its bases outside stepkit) using another backend."""
    calls = []
    for cls in getattr(step_class, "__mro__", ()):
        module = cls.__module__
        if cls is object or (module.startswith("stepkit.") and
                             not module.startswith("stepkit.steps")):
            continue
        try:
            path, (lines, start) = inspect.getsourcefile(cls), inspect.getsourcelines(cls)
        except (OSError, TypeError):
            continue
        for offset, code in enumerate(lines):
            found = _api_in(code.strip(), _aliases(path), _foreign(backend)) if path else None
            if found:
                calls.append(ForeignCall(path, start + offset, code.strip(), *found))
    return calls


def _hint(api: str) -> str:
    low = api.lower()
    if "tape" in low or "grad" in low:
        return ("; ctx.minimize or ctx.gradients for gradients, ctx.input_gradients for "
                "gradients with respect to inputs")
    if "random" in low:
        return "; ctx.normal / ctx.uniform for noise"
    if "cond" in low:
        return "; ctx.cond for a branch on a tensor"
    if "distribute" in low:
        return "; stepkit already averages losses over replicas"
    reduce = re.search(r"reduce_(\w+)$", api)
    if reduce:
        return f"; keras.ops.{reduce.group(1)} for {api}"
    return "; keras.ops has most NumPy-style functions"


def _user_frame(exc: BaseException) -> str | None:
    """``file:line: code`` of the innermost frame of the step's code in ``exc``'s chain."""
    for e in _chain(exc):
        for frame, line in reversed(list(traceback.walk_tb(e.__traceback__))):
            path = frame.f_code.co_filename
            if _is_user_file(path):
                return f"{_rel(path)}:{line}: `{linecache.getline(path, line).strip()}`"
    return None


def _known(exc: BaseException | None, text: str, backend: str) -> str | None:
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    messages = " ".join(str(e) for e in chain) + " " + (text or "")
    at = next((w for w in map(_user_frame, chain[:1]) if w), None)
    where = f" at {at}" if at else ""
    if backend == "jax" and names & {"TracerBoolConversionError", "ConcretizationTypeError",
                                     "TracerIntegerConversionError",
                                     "TracerArrayConversionError"}:
        return (f"on JAX the step is traced (jit, value_and_grad), so its values are abstract: "
                f"a Python `if`, bool(), int(), float(), .numpy() or np.asarray on a tensor"
                f"{where} cannot run. Use ctx.cond or keras.ops.where for branches and keep "
                "values as tensors (keras.ops).")
    if backend == "jax" and "[JAX RNG]" in messages:
        return (f"the step draws unseeded random numbers{where} (keras.random without a seed "
                "generator), which JAX cannot trace. Draw noise with ctx.normal / ctx.uniform: "
                "they use the model's seed generator, which a backup also restores.")
    if backend == "torch" and "Can't call numpy() on Tensor that requires grad" in messages:
        return (f"on torch the step's tensors carry autograd history, and one was converted "
                f"to NumPy{where} (np.asarray, .numpy(), or arithmetic with a NumPy array, "
                "which converts the tensor). Keep values as tensors (keras.ops); outside a "
                "step, keras.ops.convert_to_numpy detaches them.")
    return None


def keras_limitation(exc: BaseException | None, backend: str, text: str = "") -> str | None:
    """A known limit of Keras itself on ``backend`` that ``exc`` (or ``text``) shows, or None."""
    messages = " ".join(str(e) for e in _chain(exc)) + " " + (text or "")
    if backend == "torch" and "grad_weight must be contiguous" in messages:
        return ("Keras' own torch backend cannot run a float16 Conv2DTranspose backward pass "
                "on CPU (slow_conv2d), whatever the step does: a Keras limitation. Mark "
                "mixed_precision[torch] as xfail on CPU, or test with dense networks there.")
    return None


def explain(exc: BaseException | None, backend: str, step_class: type | None = None,
            text: str = "") -> str | None:
    """The likely cause of a check's failure on ``backend``, or None when none is known."""
    call = (from_exception(exc, backend) if exc is not None else None) or from_text(text,
                                                                                     backend)
    if call:
        return (f"the step calls {NAMES[call.backend]} directly at {call.where} (`{call.api}` "
                f"in `{call.code}`), which cannot run on Keras' {backend} backend: use "
                f"keras.ops / ctx.* instead{_hint(call.api)}.")
    known = _known(exc, text, backend)
    if known:
        return known
    calls = from_source(step_class, backend)
    if calls:
        shown = ", ".join(f"{c.where} (`{c.api}`)" for c in calls[:3])
        return (f"the step's code calls {NAMES[calls[0].backend]} directly at {shown}, which "
                f"cannot run on Keras' {backend} backend: use keras.ops / ctx.* instead"
                f"{_hint(calls[0].api)}.")
    return None
