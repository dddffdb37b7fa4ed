"""``supervised``: what ``keras.Model.fit`` does, as a step."""

from __future__ import annotations

from stepkit.step import Step, StepContext


class Supervised(Step):
    """Keras' own training step: the compiled loss and metrics on ``(x, y[, sample_weight])``.

    Example::

        model = StepModel(net, step="supervised")
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        model.fit(x, y, epochs=5)
    """

    name = "supervised"
    description = "Keras' own fit(): compiled loss and metrics on (x, y[, sample_weight])."
    roles = ("network",)
    loss_kind = "keras"
    uses_compile_metrics = True
    data_kind = "labeled-images"

    def train_step(self, ctx: StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)

        def loss_fn():
            y_pred = ctx.model(x, training=True)
            return ctx.compute_loss(x, y, y_pred, sample_weight, training=True), y_pred

        loss, y_pred = ctx.minimize("network", loss_fn)
        ctx.track("loss", loss, ctx.batch_size(x))
        ctx.update_metrics(y, y_pred, sample_weight)

    def test_step(self, ctx: StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        y_pred = ctx.model(x, training=False)
        loss = ctx.compute_loss(x, y, y_pred, sample_weight, training=False)
        loss = loss + ctx.regularization_loss("network")
        ctx.track("loss", loss, ctx.batch_size(x))
        ctx.update_metrics(y, y_pred, sample_weight)
