"""Two steps from one module, which two entry points (one per step) name."""

from stepkit_echo import Echo

import stepkit


class TwinA(Echo):
    name = "twin-a"
    description = "The first of two steps from one module (a test plugin)."


class TwinB(Echo):
    name = "twin-b"
    description = "The second of two steps from one module (a test plugin)."


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(TwinA)
    register(TwinB)
