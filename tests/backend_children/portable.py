"""Child of test_backend_portability: save on this backend, then load the others' files.

``python portable.py WORKDIR SRC...`` (one process per backend, all started together):

First, for every case, train 1 epoch, save ``WORKDIR/<backend>/<case>.keras`` and write
``<case>.npz`` / ``.json``: the saved state, the predictions, and for ``supervised`` the
state after a 2nd epoch here (the uninterrupted run); then ``WORKDIR/<backend>.saved``.

Then, as each source backend's ``.saved`` appears, for every case load
``WORKDIR/<src>/<case>.keras`` with ``stepkit.load_model`` and write
``WORKDIR/<backend>/from_<src>_<case>.npz`` / ``.json``: the state just after loading,
the predictions, and the state after 1 more epoch from the file (``cont_``); for the
noisy steps also from a model built here whose weights and optimizer variables are
assigned by hand from the saved numbers (``ref_``); for the first source also from the
file with freshly compiled optimizers (``fresh_``: what dropping their state gives).
A failure of one (source, case) is written as ``error`` in its ``.json``.

The file's ``jit_compile`` is recorded; the continuations then train with this
backend's own default (``"auto"``), so that they check optimizer state only.
"""

import functools
import json
import os
import sys
import time
import traceback

import keras
import numpy as np
from cases import CASES, build, compile_fresh, describe, fit, fit_args, predict_input, snapshot

import stepkit

BACKEND = keras.backend.backend()
#: Seconds to wait for another backend's files.
WAIT_S = 240


def _predict(model, name, arrays):
    return np.asarray(model.predict(predict_input(name, arrays), verbose=0))


def _dump(out_dir: str, stem: str, state: dict, meta: dict) -> None:
    np.savez(os.path.join(out_dir, f"{stem}.npz"), **state)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(meta, f)


def save(workdir: str, arrays: dict) -> None:
    out_dir = os.path.join(workdir, BACKEND)
    os.makedirs(out_dir, exist_ok=True)
    for name in CASES:
        model = build(name)
        fit(model, name, arrays)
        model.save(os.path.join(out_dir, f"{name}.keras"))
        state = {**snapshot(model, "saved_"), "pred": _predict(model, name, arrays)}
        meta = {"saved": describe(model)}
        if name == "supervised":  # deterministic: other backends continue to the same numbers
            meta["history"] = fit(model, name, arrays)
            state.update(snapshot(model, "own_"))
        _dump(out_dir, name, state, meta)
    with open(os.path.join(workdir, f"{BACKEND}.saved"), "w"):
        pass


def _transplant(name: str, saved: dict, arrays: dict) -> stepkit.StepModel:
    """A model built here whose weights and optimizer variables are assigned from ``saved``."""
    model = build(name)
    x, y = fit_args(name, arrays)
    model.build_from_data(x[:2] if y is None else (x[:2], y[:2]))
    model.set_weights([saved[f"saved_w{i}"] for i in range(len(model.weights))])
    for role, opt in model.optimizers.items():
        for i, v in enumerate(opt.variables):
            v.assign(saved[f"saved_opt:{role}:{i}"])
    return model


def _trained(model: stepkit.StepModel, name: str, arrays: dict) -> stepkit.StepModel:
    fit(model, name, arrays)
    return model


@functools.cache
def _own_jit_compile(name: str) -> object:
    return build(name).jit_compile


def load_one(workdir: str, src: str, name: str, arrays: dict, fresh: bool) -> tuple:
    path = os.path.join(workdir, src, f"{name}.keras")
    saved = dict(np.load(os.path.join(workdir, src, f"{name}.npz")))
    model = stepkit.load_model(path)
    state = {**snapshot(model, "loaded_"), "pred": _predict(model, name, arrays)}
    meta = {"loaded": describe(model), "jit_compile": model.jit_compile,
            "own_jit_compile": _own_jit_compile(name)}
    model.jit_compile = meta["own_jit_compile"]
    meta["history"] = fit(model, name, arrays)
    state.update(snapshot(model, "cont_"))
    if name != "supervised":  # noise differs across backends: continue a hand-made copy here
        state.update(snapshot(_trained(_transplant(name, saved, arrays), name, arrays),
                              "ref_"))
    if fresh:
        again = stepkit.load_model(path, compile=False)
        compile_fresh(again, name)
        state.update(snapshot(_trained(again, name, arrays), "fresh_"))
    return state, meta


def _next_source(workdir: str, waiting: list[str]) -> str | None:
    """The first of ``waiting`` whose files are saved; None when its child failed or hung."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for src in waiting:
            if os.path.exists(os.path.join(workdir, f"{src}.saved")):
                return src
        if all(os.path.exists(os.path.join(workdir, f"{s}.failed")) for s in waiting):
            return None
        time.sleep(0.2)
    return None


def load(workdir: str, sources: list[str], arrays: dict) -> None:
    out_dir = os.path.join(workdir, BACKEND)
    os.makedirs(out_dir, exist_ok=True)
    waiting, first = list(sources), True
    while waiting:
        src = _next_source(workdir, waiting)
        if src is None:
            return  # the parent reports the missing results with the other child's log
        waiting.remove(src)
        fresh, first = first, False
        for name in CASES:
            start = time.monotonic()
            try:
                state, meta = load_one(workdir, src, name, arrays, fresh=fresh)
            except Exception:
                state, meta = {}, {"error": traceback.format_exc()[-3000:]}
            meta["seconds"] = time.monotonic() - start
            _dump(out_dir, f"from_{src}_{name}", state, meta)


if __name__ == "__main__":
    workdir, *others = sys.argv[1:]
    data = dict(np.load(os.path.join(workdir, "data.npz")))
    try:
        save(workdir, data)
    except BaseException:
        with open(os.path.join(workdir, f"{BACKEND}.failed"), "w"):
            pass
        raise
    load(workdir, others, data)
