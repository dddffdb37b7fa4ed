"""``custom-loss``: any loss function from the config, tracked as ``loss``."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from stepkit import losses
from stepkit.errors import DataStructureError
from stepkit.step import Batch, Step, StepContext


def _check_loss(_inst, attribute, value) -> None:
    try:
        losses.get(value)
    except ValueError:
        raise ValueError(
            f"'{attribute.name}' must be a Keras loss name (e.g. 'mse', "
            "'binary_crossentropy'), a keras.losses.Loss or a callable (y_true, y_pred) -> "
            f"loss. Received: {value!r}"
        ) from None


@attrs.frozen
class CustomLossConfig:
    """Settings of the ``custom-loss`` step.

    Attributes:
        loss: a Keras loss name, a ``keras.losses.Loss`` or a callable
            ``(y_true, y_pred) -> loss``; per-sample losses are averaged over the
            batch (weighted by ``sample_weight`` when given).
    """

    loss: str | Callable = attrs.field(default="mse", validator=_check_loss)


class CustomLoss(Step):
    """Train a network on a loss taken from the config, not from ``compile()``.

    Example::

        model = StepModel(net, step="custom-loss", config={"loss": my_loss})
        model.compile(optimizer="adam", metrics=["mae"])
        model.fit(x, y)
    """

    name = "custom-loss"
    description = "Train one network on a loss function from the config; metrics from compile()."
    config_class = CustomLossConfig
    roles = ("network",)
    uses_compile_metrics = True
    data_kind = "labeled-images"

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._fn = losses.get(self.config.loss)

    def check_data(self, batch: Batch) -> None:
        if batch.y is None:
            raise DataStructureError(
                f"Step {self.name!r} needs targets: pass fit(x, y) or a dataset of (x, y). "
                f"Received a batch with {batch.describe()}."
            )

    def train_step(self, ctx: StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)

        def loss_fn():
            y_pred = ctx.model(x, training=True)
            return self._fn(y, y_pred, sample_weight), y_pred

        loss, y_pred = ctx.minimize("network", loss_fn)
        ctx.track("loss", loss, ctx.batch_size(x))
        ctx.update_metrics(y, y_pred, sample_weight)

    def test_step(self, ctx: StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        y_pred = ctx.model(x, training=False)
        loss = self._fn(y, y_pred, sample_weight) + ctx.regularization_loss("network")
        ctx.track("loss", loss, ctx.batch_size(x))
        ctx.update_metrics(y, y_pred, sample_weight)
