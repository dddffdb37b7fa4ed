"""Sample-quality metrics for generative steps: FID, KID, class recognition; all offline.

- :class:`FrechetDistance` (FID, Heusel et al. 2017) and :class:`KernelDistance`
  (KID, Bińkowski et al. 2018): Keras metrics with ``update_state(real, generated)``
  on the features of a feature extractor;
- :class:`SampleQuality`: a callback that logs ``fid``, ``kid`` (and, for a
  conditional step, ``class_recognition``) after each epoch;
- feature extractors: the small digits classifier shipped with stepkit
  (:class:`DigitsClassifier`, :func:`digits_features`) and InceptionV3
  (:func:`inception_features`, only from weights already on disk);
- :func:`class_recognition_rate` and :func:`distinct_classes` (mode collapse);
  :func:`intra_class_frechet_distance` (intra-FID: collapse within a class).

Example::

    from stepkit.metrics import FrechetDistance, SampleQuality

    fid = FrechetDistance(feature_extractor="digits")
    fid.update_state(real_images, generated_images)
    float(fid.result())
    model.fit(images, epochs=10, callbacks=[SampleQuality(images)])
"""

from stepkit.metrics.callback import METRICS, SampleQuality
from stepkit.metrics.digits import DigitsClassifier
from stepkit.metrics.features import (
    InceptionFeatures,
    MissingWeightsError,
    digits_features,
    get_feature_extractor,
    inception_features,
)
from stepkit.metrics.frechet import (
    FrechetDistance,
    feature_statistics,
    frechet_distance,
    intra_class_frechet_distance,
)
from stepkit.metrics.kernel import KernelDistance, kernel_distance, mmd2_unbiased
from stepkit.metrics.recognition import (
    class_recognition_rate,
    distinct_classes,
    recognised_classes,
    requested_labels,
)

__all__ = [
    "METRICS",
    "DigitsClassifier",
    "FrechetDistance",
    "InceptionFeatures",
    "KernelDistance",
    "MissingWeightsError",
    "SampleQuality",
    "class_recognition_rate",
    "digits_features",
    "distinct_classes",
    "feature_statistics",
    "frechet_distance",
    "get_feature_extractor",
    "inception_features",
    "intra_class_frechet_distance",
    "kernel_distance",
    "mmd2_unbiased",
    "recognised_classes",
    "requested_labels",
]
