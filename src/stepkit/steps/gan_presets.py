"""Named configurations of the ``gan`` step (``config={"preset": NAME}``, ``--set preset=NAME``).

A preset's values sit under the settings given with it: ``{"preset":
"recommended", "ema_decay": 0.999}`` is the recommended configuration with another
decay. ``stepkit info gan`` lists them.

- ``dcgan``: the Keras guide's DCGAN, the step's defaults.
- ``recommended``: what new users should start from: the guide's loss and
  networks, with DiffAugment translation and cutout (Zhao et al. 2020), R1
  every 16 steps (Mescheder et al. 2018; lazy as in StyleGAN2, Karras et al.
  2020), an EMA of the generator's weights for sampling, and Adam's beta_1 at
  DCGAN's 0.5 (Radford et al. 2016) instead of Keras' 0.9. One discriminator
  update per step, so it costs little more than ``dcgan``. On the 1,797 digits
  at 28x28 (batch 16, seed 1, the digits classifier's features) beta_1 0.5 took
  the FID after 10 epochs from 11.7 to 4.4; the hinge loss with a spectrally
  normalised discriminator, translation alone, colour augmentation and SS-GAN's
  rotation task (``rotation_weight``) did worse, R1 with gamma 1 no better
  (``docs/benchmarks.md``).
- ``conditional``: ``recommended`` with the guide's beta_1 of 0.9 (the setting it
  was measured with) on ``(images, labels)`` of 10 classes, with a
  projection discriminator (Miyato and Koyama 2018) and an auxiliary
  classifier (AC-GAN, Odena et al. 2017; ``classifier_weight=0.3``) on the
  discriminator's flattened feature map; sample grids show one class per row.
  On the digits benchmark (15 epochs, 3 seeds) the requested class was
  recognised in 100% of samples; each class comes in few styles (intra-class
  FID about 9, against 0.9 between two halves of the real images). Without the
  classifier it collapsed to one image (16.9% recognised): the guide's
  max-pooled features do not tell the digits apart
  (``bench/bench_gan_quality.py``).
"""

from __future__ import annotations

from types import MappingProxyType

DCGAN = MappingProxyType({
    "loss": "bce", "label_noise": 0.05, "label_smoothing": 0.0, "n_dis": 1,
    "r1_gamma": 0.0, "r2_gamma": 0.0, "gp_lambda": 0.0, "penalty_every": 1, "augment": "",
    "ema_decay": None, "num_classes": None, "classifier_weight": 0.0,
    "rotation_weight": 0.0, "adam_beta_1": 0.9,
})

RECOMMENDED = MappingProxyType({
    "loss": "bce", "label_noise": 0.05, "augment": "translation,cutout",
    "r1_gamma": 0.1, "penalty_every": 16, "ema_decay": 0.99, "adam_beta_1": 0.5,
})

# Measured (bench/bench_gan_quality.py) with the guide's beta_1 of 0.9, before
# recommended moved to 0.5; it keeps 0.9 until it is measured with 0.5.
CONDITIONAL = MappingProxyType({**RECOMMENDED, "adam_beta_1": 0.9, "num_classes": 10,
                                "classifier_weight": 0.3})

PRESETS = MappingProxyType({"dcgan": DCGAN, "recommended": RECOMMENDED,
                            "conditional": CONDITIONAL})
