"""Every test module says where it runs: tests/backend_scope.py lists each exactly once."""

from pathlib import Path

import backend_scope


def test_every_test_module_is_in_exactly_one_list():
    modules = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    counts = backend_scope.every_module_listed()
    unlisted = sorted(modules - set(counts))
    twice = sorted(name for name, n in counts.items() if n > 1)
    gone = sorted(set(counts) - modules)
    assert not unlisted, f"add these modules to a list in tests/backend_scope.py: {unlisted}"
    assert not twice, f"modules in several lists of tests/backend_scope.py: {twice}"
    assert not gone, f"tests/backend_scope.py lists modules that do not exist: {gone}"


def test_other_backends_collect_only_the_every_backend_modules():
    assert backend_scope.collected_on("tensorflow", "test_gan.py")
    assert backend_scope.collected_on("jax", "test_backend_fidelity.py")
    assert not backend_scope.collected_on("torch", "test_replicas.py")
