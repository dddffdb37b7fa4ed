"""``stepkit list`` and ``stepkit info`` with a third-party plugin of a long distribution name."""

import os
import re

import pytest
from test_cli import ENV, run_cli

PLUGIN = '''
import attrs

import stepkit
from stepkit.steps.gan import GAN, GANConfig


@attrs.frozen
class WideConfig(GANConfig):
    """Settings of ``wide-gan``: the gan's, and one more.

    Attributes:
        width: filters of the wide networks.
    """

    width: int = 64


class WideGAN(GAN):
    name = "wide-gan"
    description = "A GAN from a package with a long name (a test plugin)."
    config_class = WideConfig


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(WideGAN)
'''
DIST = "stepkit-plugin-with-a-rather-long-distribution-name"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    (root / "wide_gan_plugin.py").write_text(PLUGIN)
    dist = root / f"{DIST.replace('-', '_')}-10.20.30.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 10.20.30\n")
    (dist / "entry_points.txt").write_text("[stepkit]\nwide-gan = wide_gan_plugin\n")
    return {**ENV, "PYTHONPATH": os.pathsep.join([str(root), ENV.get("PYTHONPATH", "")])}


def test_list_columns_stay_apart_with_a_long_distribution_name(plugin_env):
    proc = run_cli("list", env=plugin_env)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "roles:" in line]
    assert any(f"{DIST} 10.20.30  roles: generator, discriminator" in r for r in rows), rows
    assert len({r.index("roles:") for r in rows}) == 1  # one column for every row
    for row in rows:
        assert re.match(r"^\S+ +\S+ \S+ {2,}roles: ", row), row


def test_info_keeps_field_docs_of_a_subclassed_config(plugin_env):
    proc = run_cli("info", "wide-gan", env=plugin_env)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"wide-gan  ({DIST} 10.20.30)" in text
    assert "latent_dim: int = default 128" in text
    assert "size of the generator's input noise vector." in text  # from GANConfig
    assert "filters of the wide networks." in text  # its own
