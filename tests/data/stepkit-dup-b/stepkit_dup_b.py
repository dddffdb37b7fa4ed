"""Registers a step named 'dup', like its twin package does."""

import stepkit
from stepkit_echo import Echo


class Dup(Echo):
    name = "dup"


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(Dup)
