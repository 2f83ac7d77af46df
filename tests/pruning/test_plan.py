"""The pruning plan: how many blocks a ratio removes, which ones a removal order picks, and the choices refused."""
from __future__ import annotations

import pytest

from gardener.errors import GardenerError
from gardener.pruning import count_for_ratio, plan

PAPER_RATIOS = {0.083: 1, 0.25: 3, 0.417: 5, 0.583: 7, 0.75: 9, 0.917: 11}


@pytest.mark.parametrize("ratio,count", PAPER_RATIOS.items())
def test_paper_ratios_remove_paper_counts(ratio, count):
    assert count_for_ratio(ratio, 12) == count


def test_plan_takes_removal_order_and_skips_protected():
    order = [12, 10, 11, 9, 7, 8, 5, 3, 6, 4, 2, 1]
    p = plan(12, remove=3, removal_order=order, protect=[10])
    assert p.removed == [9, 11, 12] and p.kept == [1, 2, 3, 4, 5, 6, 7, 8, 10]


@pytest.mark.parametrize("kwargs,message", [
    ({"ratio": 0.0}, "strictly between 0 and 1"), ({"ratio": 1.0}, "strictly between 0 and 1"),
    ({"ratio": -0.5}, "strictly between"), ({"ratio": float("nan")}, "strictly between"),
    ({"ratio": 0.01}, "at least one block must go"), ({"remove": 0}, "expected 1..11"),
    ({"remove": 12}, "expected 1..11"), ({"ratio": 0.5, "remove": 2}, "exactly one"),
])
def test_plan_rejects_bad_choices(kwargs, message):
    with pytest.raises(GardenerError, match=message):
        plan(12, removal_order=list(range(12, 0, -1)), **kwargs)
