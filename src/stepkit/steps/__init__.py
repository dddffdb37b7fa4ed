"""stepkit's built-in steps, registered through the same hook as any plugin."""

from stepkit.hookspecs import hookimpl
from stepkit.steps.custom_loss import CustomLoss, CustomLossConfig
from stepkit.steps.gan import GAN, GANConfig
from stepkit.steps.supervised import Supervised

__all__ = ["GAN", "CustomLoss", "CustomLossConfig", "GANConfig", "Supervised"]


@hookimpl
def stepkit_register_steps(register):
    register(Supervised)
    register(CustomLoss)
    register(GAN)
