"""A tiny third-party step: mean absolute error, one network."""

import attrs
from keras import ops

import stepkit


@attrs.frozen
class EchoConfig:
    scale: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))


class Echo(stepkit.Step):
    name = "echo"
    description = "Mean absolute error, scaled (a test plugin)."
    config_class = EchoConfig

    def train_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        net = ctx.networks["network"]
        loss = ctx.minimize(
            "network", lambda: self.config.scale * ops.mean(ops.abs(net(x, training=True) - y)))
        ctx.track("loss", loss, ctx.batch_size(x))

    def test_step(self, ctx, data):
        x, y, _ = ctx.unpack(data)
        pred = ctx.networks["network"](x, training=False)
        ctx.track("loss", self.config.scale * ops.mean(ops.abs(pred - y)), ctx.batch_size(x))


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(Echo)
