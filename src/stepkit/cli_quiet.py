"""Keep the backend's own log lines off the terminal of the ``stepkit`` command.

TensorFlow writes absl/glog lines ("All log messages before absl::InitializeLog()",
"Could not find cuda drivers", "failed call to cuInit", grappler's "remapper
failed", oneDNN notices) from C++, some before ``TF_CPP_MIN_LOG_LEVEL`` is read
and straight to file descriptor 2. So the command line sets the environment
variables TensorFlow reads *and* puts a filter on file descriptor 2: a small
forked process reads what C++ code writes there and passes on every line but
the backend's log records. Python's own ``sys.stderr`` (stepkit's messages,
warnings, tracebacks) bypasses the filter and goes straight to the terminal.

``stepkit --debug ...`` installs nothing and lets every backend line through.

Example::

    quiet = BackendLogFilter.install()   # before TensorFlow is imported
    try:
        ...
    finally:
        quiet.remove()
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

# One pattern per kind of line the backend prints on its own.
NOISE = re.compile(
    rb"^(?:WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "  # absl/glog record
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w./-]+:\d+\] "  # older TensorFlow
    rb"|To enable the following instructions: .*rebuild TensorFlow"  # cpu_feature_guard
    rb")"
)

# Environment variables the backend reads at start-up (never TF_ENABLE_ONEDNN_OPTS:
# that one changes numerics, not only logs).
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}


def is_backend_log_line(line: str | bytes) -> bool:
    """Whether ``line`` is one of the backend's own log records (see ``NOISE``)."""
    data = line.encode() if isinstance(line, str) else line
    return NOISE.match(data.lstrip(b"\r")) is not None


def quiet_environment() -> None:
    """Set the backend's log-level variables, unless the user already set them."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def _pump(read_fd: int, out_fd: int) -> None:  # pragma: no cover - runs in the child
    """The filter process: copy ``read_fd`` to ``out_fd`` line by line, minus noise."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        keep = b"".join(line + b"\n" for line in lines if not is_backend_log_line(line))
        if keep:
            os.write(out_fd, keep)
    if pending and not is_backend_log_line(pending):
        os.write(out_fd, pending)


class BackendLogFilter:
    """File descriptor 2 through a filter process; ``sys.stderr`` straight to the terminal."""

    def __init__(self, saved_fd: int, pid: int, stderr: object) -> None:
        self._saved_fd = saved_fd
        self._pid = pid
        self._stderr = stderr

    @classmethod
    def install(cls) -> BackendLogFilter | None:
        """Start filtering; ``None`` where it cannot (no fork, stderr not fd 2, Windows)."""
        try:
            if not hasattr(os, "fork") or sys.stderr.fileno() != 2:
                return None
        except (AttributeError, ValueError, OSError):  # a replaced sys.stderr (pytest)
            return None
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(write_fd)
                os.dup2(saved, 2)
                _pump(read_fd, saved)
            finally:
                os._exit(0)
        os.close(read_fd)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        stderr = sys.stderr
        sys.stderr = open(saved, "w", buffering=1, closefd=False,  # noqa: SIM115
                          encoding=getattr(stderr, "encoding", None),
                          errors=getattr(stderr, "errors", None))
        return cls(saved, pid, stderr)

    def remove(self, timeout: float = 2.0) -> None:
        """Put file descriptor 2 back and let the filter pass on what it still holds."""
        sys.stderr.flush()
        sys.stderr = self._stderr
        os.dup2(self._saved_fd, 2)  # closes our write end of the pipe: the filter sees EOF
        os.close(self._saved_fd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a leftover subprocess may still hold the pipe
            if os.waitpid(self._pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
