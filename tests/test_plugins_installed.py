"""The plugin packages under plugins/ are installed and found through real entry points."""

import json
import os
import subprocess
import sys

import pytest

PLUGINS = {  # step name -> (distribution, module)
    "wgan-gp": ("stepkit-wgan-gp", "stepkit_wgan_gp"),
    "distill": ("stepkit-distill", "stepkit_distill"),
    "vae": ("stepkit-vae", "stepkit_vae"),
}

_PROBE = """
import json, sys
from importlib import metadata
import stepkit
from stepkit.registry import registry
eps = {ep.name: ep.value for ep in metadata.entry_points(group="stepkit")}
out = {}
for name in sys.argv[1:]:
    cls = stepkit.get_step(name)
    info = registry().info(name)
    out[name] = {"class": cls.__module__ + "." + cls.__qualname__, "entry_point": eps.get(name),
                 "distribution": info.distribution, "version": info.version}
out["broken"] = [b.plugin for b in registry().broken()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def found():
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPKIT_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", _PROBE, *PLUGINS], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("step", list(PLUGINS))
def test_step_is_found_by_name_through_its_entry_point(found, step):
    dist, module = PLUGINS[step]
    assert found[step]["entry_point"] == module
    assert found[step]["class"].startswith(module + ".")
    assert found[step]["distribution"] == dist
    assert found[step]["version"] == "0.1.0"


def test_no_plugin_is_broken(found):
    assert found["broken"] == []
