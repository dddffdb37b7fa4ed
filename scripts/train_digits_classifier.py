"""Train the digits classifier that ``stepkit.metrics`` ships, and record its held-out accuracy.

Trains ``stepkit.metrics.digits.digits_classifier_network()`` on scikit-learn's
handwritten digits as ``stepkit.data.load_digits()`` returns them (1,797 images,
28x28x1 in [0, 1]). A seeded 20% of the images is held out (``held_out_split``);
the accuracy on it is printed and written to ``digits_classifier.json`` next to
the weights. Small random shifts and zooms during training make the classifier
less sensitive to where a generated digit sits.

Run from the repository root (TensorFlow backend, CPU, about a minute)::

    KERAS_BACKEND=tensorflow python scripts/train_digits_classifier.py

``--out DIR`` writes both files elsewhere (default: the package folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEED = 0
HELD_OUT_FRACTION = 0.2
EPOCHS = 80
BATCH_SIZE = 32
LEARNING_RATE = 2e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the weights and the record (default: the package's)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()

    import keras
    import numpy as np
    from keras import layers

    from stepkit.data import load_digits
    from stepkit.metrics import digits

    keras.utils.set_random_seed(SEED)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    x, y = load_digits()
    train, held = digits.held_out_split(len(x), HELD_OUT_FRACTION, SEED)

    net = digits.digits_classifier_network()
    inputs = keras.Input(shape=digits.IMAGE_SHAPE)
    augmented = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=SEED)(inputs)
    augmented = layers.RandomZoom(0.1, fill_mode="constant", seed=SEED + 1)(augmented)
    trainer = keras.Model(inputs, net(augmented)[1])
    steps = args.epochs * -(-len(train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    trainer.compile(optimizer=keras.optimizers.Adam(schedule),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    trainer.fit(x[train], y[train], epochs=args.epochs, batch_size=BATCH_SIZE, verbose=2,
                shuffle=True)

    logits = net.predict(x[held], verbose=0)[1]
    accuracy = float(np.mean(logits.argmax(-1) == y[held]))
    train_accuracy = float(np.mean(net.predict(x[train], verbose=0)[1].argmax(-1) == y[train]))
    out = args.out or digits.HERE
    out.mkdir(parents=True, exist_ok=True)
    weights = out / digits.WEIGHTS_PATH.name
    net.save_weights(weights)
    record = {
        "held_out_accuracy": round(accuracy, 4),
        "train_accuracy": round(train_accuracy, 4),
        "held_out": {"fraction": HELD_OUT_FRACTION, "seed": SEED, "samples": int(len(held)),
                     "rule": "stepkit.metrics.digits.held_out_split(1797, fraction, seed)"},
        "data": "stepkit.data.load_digits() (scikit-learn digits, 28x28x1 in [0, 1])",
        "epochs": args.epochs, "batch_size": BATCH_SIZE,
        "optimizer": f"Adam, cosine decay from {LEARNING_RATE}",
        "augmentation": "RandomTranslation(0.1, 0.1), RandomZoom(0.1)",
        "trained_with": {"keras": keras.__version__, "backend": keras.backend.backend(),
                         "python": platform.python_version()},
        "weights_bytes": weights.stat().st_size,
    }
    (out / digits.RECORD_PATH.name).write_text(json.dumps(record, indent=1) + "\n")
    print(f"held-out accuracy {accuracy:.4f} on {len(held)} images "
          f"(train {train_accuracy:.4f}); wrote {weights} ({weights.stat().st_size} bytes) "
          f"and {out / digits.RECORD_PATH.name}")


if __name__ == "__main__":
    main()
