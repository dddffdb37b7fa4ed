"""mkdocs hook: fills ``<!-- stepkit:step NAME -->`` markers with ``gen_ref.py``'s reference.

Every built-in step must have its marker on the built-in steps page; a missing
one is a warning, so ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("STEPKIT_DISABLE_PLUGIN_AUTOLOAD", "1")  # only stepkit's own steps

_spec = importlib.util.spec_from_file_location("gen_ref", Path(__file__).with_name("gen_ref.py"))
gen_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_ref)

log = logging.getLogger("mkdocs.hooks.stepkit")
MARKER = re.compile(r"<!-- stepkit:step ([a-z0-9_-]+) -->")


def on_page_markdown(markdown, page, config, files):
    found = MARKER.findall(markdown)
    if not found:
        return markdown
    missing = sorted(set(gen_ref.builtin_names()) - set(found))
    if missing:
        log.warning("%s: no reference marker for built-in step(s) %s; add "
                    "'<!-- stepkit:step NAME -->'.", page.file.src_path, missing)
    return MARKER.sub(lambda m: gen_ref.step_reference(m.group(1)), markdown)
