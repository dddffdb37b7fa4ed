"""Robust accuracy on the digits under PGD: plain vs adversarially trained.

Data: scikit-learn's 8x8 handwritten digits (``stepkit.data.load_digits(image_size=None)``:
1,797 images with pixels in [0, 1], flattened to 64 inputs); a seeded 20% (360 images)
is held out. Network: an MLP 64 -> 128 -> 128 -> 10 (ReLU, logits). Each
configuration trains 30 epochs with Adam(1e-3) and batches of 64 through
``StepModel(step="supervised")``:

- ``plain``: no wrapper;
- ``mixup``: ``mixup`` with alpha 0.2 (Zhang et al. 2018);
- ``fgsm-both``: ``adversarial`` with FGSM at epsilon 0.1 on clean + adversarial
  batches (Goodfellow et al. 2015);
- ``pgd``: ``adversarial`` with PGD at epsilon 0.1, 7 steps of epsilon / 4 from a
  random start (Madry et al. 2018), on adversarial batches only.

The held-out images are then attacked at the weights reached, within [0, 1]: FGSM
at epsilon 0.1 and PGD with 20 steps of 2.5 * epsilon / 20 from a random start at
epsilon 0.05, 0.1 and 0.2. Robust accuracy is the share still classified
correctly. Every figure is the mean over 3 seeds, with the lowest and highest.

    KERAS_BACKEND=tensorflow python bench/bench_robustness.py           # about 2 minutes
    python bench/bench_robustness.py --quick                            # checks it runs

writes ``bench/results_robustness.md`` (``--quick``: prints only).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import BENCH_DIR, machine

CONFIGS = {
    "plain": (None, "no wrapper"),
    "mixup": ([{"name": "mixup", "alpha": 0.2}], "mixup, alpha 0.2"),
    "fgsm-both": ([{"name": "adversarial", "method": "fgsm", "epsilon": 0.1,
                    "clip_min": 0.0, "clip_max": 1.0, "train_on": "both"}],
                  "adversarial: FGSM eps 0.1, clean + adversarial"),
    "pgd": ([{"name": "adversarial", "method": "pgd", "epsilon": 0.1, "steps": 7,
              "clip_min": 0.0, "clip_max": 1.0}],
            "adversarial: PGD eps 0.1, 7 steps of eps/4, random start (Madry)"),
}
TRAIN_EPSILON = 0.1
EVAL_EPSILONS = (0.05, 0.1, 0.2)
EVAL_STEPS = 20
COMMAND = "KERAS_BACKEND=tensorflow python bench/bench_robustness.py"


def split():
    import numpy as np

    from stepkit.data import load_digits

    x, y = load_digits(image_size=None)
    x = x.reshape(len(x), -1)
    order = np.random.default_rng(0).permutation(len(x))  # the same split for every seed
    held = order[: len(x) // 5]
    train = order[len(x) // 5:]
    return x[train], y[train], x[held], y[held]


def network(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                             keras.layers.Dense(128, activation="relu"),
                             keras.layers.Dense(10)])


def robust_accuracy(net, x, y, config, seed: int) -> float:
    """Accuracy on ``x`` attacked with ``config`` (an ``AdversarialConfig``)."""
    import keras
    import numpy as np
    from keras import ops

    from stepkit import backend
    from stepkit.wrappers.adversarial import adversarial_examples

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    seeds = keras.random.SeedGenerator(seed)
    x_t, y_t = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
    adv = adversarial_examples(
        x_t, lambda a: loss_fn(y_t, net(a, training=False)), config, backend.input_gradients,
        lambda shape, minval, maxval: keras.random.uniform(shape, minval=minval, maxval=maxval,
                                                           seed=seeds))
    assert float(ops.max(ops.abs(adv - x_t))) <= config.epsilon + 1e-6
    pred = np.argmax(ops.convert_to_numpy(net(adv, training=False)), axis=-1)
    return float(np.mean(pred == y))


def attacks():
    from stepkit.wrappers.adversarial import AdversarialConfig

    found = {"fgsm@0.1": AdversarialConfig(method="fgsm", epsilon=TRAIN_EPSILON, clip_min=0.0,
                                           clip_max=1.0)}
    for eps in EVAL_EPSILONS:
        found[f"pgd{EVAL_STEPS}@{eps}"] = AdversarialConfig(
            method="pgd", epsilon=eps, steps=EVAL_STEPS, step_size=2.5 * eps / EVAL_STEPS,
            random_start=True, clip_min=0.0, clip_max=1.0)
    return found


def run(name: str, seed: int, epochs: int) -> dict:
    import keras
    import numpy as np

    from stepkit import StepModel

    x, y, x_test, y_test = split()
    model = StepModel(network(seed), step="supervised", wrappers=CONFIGS[name][0], seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    net = model.networks["network"]
    pred = np.argmax(keras.ops.convert_to_numpy(net(x_test, training=False)), axis=-1)
    out = {"clean": float(np.mean(pred == y_test)), "train_seconds": seconds}
    for attack, config in attacks().items():
        out[attack] = robust_accuracy(net, x_test, y_test, config, seed + 1000)
    return out


def table(results: dict[str, list[dict]]) -> str:
    columns = ["clean", *attacks()]
    lines = ["| training | " + " | ".join(columns) + " | fit s |",
             "|---" * (len(columns) + 2) + "|"]
    for name, runs in results.items():
        cells = []
        for c in columns:
            values = [r[c] for r in runs]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        secs = statistics.mean(r["train_seconds"] for r in runs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch; prints the table only")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results_robustness.md")
    args = p.parse_args()
    seeds, epochs = (1, 1) if args.quick else (args.seeds, args.epochs)
    start = time.perf_counter()
    results = {name: [run(name, s, epochs) for s in range(seeds)] for name in CONFIGS}
    total = time.perf_counter() - start
    text = table(results)
    print(text)
    if args.quick:
        return
    import keras

    facts = machine()
    rows = "\n".join(f"- `{n}`: {what}" for n, (_, what) in CONFIGS.items())
    args.out.write_text(
        "# Robust accuracy on the digits (bench/bench_robustness.py)\n\n"
        f"Command: `{COMMAND}` (Keras backend {keras.backend.backend()!r}; "
        f"{seeds} seeds, {epochs} epochs; {total:.0f} s in all).\n\n"
        "Held-out accuracy of an MLP 64-128-128-10 on the 8x8 digits (360 held-out "
        "images, pixels in [0, 1]), clean and under attack at the weights reached: FGSM at "
        f"epsilon {TRAIN_EPSILON}, PGD with {EVAL_STEPS} steps of 2.5*epsilon/{EVAL_STEPS} from "
        "a random start at each epsilon (`pgd20@eps`), inputs kept in [0, 1]. Mean over seeds "
        "(lowest-highest); `fit s`: wall seconds of the 30 epochs on a shared machine.\n\n"
        f"{rows}\n\n{text}\n\n"
        f"Machine: {facts['cpu_model']}, nproc {facts['nproc']}, load average "
        f"{facts['load_average']}; TensorFlow {facts['tensorflow']}, Keras {facts['keras']}; "
        f"stepkit {facts['stepkit_commit']}.\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
