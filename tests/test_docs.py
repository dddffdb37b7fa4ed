"""The documentation site: it builds with --strict, and documents every hook, step and command."""

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

import stepkit.hookspecs  # noqa: E402
from stepkit.cli import build_parser  # noqa: E402
from stepkit.registry import BUILTIN_DISTRIBUTION, list_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def docs_text() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.rglob("*.md")))


def headings() -> set[str]:
    found = re.findall(r"^#{1,6}\s+(.+?)\s*$", docs_text(), flags=re.MULTILINE)
    return {h.strip().strip("`") for h in found}


def test_site_builds_strict(tmp_path):
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        pytest.skip(f"docs tools not installed ({', '.join(missing)}): "
                    "pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    steps_page = (tmp_path / "site" / "steps" / "index.html").read_text()
    assert "latent_dim" in steps_page and "<table" in steps_page  # generated reference
    api_page = (tmp_path / "site" / "api" / "index.html").read_text()
    assert 'id="stepkit.model.StepModel"' in api_page  # mkdocstrings ran


def test_every_hook_builtin_step_and_subcommand_is_documented():
    titles = headings()
    hooks = [n for n, f in inspect.getmembers(stepkit.hookspecs, inspect.isfunction)
             if n.startswith("stepkit_")]
    assert hooks, "no hook specifications found"
    steps = [i.name for i in list_steps() if i.distribution == BUILTIN_DISTRIBUTION]
    assert {"supervised", "custom-loss", "gan"} <= set(steps)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = [f"stepkit {c}" for c in sub.choices]
    missing = [n for n in hooks + steps + commands if n not in titles]
    assert not missing, f"not documented with a heading in docs/: {missing}"
    text = docs_text()
    markers = set(re.findall(r"<!-- stepkit:step ([a-z0-9_-]+) -->", text))
    assert set(steps) <= markers, f"no generated reference for {set(steps) - markers}"
    flags = [o for a in sub.choices["fit"]._actions for o in a.option_strings
             if o.startswith("--") and o != "--help"]
    undocumented = [f for f in flags if f"`{f}" not in text]
    assert not undocumented, f"stepkit fit flags missing from the docs: {undocumented}"


def test_the_step_contract_reference_names_every_public_member():
    from stepkit import errors
    from stepkit.context import StepContext
    from stepkit.step import Batch, Step

    page = (DOCS / "reference.md").read_text()
    members = [n for c in (Step, StepContext, Batch) for n in vars(c) if not n.startswith("_")]
    members += [n for n, o in vars(errors).items() if inspect.isclass(o)]
    missing = [n for n in members if f"`{n}" not in page]
    assert not missing, f"not in docs/reference.md: {missing}"


def test_the_testing_page_documents_every_check_field_argument_and_option():
    import attrs

    import stepkit.testing.pytest_plugin as plugin
    from stepkit.testing import CHECK_NAMES, Sample, conformance_tests, run_conformance
    from stepkit.testing.checks import ALL_CHECKS, REPLICA_CHECKS

    page = (DOCS / "testing.md").read_text()
    assert "testing.md" in (ROOT / "mkdocs.yml").read_text(), "docs/testing.md is not in the nav"
    assert list(CHECK_NAMES) == [*ALL_CHECKS, *REPLICA_CHECKS]
    titles = {h.strip().strip("`") for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", page, re.M)}
    missing = [n for n in CHECK_NAMES if n not in titles]
    assert not missing, f"checks without a heading in docs/testing.md: {missing}"
    options = re.findall(r'addoption\(\s*"(--[\w-]+)"', Path(plugin.__file__).read_text())
    assert {"--stepkit-step", "--stepkit-checks"} <= set(options)
    names = [f.name for f in attrs.fields(Sample)] + options + ["stepkit_conformance"] + [
        p for fn in (conformance_tests, run_conformance)
        for p in inspect.signature(fn).parameters]
    undocumented = sorted({n for n in names if f"`{n}" not in page})
    assert not undocumented, f"not in docs/testing.md: {undocumented}"
