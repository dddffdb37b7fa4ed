"""stepkit's built-in step wrappers, registered through the same hook as any plugin."""

from stepkit.hookspecs import hookimpl

__all__: list[str] = []


@hookimpl
def stepkit_register_wrappers(register):
    from stepkit.wrappers.accumulate import Accumulate
    from stepkit.wrappers.adversarial import Adversarial
    from stepkit.wrappers.ema import EMA
    from stepkit.wrappers.mixup import MixUp
    from stepkit.wrappers.sam import SAM

    register(SAM)
    register(EMA)
    register(Accumulate)
    register(Adversarial)
    register(MixUp)
