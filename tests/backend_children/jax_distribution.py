"""Child of test_jax_distribution: one device, DataParallel and ModelParallel on JAX.

``XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax python
jax_distribution.py WORKDIR`` trains every case of :data:`CASES` three times from the same
initial weights, :data:`EPOCHS` epochs with ``shuffle=False``:

* ``single``: no distribution (one device);
* ``data``: under ``keras.distribution.DataParallel`` over both devices;
* ``model``: under ``keras.distribution.ModelParallel`` on a (1, 2) ('batch', 'model')
  mesh whose ``LayoutMap`` shards the hidden Dense kernel of :data:`SHARDED` over 'model'.

It writes ``WORKDIR/<run>_<case>.npz`` (every weight and optimizer variable) and
``.json`` (the history, and for every variable its path, its sharding's partition spec
and the shapes of its shards), or ``error`` in the ``.json``.
"""

import json
import os
import sys
import traceback

import jax
import keras
import numpy as np
from cases import build, describe, fit, snapshot

CASES = ("supervised", "gan")
EPOCHS = 2
#: The kernel ModelParallel shards (8 hidden units: 4 on each device), per case; a
#: LayoutMap key must match the whole path (``re.fullmatch``).
SHARDED = {"supervised": ".*net_hidden/kernel", "gan": ".*discriminator_hidden/kernel"}


def _placement(model) -> dict[str, dict]:
    """Path -> partition spec and shard shapes, for every weight and optimizer variable."""
    variables = list(model.weights)
    for opt in model.optimizers.values():
        variables += list(opt.variables)
    out = {}
    for v in variables:
        value = v.value
        spec = getattr(value.sharding, "spec", None)
        out[v.path] = {"spec": None if spec is None else [None if s is None else str(s)
                                                          for s in spec],
                       "devices": len(value.sharding.device_set),
                       "shards": [list(s.data.shape) for s in value.addressable_shards]}
    return out


def _distribution(run: str, case: str):
    devices = keras.distribution.list_devices()
    if run == "data":
        return keras.distribution.DataParallel(devices=devices)
    mesh = keras.distribution.DeviceMesh(shape=(1, 2), axis_names=("batch", "model"),
                                         devices=devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[SHARDED[case]] = (None, "model")
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def train(run: str, case: str, arrays: dict, initial: list) -> tuple[dict, dict]:
    def go():
        model = build(case)
        model.set_weights(initial)
        meta = {"history": fit(model, case, arrays, epochs=EPOCHS),
                "iterations": describe(model)["iterations"], "placement": _placement(model)}
        return snapshot(model, ""), meta

    if run == "single":
        return go()
    with _distribution(run, case).scope():
        return go()


def main(workdir: str) -> None:
    arrays = dict(np.load(os.path.join(workdir, "data.npz")))
    with open(os.path.join(workdir, "devices.json"), "w") as f:
        json.dump([str(d) for d in jax.devices()], f)
    for case in CASES:
        initial = build(case).get_weights()
        for run in ("single", "data", "model"):
            stem = os.path.join(workdir, f"{run}_{case}")
            try:
                state, meta = train(run, case, arrays, initial)
            except Exception:
                state, meta = {}, {"error": traceback.format_exc()[-3000:]}
            np.savez(stem + ".npz", **state)
            with open(stem + ".json", "w") as f:
                json.dump(meta, f)


if __name__ == "__main__":
    main(sys.argv[1])
