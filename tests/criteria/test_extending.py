"""A criterion is one registered function: the README's worked example, registered from here."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import build_hf, save_hf

import gardener
from gardener import criteria
from gardener.blocks import block_tensors, select_stack
from gardener.criteria import _registry


@pytest.fixture
def max_abs():
    @criteria.register("max_abs", removes="lowest")
    def max_abs(values, ctx) -> float:
        """Largest |w| of the block."""
        return float(max(np.abs(chunk).max() for chunk in values.float_chunks()))

    yield max_abs
    _registry._REGISTRY.pop("max_abs")


def test_a_registered_criterion_scores_and_orders_blocks(tmp_path, max_abs):
    path = save_hf(build_hf("vit"), tmp_path / "vit")
    result = gardener.score(path, "max_abs,l1", primary="max_abs")
    ckpt = gardener.open_checkpoint(path)
    expected = [max(float(np.abs(ckpt.read(n).astype(np.float64)).max()) for n in block_tensors(ckpt, b))
                for b in select_stack(ckpt).blocks]  # by hand: the 2-D weight matrices of each block
    assert result.scores["max_abs"] == pytest.approx(expected)
    assert result.removal_order("max_abs") == [int(i) + 1 for i in np.argsort(expected, kind="stable")]


def test_a_registered_criterion_is_a_choice_everywhere(max_abs):
    assert "max_abs" in criteria.names() and criteria.parse("all")[-1] == "max_abs"
    assert criteria.get("max_abs").summary == "Largest |w| of the block."


def test_what_a_criterion_needs_lives_on_its_registered_entry():
    @criteria.register("made_up_probe", removes="highest", scope="calibration", group="probes")
    def probe(calibration, ctx):
        """A made-up calibration criterion of another group."""
        return [0.0] * calibration.depth

    try:
        entry = criteria.get("made_up_probe")
        assert entry.needs_calibration and not entry.exact_value and entry.removes == "highest"
        assert "made_up_probe" in criteria.needing_data() and "made_up_probe" in criteria.parse("calibration")
        assert "made_up_probe" not in criteria.data_free() and criteria.group_of("made_up_probe") == "probes"
    finally:
        criteria.unregister("made_up_probe")
    assert [n for n in criteria.names() if criteria.get(n).exact_value] == ["entropy", "efficiency",
                                                                            "mutual_information"]
