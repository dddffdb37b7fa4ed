"""stepkit's built-in step wrappers, registered through the same hook as any plugin."""

from stepkit.hookspecs import hookimpl


@hookimpl
def stepkit_register_wrappers(register):
    del register  # the built-in wrappers are registered here
