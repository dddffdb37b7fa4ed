"""``distill``: knowledge distillation from a frozen teacher, as a stepkit step.

The step of keras.io's "Knowledge Distillation" example (Hinton et al. 2015):
the student learns ``alpha * student_loss + (1 - alpha) * distillation_loss``,
where the student loss is the ``compile(loss=...)`` loss on the labels and the
distillation loss is the KL divergence between the teacher's and the student's
softened outputs ``softmax(logits / temperature)``, times ``temperature ** 2``.
The teacher is never updated: it has no optimizer.

Example::

    import stepkit

    model = stepkit.StepModel({"student": student, "teacher": teacher}, step="distill",
                              config={"alpha": 0.1, "temperature": 10.0})
    model.compile(optimizer="adam", metrics=["sparse_categorical_accuracy"])
    model.fit(x, y, epochs=3)
    logits = model.predict(x)           # the student's output
"""

from __future__ import annotations

import attrs
import keras
import stepkit
from attrs import validators as v
from keras import ops

__all__ = ["Distill", "DistillConfig"]
__version__ = "0.1.0"


@attrs.frozen
class DistillConfig:
    """Settings of the ``distill`` step (defaults of the keras.io example).

    Attributes:
        alpha: weight of the student loss; ``1 - alpha`` weighs the distillation loss.
        temperature: softens both networks' outputs before comparing them.

    Example::

        StepModel(nets, step="distill", config={"alpha": 0.1, "temperature": 10.0})
    """

    alpha: float = attrs.field(default=0.1, converter=float,
                               validator=[v.ge(0.0), v.le(1.0)])
    temperature: float = attrs.field(default=10.0, converter=float, validator=v.gt(0.0))


class Distill(stepkit.Step):
    """Distil a frozen ``teacher`` into a trained ``student``; both output logits.

    Data is ``(x, y[, sample_weight])``. ``compile(loss=...)`` is the student's
    loss on the labels (default: sparse categorical cross-entropy from logits);
    ``compile(metrics=...)`` are measured on the student's output, and
    ``model(x)`` / ``predict(x)`` give the student's output. Only the student has
    an optimizer: ``compile(optimizer={"teacher": ...})`` is an error.

    Example::

        model = StepModel({"student": student, "teacher": teacher}, step="distill")
        model.compile(optimizer="adam", metrics=["sparse_categorical_accuracy"])
        model.fit(x, y, epochs=3)
    """

    name = "distill"
    description = "Knowledge distillation: a frozen teacher's softened outputs train a student."
    config_class = DistillConfig
    roles = ("student", "teacher")
    optimizer_roles = ("student",)
    tracked = ("loss", "student_loss", "distillation_loss")
    data_kind = "labeled-images"
    loss_kind = "keras"
    uses_compile_metrics = True

    def default_optimizers(self):
        return {"student": keras.optimizers.Adam()}

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def check_data(self, batch: stepkit.Batch) -> None:
        if batch.y is None:
            raise stepkit.DataStructureError(
                f"Step {self.name!r} needs labels: pass fit(x, y) or a dataset of (x, y). "
                f"Received a batch with {batch.describe()}."
            )

    def build(self, ctx: stepkit.StepContext, batch: stepkit.Batch) -> None:
        for role in self.roles:
            ctx.build_network(role, batch.x)

    def _losses(self, ctx, x, y, sample_weight, training):
        t = self.config.temperature
        teacher_logits = ops.cast(ctx.networks["teacher"](x, training=False), "float32")
        y_pred = ctx.model(x, training=training)
        student_loss = ctx.compute_loss(x, y, y_pred, sample_weight, training=training)
        per_sample = keras.losses.kl_divergence(
            ops.softmax(teacher_logits / t, axis=-1),
            ops.softmax(ops.cast(y_pred, "float32") / t, axis=-1),
        )
        if sample_weight is not None:
            per_sample = per_sample * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        distillation_loss = ops.mean(per_sample) * (t ** 2)
        a = self.config.alpha
        loss = a * ops.cast(student_loss, "float32") + (1.0 - a) * distillation_loss
        return loss, student_loss, distillation_loss, y_pred

    def train_step(self, ctx: stepkit.StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        loss, student_loss, distillation_loss, y_pred = ctx.minimize(
            "student", lambda: self._losses(ctx, x, y, sample_weight, training=True))
        self._report(ctx, x, y, sample_weight, y_pred, loss, student_loss, distillation_loss)

    def test_step(self, ctx: stepkit.StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        loss, student_loss, distillation_loss, y_pred = self._losses(
            ctx, x, y, sample_weight, training=False)
        self._report(ctx, x, y, sample_weight, y_pred, loss, student_loss, distillation_loss)

    @staticmethod
    def _report(ctx, x, y, sample_weight, y_pred, loss, student_loss, distillation_loss):
        n = ctx.batch_size(x)
        ctx.track("loss", loss, n)
        ctx.track("student_loss", student_loss, n)
        ctx.track("distillation_loss", distillation_loss, n)
        ctx.update_metrics(y, y_pred, sample_weight)


@stepkit.hookimpl
def stepkit_register_steps(register):
    register(Distill)
