"""``custom-loss``: any loss function from the config, tracked as ``loss``."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import keras
from keras import ops

from stepkit.errors import DataStructureError
from stepkit.step import Batch, Step, StepContext, _unscale


def _check_loss(_inst, attribute, value) -> None:
    if isinstance(value, str):
        try:
            keras.losses.get(value)
        except (ValueError, TypeError):
            raise ValueError(
                f"'{attribute.name}' must be a Keras loss name (e.g. 'mse', "
                f"'binary_crossentropy') or a callable (y_true, y_pred) -> loss. "
                f"Received: {value!r}"
            ) from None
    elif not callable(value):
        raise ValueError(
            f"'{attribute.name}' must be a Keras loss name or a callable "
            f"(y_true, y_pred) -> loss. Received: {value!r}"
        )


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
        loss = self.config.loss
        self._fn = keras.losses.get(loss) if isinstance(loss, str) else loss

    def check_data(self, batch: Batch) -> None:
        if batch.y is None:
            raise DataStructureError(
                f"Step {self.name!r} needs targets: pass fit(x, y) or a dataset of (x, y). "
                f"Received a batch with {batch.describe()}."
            )

    def _loss(self, ctx: StepContext, y, y_pred, sample_weight):
        fn = self._fn
        if isinstance(fn, keras.losses.Loss):  # reduces and scales for replicas itself
            value = _unscale(fn(y, y_pred, sample_weight=sample_weight))
        else:
            value = ops.convert_to_tensor(fn(y, y_pred))
            if len(value.shape) == 0:
                if sample_weight is not None:
                    raise DataStructureError(
                        f"The custom-loss function {fn!r} returns a scalar, so sample weights "
                        "cannot be applied. Return per-sample losses, or drop sample_weight."
                    )
            else:
                per_sample = ops.reshape(value, (ops.shape(value)[0], -1))
                per_sample = ops.mean(per_sample, axis=1)
                if sample_weight is not None:
                    per_sample = per_sample * ops.cast(ops.reshape(sample_weight, (-1,)),
                                                       per_sample.dtype)
                value = ops.mean(per_sample)
        return value + ops.cast(ctx.regularization_loss("network"), value.dtype)

    def train_step(self, ctx: StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)

        def loss_fn():
            y_pred = ctx.model(x, training=True)
            return self._loss(ctx, y, y_pred, sample_weight), y_pred

        loss, y_pred = ctx.minimize("network", loss_fn)
        ctx.track("loss", loss, ctx.batch_size(x))
        ctx.update_metrics(y, y_pred, sample_weight)

    def test_step(self, ctx: StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        y_pred = ctx.model(x, training=False)
        ctx.track("loss", self._loss(ctx, y, y_pred, sample_weight), ctx.batch_size(x))
        ctx.update_metrics(y, y_pred, sample_weight)
