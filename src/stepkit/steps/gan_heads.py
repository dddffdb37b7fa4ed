"""Auxiliary heads of the ``gan`` step's discriminator.

- ``classes``: an auxiliary classifier (AC-GAN, Odena et al. 2017,
  "Conditional Image Synthesis with Auxiliary Classifier GANs"), on with
  ``classifier_weight`` (needs ``num_classes``);
- ``rotation``: the self-supervised rotation task of SS-GAN (Chen et al. 2019,
  "Self-Supervised GANs via Auxiliary Rotation Loss"), on with
  ``rotation_weight``: the discriminator learns by how many quarter turns a real
  image was rotated, and the generator is trained to make images whose rotation
  it recognises.

With any head on, the discriminator returns a dict: ``{"logit": (batch, 1)}``
plus ``"classes": (batch, num_classes)`` and/or ``"rotation": (batch, 4)``.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from stepkit.errors import DataStructureError
from stepkit.steps.gan_losses import classification_loss

TURNS = 4  # rotations by 0, 90, 180 and 270 degrees
# head -> (the config field that turns it on, the method it comes from)
WEIGHTS = {"classes": ("classifier_weight", "AC-GAN"), "rotation": ("rotation_weight", "SS-GAN")}


def wanted_heads(config: Any) -> tuple[str, ...]:
    """The heads ``config`` turns on, in the order ('classes', 'rotation')."""
    return tuple(head for head, (field, _) in WEIGHTS.items() if getattr(config, field))


def split_output(step: str, config: Any, out: Any) -> tuple[Any, dict[str, Any]]:
    """The discriminator's output -> (logits, {head: logits}); refuses a missing head."""
    heads = wanted_heads(config)
    if not heads:
        return out, {}
    if not isinstance(out, dict) or set(out) != {"logit", *heads}:
        got = (f"a dict with keys {sorted(out)}" if isinstance(out, dict)
               else f"one tensor of shape {tuple(out.shape)}" if hasattr(out, "shape")
               else type(out).__name__)
        shapes = {"classes": "(batch, num_classes)", "rotation": f"(batch, {TURNS})"}
        wanted = ", ".join(f"{h!r}: {shapes[h]}" for h in heads)
        fields = [WEIGHTS[h][0] for h in heads]
        settings = " and ".join(f"{field}={getattr(config, field)} ({WEIGHTS[h][1]})"
                                for h, field in zip(heads, fields, strict=True))
        raise DataStructureError(
            f"Step {step!r} with {settings} needs a discriminator that returns "
            f"{{'logit': (batch, 1), {wanted}}}. Received: {got}. Give the discriminator "
            f"those heads, use the default networks, or set "
            f"{' and '.join(f + '=0' for f in fields)}.")
    return out["logit"], {head: out[head] for head in heads}


def turns_for(n: Any) -> Any:
    """Quarter turns for a batch of ``n`` images: image i turns i mod 4 times, so each
    rotation gets a quarter of the batch (whose order is random). int32, ``(n,)``."""
    return ops.mod(ops.arange(n, dtype="int32"), TURNS)


def rotate(images: Any, turns: Any) -> Any:
    """Each image of ``(batch, height, width, channels)`` (square, channels last) turned
    counter-clockwise by ``turns[i]`` quarter turns."""
    every = ops.stack([ops.rot90(images, k=k, axes=(1, 2)) for k in range(TURNS)], axis=1)
    pick = ops.reshape(ops.one_hot(turns, TURNS, dtype=images.dtype), (-1, TURNS, 1, 1, 1))
    return ops.sum(every * pick, axis=1)


def add_head_losses(config: Any, loss: Any, heads: dict[str, Any], labels: Any, turns: Any,
                    classified: slice, rotated_from: Any) -> Any:
    """``loss`` plus each head's weighted cross-entropy: the class logits of rows
    ``classified`` against ``labels`` (times ``classifier_weight``), the rotation
    logits from row ``rotated_from`` on against ``turns`` (times ``rotation_weight``)."""
    if "classes" in heads:
        term = config.classifier_weight * classification_loss(labels,
                                                              heads["classes"][classified])
        loss = loss + ops.cast(term, loss.dtype)
    if "rotation" in heads:
        term = config.rotation_weight * classification_loss(turns,
                                                            heads["rotation"][rotated_from:])
        loss = loss + ops.cast(term, loss.dtype)
    return loss
