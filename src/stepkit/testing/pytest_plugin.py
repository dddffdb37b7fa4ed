"""pytest plugin of the stepkit conformance kit (entry point ``pytest11: stepkit``).

It offers the ``stepkit_conformance`` fixture: :func:`stepkit.testing.run_conformance`,
with Keras' global dtype policy restored after the test. Importing this module
does not import TensorFlow; the checks import it when they run.

Example::

    def test_my_step(stepkit_conformance):
        stepkit_conformance("my-step", sample=(x, y), checks=["fit", "save_load"])
"""

from __future__ import annotations

import pytest


@pytest.fixture
def stepkit_conformance():
    """:func:`stepkit.testing.run_conformance`; restores the global dtype policy afterwards."""
    from stepkit.testing import run_conformance

    yield run_conformance
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_global_policy("float32")
