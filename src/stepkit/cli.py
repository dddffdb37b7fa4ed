"""The ``stepkit`` command line."""


def main(argv=None) -> int:  # replaced by the real CLI
    raise SystemExit("stepkit: the command line is not written yet")
