"""Registers a step named 'dup', like its twin package does."""

from stepkit_echo import Echo

import stepkit


class Dup(Echo):
    name = "dup"


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(Dup)
