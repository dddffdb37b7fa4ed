"""pytest plugin of the stepkit conformance kit (entry point ``pytest11: stepkit``).

It offers the ``stepkit_conformance`` fixture: :func:`stepkit.testing.run_conformance`,
with Keras' global dtype policy restored after the test; and the option
``--stepkit-step NAME`` (repeatable), which adds one test per conformance check
of the installed step ``NAME`` on a generic sample (see
:mod:`stepkit.testing.generic`); ``--stepkit-checks fit,replicas`` picks the
checks and ``--stepkit-backend jax`` (or ``tensorflow``, ``torch``, ``all``;
repeatable or comma-separated; default: this process' Keras backend) the
backends, each other than this process' checked in a child process.
``--stepkit-wrap SPEC`` (repeatable, outermost first; ``SPEC`` as ``stepkit
fit --wrap`` takes it: ``ema``, ``sam:rho=0.05,roles=discriminator``) checks
the steps under that wrapper stack; a stack a step cannot take (an unknown
wrapper, a bad setting, a refused order) is a usage error before any test
runs. Tests are named ``stepkit[NAME]::CHECK[BACKEND]``, or with wrappers
``stepkit[ema>sam>NAME]::CHECK[BACKEND]`` (the stack, outermost first, then
the step). A check that a backend cannot run is
skipped with the reason; a step that no generic sample fits has its checks
skipped with the reason, and the terminal summary says that nothing was checked
for it; when a run checks nothing at all, pytest exits with status 1, not 0.
Importing this module does not import TensorFlow; the checks import it when
they run.

Example::

    def test_my_step(stepkit_conformance):
        stepkit_conformance("my-step", sample=(x, y), checks=["fit", "save_load"])

    # or, with no test file at all:
    #   pytest --stepkit-step wgan-gp --stepkit-checks fit,replicas --stepkit-backend all
    #   pytest --stepkit-step gan --stepkit-wrap lookahead:k=2 --stepkit-checks fit,resume
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
    group.addoption("--stepkit-backend", action="append", default=[], metavar="NAME",
                    help="Keras backend(s) for --stepkit-step: tensorflow, jax, torch or all "
                         "(repeatable or comma-separated; default: this process' "
                         "KERAS_BACKEND). Other backends run in child processes.")
    group.addoption("--stepkit-wrap", action="append", default=[], metavar="SPEC",
                    help="check --stepkit-step under this step wrapper (repeatable, outermost "
                         "first; SPEC as stepkit fit --wrap: NAME or NAME:KEY=VALUE,..., e.g. "
                         "ema or sam:rho=0.05,roles=discriminator).")


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


def _backends(config: pytest.Config) -> tuple[str, ...]:
    from stepkit.testing.backends import resolve_backends

    raw = ",".join(config.getoption("--stepkit-backend")) or None
    try:
        return resolve_backends(raw, "--stepkit-backend")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _wrappers(config: pytest.Config) -> list[dict]:
    """``--stepkit-wrap`` items as wrapper specs, outermost first."""
    from stepkit.cli_settings import UsageError, parse_wrap

    try:
        return [parse_wrap(item) for item in config.getoption("--stepkit-wrap")]
    except UsageError as exc:
        raise pytest.UsageError(str(exc).replace("--wrap", "--stepkit-wrap")) from None


def _check_stack(step: str, specs: list[dict]) -> None:
    """Refuse, before any test runs, a stack the step cannot take (unknown name, bad config)."""
    import stepkit
    from stepkit.wrapper import check_stack, make_wrapper

    try:
        made = [make_wrapper(spec, stepkit.get_wrapper) for spec in specs]
        for wrapper in made:
            wrapper.bind(stepkit.get_step(step)())
        check_stack(made)
    except stepkit.StepkitError as exc:
        raise pytest.UsageError(f"--stepkit-wrap on step {step!r}: {exc}") from None


def _what(step: str, specs: list[dict]) -> str:
    """``gan``, or ``gan wrapped in ema > sam``."""
    from stepkit.testing._wrappers import stack_label

    return step + (f" wrapped in {stack_label(specs)}" if specs else "")


Key = tuple[str, str]  # (step, backend)
_CASES: dict[Key, object] = {}  # its generic case ({"data": ...}), or why it has none
_RAN = pytest.StashKey[dict[Key, list[str]]]()  # the checks that ran
_SKIPPED = pytest.StashKey[dict[Key, tuple[list[str], str]]]()  # no sample: (checks, why)
_NOT_ON = pytest.StashKey[dict[Key, list[str]]]()  # checks the backend cannot run


class StepCheckItem(pytest.Item):
    """One conformance check of one installed step on one backend, on the generic sample."""

    def __init__(self, *, step: str, check: str, backend: str, wrappers: list[dict],
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.check, self.backend = step, check, backend
        self.wrappers = wrappers

    def runtest(self) -> None:
        from stepkit.testing.backends import current_backend, skip_reason

        key = (self.step, self.backend)
        reason = skip_reason(self.check, self.backend)
        if reason:  # known without starting anything
            self.config.stash[_NOT_ON].setdefault(key, []).append(self.check)
            pytest.skip(reason)
        if self.backend == current_backend():
            report = self._here(key)
        else:
            report = self._child(key)
        if set(report[self.check]) == {"skipped"}:
            self.config.stash[_RAN][key].remove(self.check)
            self.config.stash[_NOT_ON].setdefault(key, []).append(self.check)
            pytest.skip(report[self.check]["skipped"])

    def _no_sample(self, key: Key) -> None:
        from stepkit.testing.generic import NoGenericSample

        case = _CASES.get(key)
        if isinstance(case, NoGenericSample):
            checks, _ = self.config.stash[_SKIPPED].setdefault(key, ([], str(case)))
            checks.append(self.check)
            pytest.skip(f"NOTHING CHECKED: {case}")

    def _here(self, key: Key) -> dict:
        from stepkit.testing import run_conformance
        from stepkit.testing.generic import NoGenericSample, generic_case

        if key not in _CASES:
            try:
                _CASES[key] = generic_case(self.step, self.wrappers)
            except NoGenericSample as exc:
                _CASES[key] = exc
        self._no_sample(key)
        self.config.stash[_RAN].setdefault(key, []).append(self.check)
        try:
            return run_conformance(self.step, _CASES[key]["sample"], checks=[self.check],
                                   wrappers=self.wrappers or None)
        finally:
            _restore_policy()

    def _child(self, key: Key) -> dict:
        from stepkit.testing.backends import run_in_backend
        from stepkit.testing.generic import NoGenericSample

        self._no_sample(key)
        try:
            report = run_in_backend(self.backend, self.step, checks=[self.check], generic=True,
                                    wrappers=self.wrappers or None)
        except Exception:
            self.config.stash[_RAN].setdefault(key, []).append(self.check)
            raise
        generic = report.pop("_generic")
        if isinstance(generic, dict):
            _CASES[key] = NoGenericSample(generic["none"])
            self._no_sample(key)
        _CASES[key] = {"data": generic}
        self.config.stash[_RAN].setdefault(key, []).append(self.check)
        return report

    def repr_failure(self, excinfo, style=None):
        from stepkit.testing import ConformanceError

        if isinstance(excinfo.value, ConformanceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return (self.path, None, f"stepkit conformance: {_what(self.step, self.wrappers)} "
                                 f"{self.check} on {self.backend}")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    steps = config.getoption("--stepkit-step")
    if not steps:
        if config.getoption("--stepkit-wrap"):
            raise pytest.UsageError(
                "--stepkit-wrap applies to the steps of --stepkit-step only: add --stepkit-step "
                "NAME, or pass wrappers=[...] to your conformance_tests(...) / "
                "run_conformance(...).")
        return
    checks, backends, wrappers = _checks(config), _backends(config), _wrappers(config)
    import stepkit

    available = {info.name for info in stepkit.list_steps()}
    unknown = [s for s in steps if s not in available]
    if unknown:
        raise pytest.UsageError(f"--stepkit-step: no installed step named {unknown}. "
                                f"Installed steps: {', '.join(sorted(available))}.")
    stack = "".join(f"{spec['name']}>" for spec in wrappers)
    for step in dict.fromkeys(steps):
        _check_stack(step, wrappers)
        for backend in backends:
            for check in checks:
                items.append(StepCheckItem.from_parent(
                    session, name=f"stepkit[{stack}{step}]::{check}[{backend}]", step=step,
                    check=check, backend=backend, wrappers=wrappers))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RAN], config.stash[_SKIPPED], config.stash[_NOT_ON] = {}, {}, {}
    _CASES.clear()  # a session's generic cases depend on its --stepkit-wrap stack


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    ran, skipped, not_on = config.stash[_RAN], config.stash[_SKIPPED], config.stash[_NOT_ON]
    if not ran and not skipped and not not_on:
        return
    tr = terminalreporter
    tr.write_sep("=", "stepkit conformance kit")
    wrappers = _wrappers(config)
    for (step, backend), checks in ran.items():
        if not checks:
            continue
        case = _CASES.get((step, backend))
        data = f" on the generic sample {case['data']}" if isinstance(case, dict) else ""
        line = f"{_what(step, wrappers)} on {backend}: {len(checks)} check(s) run{data}."
        if not_on.get((step, backend)):
            line += (f" Not run on {backend}: {', '.join(not_on[step, backend])} (pytest -rs "
                     "says why).")
        tr.write_line(line)
    for (step, backend), checks in not_on.items():
        if not ran.get((step, backend)) and (step, backend) not in skipped:
            tr.write_line(f"{_what(step, wrappers)} on {backend}: NOTHING CHECKED, "
                          f"{len(checks)} check(s) cannot "
                          f"run on {backend}: {', '.join(checks)} (pytest -rs says why).",
                          red=True, bold=True)
    for (step, backend), (checks, why) in skipped.items():
        tr.write_line(f"{_what(step, wrappers)} on {backend}: NOTHING CHECKED, "
                      f"{len(checks)} check(s) skipped: "
                      f"{why}", red=True, bold=True)
    if not any(ran.values()):
        tr.write_line("stepkit: --stepkit-step checked nothing, so this run fails (exit "
                      "status 1).", red=True, bold=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A --stepkit-step run whose every check was skipped must not look like a pass.
    stash = session.config.stash
    skipped = stash.get(_SKIPPED, None) or stash.get(_NOT_ON, None)
    if skipped and not any(stash[_RAN].values()) and exitstatus == pytest.ExitCode.OK:
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
