"""``pytest --stepkit-step NAME``: the conformance kit on any installed step, no test file."""

import os
import subprocess
import sys

import pytest

from stepkit.testing.backends import current_backend, skip_reason

HERE = current_backend()  # --stepkit-backend's default
CHECKS = ("fit", "epoch_means", "replicas")
RUN = [c for c in CHECKS if not skip_reason(c, HERE)]  # torch has no replicas

def _pytest(tmp_path, *args):
    # A directory holding only a conftest: the option must bring its own tests.
    (tmp_path / "conftest.py").write_text("")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *args], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    return _pytest(tmp_path_factory.mktemp("empty"), "--stepkit-step", "gan",
                   "--stepkit-step", "supervised",
                   "--stepkit-checks", ",".join(CHECKS))


def test_option_runs_the_checks_on_an_installed_step(gan_run):
    assert gan_run.returncode == 0, gan_run.stdout[-3000:] + gan_run.stderr[-3000:]
    # gan has default networks: its checks pass (but those the backend cannot run);
    # supervised has none: 3 skips.
    expected = f"{len(RUN)} passed, {6 - len(RUN)} skipped"
    assert expected in gan_run.stdout, gan_run.stdout[-3000:]


def test_a_step_without_default_networks_is_skipped_with_the_reason(gan_run):
    assert "step 'supervised' needs networks" in gan_run.stdout
    assert "pass networks={'network': ...}" in gan_run.stdout


def test_the_summary_says_what_was_checked_and_what_was_not(gan_run):
    assert f"gan on {HERE}: {len(RUN)} check(s) run on the generic sample images 8x8x1." \
        in gan_run.stdout
    assert (f"supervised on {HERE}: NOTHING CHECKED, {len(RUN)} check(s) skipped: step "
            "'supervised' needs networks") in gan_run.stdout


def test_a_run_that_checks_nothing_fails(tmp_path):
    proc = _pytest(tmp_path, "--stepkit-step", "supervised", "--stepkit-checks", "fit,predict")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 skipped" in proc.stdout
    assert f"supervised on {HERE}: NOTHING CHECKED" in proc.stdout
    assert "--stepkit-step checked nothing, so this run fails (exit status 1)" in proc.stdout


def test_without_the_option_the_empty_directory_has_no_tests(tmp_path):
    proc = _pytest(tmp_path)
    assert proc.returncode == 5, proc.stdout[-2000:]  # pytest's "no tests collected"


def test_unknown_step_and_check_are_usage_errors(tmp_path):
    proc = _pytest(tmp_path, "--stepkit-step", "gann")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no installed step named ['gann']" in proc.stderr and "gan" in proc.stderr
    proc = _pytest(tmp_path, "--stepkit-step", "gan", "--stepkit-checks", "fit,fitt")
    assert proc.returncode == 4
    assert "unknown check(s) ['fitt']" in proc.stderr and "replicas" in proc.stderr
    proc = _pytest(tmp_path, "--stepkit-step", "gan", "--stepkit-backend", "jax,mxnet")
    assert proc.returncode == 4
    assert ("--stepkit-backend`: unknown Keras backend(s) ['mxnet'] in 'jax,mxnet'. Valid: "
            "tensorflow, jax, torch, or 'all'.") in proc.stderr
