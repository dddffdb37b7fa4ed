"""The generic samples of ``pytest --stepkit-step``: one per data kind, and why none fits."""

import pytest

import stepkit
from stepkit.testing.generic import (
    KINDS,
    NeedsNetworks,
    NoGenericSample,
    generic_case,
    generic_data,
)


class OnlyDicts(stepkit.Step):
    """Declares vectors, but its check_data takes only dict inputs: no generic sample fits."""

    name = "kit-only-dicts"
    data_kind = "vectors"

    def check_data(self, batch):
        if not isinstance(batch.x, dict):
            raise stepkit.DataStructureError(f"{self.name} takes dict inputs only.")

    def train_step(self, ctx, data):
        pass

    def test_step(self, ctx, data):
        pass


class Plugin:
    @stepkit.hookimpl
    def stepkit_register_steps(self, register):
        register(OnlyDicts)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    if OnlyDicts.name not in {i.name for i in stepkit.list_steps()}:
        stepkit.register_plugin(Plugin(), name="kit-only-dicts")


def test_one_sample_per_data_kind():
    shapes = {k: (generic_data(k)[1].shape, getattr(generic_data(k)[2], "shape", None))
              for k in KINDS}
    assert shapes == {"images": ((40, 8, 8, 1), None), "labeled-images": ((40, 8, 8, 1), (40,)),
                      "vectors": ((40, 5), (40, 1))}
    labels = generic_data("labeled-images")[2]
    assert labels.dtype == "int32" and set(labels.tolist()) <= set(range(10))


def test_a_step_gets_the_sample_of_its_declared_kind():
    case = generic_case("gan")  # data_kind "images"; predict_x like its call_spec: latent vectors
    assert case["kind"] == "images" and case["sample"].y is None
    assert case["sample"].predict_x.shape == (8, 128)


def test_a_step_without_default_networks_needs_networks():
    with pytest.raises(NeedsNetworks, match=r"step 'supervised' needs networks: .*"
                                            r"data_kind='labeled-images'.*pass networks="):
        generic_case("supervised")


def test_a_step_that_refuses_every_sample_says_so_not_that_it_needs_networks():
    with pytest.raises(NoGenericSample) as err:
        generic_case(OnlyDicts.name)
    assert not isinstance(err.value, NeedsNetworks)
    message = str(err.value)
    assert "accepts none of the kit's generic samples (it declares data_kind='vectors')" in message
    assert "(x, y) vectors: check_data refused it (kit-only-dicts takes dict inputs only.)" \
        in message
    assert "images" not in message  # only the declared kind was tried
