"""pytest plugin of the stepkit conformance kit (entry point ``pytest11: stepkit``).

It offers the ``stepkit_conformance`` fixture: :func:`stepkit.testing.run_conformance`,
with Keras' global dtype policy restored after the test; and the option
``--stepkit-step NAME`` (repeatable), which adds one test per conformance check
of the installed step ``NAME`` on a generic sample (see
:mod:`stepkit.testing.generic`); ``--stepkit-checks fit,replicas`` picks the
checks. A step that no generic sample fits has its checks skipped with the
reason, and the terminal summary says that nothing was checked for it; when a
run checks nothing at all, pytest exits with status 1, not 0. Importing this
module does not import TensorFlow; the checks import it when they run.

Example::

    def test_my_step(stepkit_conformance):
        stepkit_conformance("my-step", sample=(x, y), checks=["fit", "save_load"])

    # or, with no test file at all:
    #   pytest --stepkit-step wgan-gp --stepkit-checks fit,replicas
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stepkit", "stepkit conformance kit")
    group.addoption("--stepkit-step", action="append", default=[], metavar="NAME",
                    help="run the stepkit conformance checks on the installed step NAME, "
                         "with a generic sample and the step's default networks (repeatable).")
    group.addoption("--stepkit-checks", default=None, metavar="NAMES",
                    help="comma-separated conformance checks for --stepkit-step "
                         "(default: all).")


def _checks(config: pytest.Config) -> list[str]:
    from stepkit.testing import CHECK_NAMES

    raw = config.getoption("--stepkit-checks")
    if raw is None:
        return list(CHECK_NAMES)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECK_NAMES]
    if unknown or not names:
        raise pytest.UsageError(f"--stepkit-checks: unknown check(s) {unknown} in {raw!r}. "
                                f"Valid checks: {', '.join(CHECK_NAMES)}.")
    return names


_CASES: dict[str, object] = {}  # step -> its generic case, or why it has none
_RAN = pytest.StashKey[dict[str, list[str]]]()  # step -> the checks that ran
_SKIPPED = pytest.StashKey[dict[str, tuple[list[str], str]]]()  # step -> (checks, why)


class StepCheckItem(pytest.Item):
    """One conformance check of one installed step, on the generic sample."""

    def __init__(self, *, step: str, check: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.check = step, check

    def runtest(self) -> None:
        from stepkit.testing import run_conformance
        from stepkit.testing.generic import NoGenericSample, generic_case

        if self.step not in _CASES:
            try:
                _CASES[self.step] = generic_case(self.step)
            except NoGenericSample as exc:
                _CASES[self.step] = exc
        case = _CASES[self.step]
        if isinstance(case, NoGenericSample):
            checks, _ = self.config.stash[_SKIPPED].setdefault(self.step, ([], str(case)))
            checks.append(self.check)
            pytest.skip(f"NOTHING CHECKED: {case}")
        self.config.stash[_RAN].setdefault(self.step, []).append(self.check)
        try:
            run_conformance(self.step, case["sample"], checks=[self.check])
        finally:
            _restore_policy()

    def repr_failure(self, excinfo, style=None):
        from stepkit.testing import ConformanceError

        if isinstance(excinfo.value, ConformanceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"stepkit conformance: {self.step} {self.check}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    steps = config.getoption("--stepkit-step")
    if not steps:
        return
    import stepkit

    available = {info.name for info in stepkit.list_steps()}
    unknown = [s for s in steps if s not in available]
    if unknown:
        raise pytest.UsageError(f"--stepkit-step: no installed step named {unknown}. "
                                f"Installed steps: {', '.join(sorted(available))}.")
    for step in dict.fromkeys(steps):
        for check in _checks(config):
            items.append(StepCheckItem.from_parent(session, name=f"stepkit[{step}]::{check}",
                                                   step=step, check=check))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RAN], config.stash[_SKIPPED] = {}, {}


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    ran, skipped = config.stash[_RAN], config.stash[_SKIPPED]
    if not ran and not skipped:
        return
    tr = terminalreporter
    tr.write_sep("=", "stepkit conformance kit")
    for step, checks in ran.items():
        data = _CASES[step]["data"] if isinstance(_CASES.get(step), dict) else "?"
        tr.write_line(f"{step}: {len(checks)} check(s) run on the generic sample {data}.")
    for step, (checks, why) in skipped.items():
        tr.write_line(f"{step}: NOTHING CHECKED, {len(checks)} check(s) skipped: {why}",
                      red=True, bold=True)
    if not ran:
        tr.write_line("stepkit: --stepkit-step checked nothing, so this run fails (exit "
                      "status 1).", red=True, bold=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A --stepkit-step run whose every check was skipped must not look like a pass.
    if session.config.stash.get(_SKIPPED, None) and not session.config.stash[_RAN] and (
            exitstatus == pytest.ExitCode.OK):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _restore_policy() -> None:
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def stepkit_conformance():
    """:func:`stepkit.testing.run_conformance`; restores the global dtype policy afterwards."""
    from stepkit.testing import run_conformance

    yield run_conformance
    _restore_policy()
