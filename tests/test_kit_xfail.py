"""``conformance_tests(xfail=...)``: a known failure may be any exception, or only the given one."""

import os
import subprocess
import sys
import textwrap

import pytest

from stepkit.testing import conformance_tests


def _mark(value):
    (test,) = conformance_tests("supervised", lambda: None, checks=["fit"],
                                xfail={"fit": value}).values()
    (parametrize,) = test.pytestmark  # one param per backend, each carrying the xfail mark
    (param,) = parametrize.args[1]
    (mark,) = param.marks
    return mark.kwargs


def test_a_reason_alone_accepts_any_exception():
    assert _mark("crashes on dict inputs") == {"raises": None, "reason": "crashes on dict inputs",
                                               "strict": True}


def test_a_reason_and_exception_types_accept_only_those():
    assert _mark(("crash", IndexError))["raises"] is IndexError
    assert _mark(("crash", (IndexError, KeyError)))["raises"] == (IndexError, KeyError)


@pytest.mark.parametrize("value", [3, ("crash",), ("crash", "IndexError"), ("crash", ()),
                                   (IndexError, "crash")])
def test_other_values_are_an_error_that_shows_the_forms(value):
    with pytest.raises(TypeError, match=r"xfail\['fit'\] must be a reason string, or a tuple "
                                        r"\(reason, exception\)"):
        _mark(value)


MODULE = """
    import numpy as np
    from stepkit.testing import ConformanceError, conformance_tests

    def sample():
        return np.zeros((40, 5), "float32"), np.zeros((40, 1), "float32")

    # No networks: supervised has no default ones, so the check crashes with ValueError.
    for suffix, xfail in [("any", "no networks"), ("typed", ("no networks", ValueError)),
                          ("contract_only", ("no networks", ConformanceError))]:
        for name, test in conformance_tests("supervised", sample, checks=["fit"],
                                            xfail={"fit": xfail}).items():
            globals()[f"{name}_{suffix}"] = test
    del name, test  # not a test of its own
"""


def test_a_known_crash_can_be_marked(tmp_path):
    (tmp_path / "test_marked.py").write_text(textwrap.dedent(MODULE))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rxf", "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    out = proc.stdout
    assert "1 failed, 2 xfailed" in out, out[-3000:] + proc.stderr[-3000:]
    assert "FAILED test_marked.py::test_conformance_fit_contract_only" in out
    assert "ValueError" in out
