"""``distill``: knowledge distillation from a frozen teacher, as a stepkit step.

Hinton et al. 2015, as in keras.io's "Knowledge Distillation" example and
``keras.distillation.Distiller``: the student learns
``alpha * student_loss + (1 - alpha) * distillation_loss``, where the student
loss is the ``compile(loss=...)`` loss on the labels and the distillation loss
is a weighted sum of terms: logits terms (a divergence between the softened
outputs ``softmax(logits / T)``, times ``T ** 2``) and feature terms (a distance
between intermediate layers of the teacher and the student, picked by name,
with an optional learnt projection). The teacher is never updated: it has no
optimizer, and its regularisation losses are in no loss.

Example::

    import stepkit

    model = stepkit.StepModel({"student": student, "teacher": teacher}, step="distill",
                              config={"alpha": 0.1, "temperature": 10.0})
    model.compile(optimizer="adam", metrics=["sparse_categorical_accuracy"])
    model.fit(x, y, epochs=3)
    logits = model.predict(x)           # the student's output
"""

from __future__ import annotations

import keras
import stepkit
from keras import ops

from stepkit_distill.config import (
    DIVERGENCES,
    FEATURE_LOSSES,
    DistillConfig,
    FeatureDistillation,
    LogitsDistillation,
)
from stepkit_distill.features import (
    OUTPUT,
    add_projection,
    check_shapes,
    extractor,
    layer_output,
    project,
)
from stepkit_distill.losses import feature_loss, logits_loss

__all__ = ["DIVERGENCES", "FEATURE_LOSSES", "Distill", "DistillConfig", "FeatureDistillation",
           "LogitsDistillation"]
__version__ = "0.1.0"


class Distill(stepkit.Step):
    """Distil a frozen ``teacher`` into a trained ``student``; both output logits.

    Data is ``(x, y[, sample_weight])``. ``compile(loss=...)`` is the student's
    loss on the labels (default: sparse categorical cross-entropy from logits);
    ``compile(metrics=...)`` are measured on the student's output, and
    ``model(x)`` / ``predict(x)`` give the student's output. Only the student has
    an optimizer: ``compile(optimizer={"teacher": ...})`` is an error. Feature
    terms name layers, so they need Functional or Sequential networks.

    Example::

        model = StepModel({"student": student, "teacher": teacher}, step="distill")
        model.compile(optimizer="adam", metrics=["sparse_categorical_accuracy"])
        model.fit(x, y, epochs=3)
    """

    name = "distill"
    description = "Knowledge distillation: a frozen teacher's outputs and features train a student."
    config_class = DistillConfig
    roles = ("student", "teacher")
    optimizer_roles = ("student",)
    tracked = ("loss", "student_loss", "distillation_loss")
    data_kind = "labeled-images"
    loss_kind = "keras"
    uses_compile_metrics = True

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._extractors: dict[str, keras.Model] = {}
        self._projections: list = []

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

    def build_state(self, ctx: stepkit.StepContext) -> None:
        """Feature extractors over the named layers, and the projections' weights."""
        features = self.config.features
        for role, attr in (("student", "student_layer"), ("teacher", "teacher_layer")):
            names = list(dict.fromkeys(getattr(f, attr) for f in features))
            if any(n is not None for n in names):
                net = ctx.networks[role]
                self._extractors[role] = extractor(net, role, [n for n in names if n])
        self._projections = []
        for i, term in enumerate(features):
            where = f"features[{i}]"
            if not term.projection and term.teacher_layer is term.student_layer is None:
                self._projections.append(None)  # outputs only: any network, checked by the loss
                continue
            t = layer_output(ctx.networks["teacher"], "teacher", term.teacher_layer, where)
            s = layer_output(ctx.networks["student"], "student", term.student_layer, where)
            check_shapes(t, s, term.projection, where)
            self._projections.append(
                add_projection(ctx, i, s.shape[-1], t.shape[-1]) if term.projection else None)

    def trainable_variables(self, ctx: stepkit.StepContext, role: str):
        student = list(ctx.networks["student"].trainable_variables)
        if not student:  # a frozen student: nothing to train
            return []
        return student + [w for p in self._projections if p is not None for w in p]

    def _features(self, ctx, role: str, x, training: bool):
        net = self._extractors.get(role)
        if net is not None:
            return net(x, training=training)
        if role == "student":
            return {OUTPUT: ctx.model(x, training=training)}
        return {OUTPUT: ctx.networks[role](x, training=training)}

    def _losses(self, ctx, x, y, sample_weight, training):
        teacher = self._features(ctx, "teacher", x, training=False)
        student = self._features(ctx, "student", x, training=training)
        y_pred = student[OUTPUT]
        student_loss = ctx.compute_loss(x, y, y_pred, sample_weight, training=training)
        terms = [weight * logits_loss(teacher[OUTPUT], y_pred, temperature, divergence,
                                      sample_weight)
                 for weight, temperature, divergence in self.config.logits_terms()]
        for term, projection in zip(self.config.features, self._projections, strict=True):
            t = teacher[term.teacher_layer or OUTPUT]
            s = project(student[term.student_layer or OUTPUT], projection)
            terms.append(term.weight * feature_loss(t, s, term.loss, sample_weight))
        distillation_loss = terms[0] if terms else ops.zeros(())
        for value in terms[1:]:
            distillation_loss = distillation_loss + value
        a = self.config.alpha
        loss = a * ops.cast(student_loss, "float32") + (1.0 - a) * distillation_loss
        return loss, student_loss, distillation_loss, y_pred

    def train_step(self, ctx: stepkit.StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        # minimize adds the student's regularisation losses (at full strength) to `loss`.
        loss, student_loss, distillation_loss, y_pred = ctx.minimize(
            "student", lambda: self._losses(ctx, x, y, sample_weight, training=True))
        self._report(ctx, x, y, sample_weight, y_pred, loss, student_loss, distillation_loss)

    def test_step(self, ctx: stepkit.StepContext, data) -> None:
        x, y, sample_weight = ctx.unpack(data)
        loss, student_loss, distillation_loss, y_pred = self._losses(
            ctx, x, y, sample_weight, training=False)
        loss = loss + ops.cast(ctx.regularization_loss("student"), loss.dtype)  # as Keras reports
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
