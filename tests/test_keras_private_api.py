"""The private Keras API stepkit uses, pinned: a Keras upgrade that changes it fails here first.

Each import below is used by stepkit because no public API does the same:
- ``compile_utils.MetricsList``: monitoring callbacks read metric directions
  only from such lists (stepkit.trackers);
- ``serialization_lib.SerializableDict`` / ``deserialize_keras_object``: the
  compile config with one optimizer per role (stepkit.compiling);
- ``Trainer._symbolic_build``: builds compile metrics and losses from a
  symbolic batch (stepkit.model); ``Trainer`` itself: ``model.metrics`` skips
  the metrics of nested trainers, which stepkit adds back (stepkit.trackers);
- ``seed_generator.make_default_seed``: an unseeded model's seed (stepkit.rng);
- ``optimizer._learning_rate``: tells a scheduled learning rate from a fixed one
  (stepkit.learning_rates).
"""

import keras
import numpy as np
from keras import ops
from keras.src.callbacks.monitor_callback import MonitorCallback
from keras.src.random.seed_generator import make_default_seed
from keras.src.saving import serialization_lib
from keras.src.trainers.compile_utils import MetricsList
from keras.src.trainers.trainer import Trainer


def test_monitor_callbacks_read_directions_from_metrics_lists():
    class Holder(keras.Model):
        def __init__(self):
            super().__init__()
            score = keras.metrics.Mean(name="score")
            score._direction = "up"
            self.tracked = MetricsList([score], name="tracked")

        @property
        def metrics(self):
            return [self.tracked]

    callback = MonitorCallback(monitor="val_score")
    callback.set_model(Holder())
    callback._set_monitor_op()
    assert callback.monitor_op is ops.greater


def test_serializable_dict_round_trips_a_dict_of_optimizers():
    config = serialization_lib.SerializableDict(optimizer={"a": keras.optimizers.SGD(0.5)})
    back = serialization_lib.deserialize_keras_object(config.serialize())
    assert float(back["optimizer"]["a"].learning_rate) == 0.5


def test_symbolic_build_builds_compile_metrics_from_a_symbolic_batch():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(loss="mse", metrics=["mae"])
    assert not model._compile_metrics.built
    x, y = keras.KerasTensor((None, 3)), keras.KerasTensor((None, 1))
    Trainer._symbolic_build(model, data_batch=(x, y, None))
    assert model._compile_metrics.built and model._compile_loss.built


def test_model_metrics_skip_the_metrics_of_a_nested_trainer():
    class WithMetric(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)
            self.own = keras.metrics.Mean(name="own")

        def call(self, x):
            return self.dense(x)

    inner = WithMetric()
    assert isinstance(inner, Trainer)
    outer = keras.Sequential([keras.Input((2,)), inner])
    assert inner.own in inner.metrics and inner.own not in outer.metrics


def test_make_default_seed_is_an_int():
    assert isinstance(make_default_seed(), int | np.integer)


def test_an_optimizer_keeps_its_schedule_in_learning_rate_underscore():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    optimizer = keras.optimizers.Adam(schedule)
    assert optimizer._learning_rate is schedule
    assert not isinstance(optimizer.learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    wrapped = keras.optimizers.LossScaleOptimizer(optimizer)
    assert wrapped.inner_optimizer._learning_rate is schedule
