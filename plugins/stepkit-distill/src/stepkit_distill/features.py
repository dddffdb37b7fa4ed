"""Intermediate layers by name, and the learnt projections of feature terms.

``extractor(net, names)`` is a functional model over ``net``'s own layers that
returns ``{OUTPUT: net's output, name: that layer's output, ...}`` in ONE
forward pass (``keras.distillation.Distiller`` runs the student twice: once for
its output, once for its features). It shares every weight with ``net``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

OUTPUT = "__output__"  # key of a network's own output among its extracted features


def _symbolic(net: Any, role: str, why: str) -> None:
    if getattr(net, "inputs", None) is None or getattr(net, "outputs", None) is None:
        raise ValueError(
            f"The {role} ({type(net).__name__} {net.name!r}) has no symbolic inputs and "
            f"outputs, so {why}. Use a Functional or Sequential {role} (start it with "
            "keras.Input), or distil only its output (layer None, no projection).")


def _output(net: Any) -> Any:
    # A Sequential's own `output` needs a call of the Sequential itself; its graph's does not.
    return net.outputs[0] if isinstance(net, keras.Sequential) else net.output


def layer_output(net: Any, role: str, name: str | None, where: str) -> Any:
    """The symbolic output of layer ``name`` of ``net`` (None: the network's output)."""
    _symbolic(net, role, f"{where} cannot find its layers by name")
    if name is None:
        return _output(net)
    try:
        return net.get_layer(name).output
    except ValueError:
        names = [layer.name for layer in net.layers]
        raise ValueError(
            f"{where}: the {role} ({net.name!r}) has no layer named {name!r}. Its layers: "
            f"{names}. Name a layer of the {role}, or None for its output.") from None


def extractor(net: Any, role: str, names: Sequence[str]) -> Any:
    """A functional model returning ``net``'s output and the outputs of layers ``names``."""
    outputs = {OUTPUT: _output(net)}
    for name in names:
        outputs[name] = layer_output(net, role, name, f"{role} feature {name!r}")
    return keras.Model(net.inputs, outputs, name=f"{net.name}_distill_features")


def check_shapes(teacher_spec: Any, student_spec: Any, projection: bool, where: str) -> None:
    """Teacher and student features must have one shape (the last axis may differ if projected)."""
    t, s = tuple(teacher_spec.shape), tuple(student_spec.shape)
    same_lead = len(t) == len(s) and all(
        a is None or b is None or a == b for a, b in zip(t[1:-1], s[1:-1], strict=True))
    same_last = t[-1] is None or s[-1] is None or t[-1] == s[-1]
    if same_lead and (projection or same_last):
        if projection and (t[-1] is None or s[-1] is None):
            raise ValueError(f"{where}: a projection needs known feature widths (last axis). "
                             f"Received teacher shape {t}, student shape {s}.")
        return
    fix = ("Set projection=True to learn a map from the student's width to the teacher's, or "
           "pick" if same_lead else "Pick")
    raise ValueError(f"{where}: the teacher's features have shape {t} and the student's {s}; "
                     f"they must match. {fix} layers whose outputs match.")


def add_projection(ctx: Any, index: int, d_student: int, d_teacher: int) -> tuple[Any, Any]:
    """A kernel and bias mapping ``d_student`` features to ``d_teacher``, saved with the model.

    They are trainable weights of the model (not of the student network), trained
    by the student's optimizer.
    """
    kernel = ctx.model.add_weight(name=f"distill_projection_{index}_kernel",
                                  shape=(d_student, d_teacher), initializer="glorot_uniform",
                                  trainable=True)
    bias = ctx.model.add_weight(name=f"distill_projection_{index}_bias", shape=(d_teacher,),
                                initializer="zeros", trainable=True)
    return kernel, bias


def project(features: Any, projection: tuple[Any, Any] | None) -> Any:
    if projection is None:
        return features
    kernel, bias = projection
    return ops.matmul(ops.cast(features, kernel.dtype), kernel) + bias
