"""Named configurations of the ``gan`` step (``config={"preset": NAME}``, ``--set preset=NAME``).

A preset's values sit under the settings given with it: ``{"preset":
"recommended", "ema_decay": 0.999}`` is the recommended configuration with another
decay. ``stepkit info gan`` lists them.

- ``dcgan``: the Keras guide's DCGAN, the step's defaults.
- ``recommended``: what new users should start from: the guide's loss and
  networks, with DiffAugment translation and cutout (Zhao et al. 2020), R1
  every 16 steps (Mescheder et al. 2018; lazy as in StyleGAN2, Karras et al.
  2020) and an EMA of the generator's weights for sampling. One discriminator
  update per step, so it costs little more than ``dcgan``. On the 1,797 digits
  at 28x28 (batch 16, seed 0) its FID after 5 epochs (9.9, with the digits
  classifier's features) was below ``dcgan``'s after 15 (21.1); the hinge loss
  with a spectrally normalised discriminator did worse there (16.3 and 19.8
  after 5 epochs, with and without cutout).
- ``conditional``: ``recommended`` on ``(images, labels)`` of 10 classes, with a
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
    "rotation_weight": 0.0,
})

RECOMMENDED = MappingProxyType({
    "loss": "bce", "label_noise": 0.05, "augment": "translation,cutout",
    "r1_gamma": 0.1, "penalty_every": 16, "ema_decay": 0.99,
})

CONDITIONAL = MappingProxyType({**RECOMMENDED, "num_classes": 10, "classifier_weight": 0.3})

PRESETS = MappingProxyType({"dcgan": DCGAN, "recommended": RECOMMENDED,
                            "conditional": CONDITIONAL})
