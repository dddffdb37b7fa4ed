"""Every Python/TOML snippet of docs/write-your-own-step.md is verbatim plugin code."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "write-your-own-step.md"
BLOCK = re.compile(r"(?:<!-- snippet: (?P<ref>\S+) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)\n```",
                   re.S)


def section(path: Path, name: str) -> str:
    """The lines between ``--8<-- [start:name]`` and ``--8<-- [end:name]`` in ``path``."""
    lines, inside, found = [], False, False
    for line in path.read_text().splitlines():
        if f"--8<-- [end:{name}]" in line:
            inside = False
        if inside:
            lines.append(line)
        if f"--8<-- [start:{name}]" in line:
            inside = found = True
    assert found, f"no snippet section {name!r} in {path}"
    return "\n".join(lines)


def blocks():
    return [m.groupdict() for m in BLOCK.finditer(PAGE.read_text())]


def test_page_has_snippets():
    refs = [b["ref"] for b in blocks() if b["ref"]]
    assert len(refs) >= 8


@pytest.mark.parametrize("block", [b for b in blocks() if b["lang"] in ("python", "toml")],
                         ids=lambda b: b["ref"] or "unmarked")
def test_snippet_is_verbatim_from_tested_code(block):
    assert block["ref"], f"a {block['lang']} block has no snippet marker:\n{block['code']}"
    path, name = block["ref"].split("#")
    assert path.startswith("plugins/"), path
    assert block["code"] == section(ROOT / path, name)


def test_the_folder_tree_lists_real_files():
    tree = next(b["code"] for b in blocks() if b["lang"] == "text")
    lines = tree.splitlines()
    root = ROOT / "plugins" / lines[0].strip().rstrip("/")
    for line in lines[1:]:
        assert (root / line.strip()).is_file(), line


def test_snippet_sources_are_run_by_the_plugin_tests():
    # The page's Python snippets come from the step module and from test files.
    files = {b["ref"].split("#")[0] for b in blocks() if b["ref"]}
    assert any("/tests/test_" in f for f in files)
    assert any(f.endswith("stepkit_wgan_gp/__init__.py") for f in files)
