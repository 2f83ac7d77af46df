"""The default `gardener demo` meets what issue 14 asks of it: a measurable oracle, with honest statistics.

About 8.5 minutes on 2 CPU cores: opt-in (`pytest -m demo`), so that CI can run the whole suite
under the current and the oldest supported versions within its time; run it after any change to
the demo and record the result in BENCHMARKS.md.
"""
from __future__ import annotations

import json

import pytest

from gardener.cli import main
from gardener.stats import separable


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "demo"
    with pytest.raises(SystemExit) as stop:
        main(["demo", str(out)])
    assert stop.value.code == 0
    return out


def _load(demo, name):
    return json.loads((demo / "run" / f"{name}.json").read_text())


@pytest.mark.demo
def test_the_source_and_the_unpruned_target_model_are_good(demo):
    source = json.loads((demo / "source" / "gardener.json").read_text())["final"]
    assert source["top1"] >= 0.85
    sensitivity = _load(demo, "sensitivity")
    assert sensitivity["baseline"]["top1"] >= 0.75 and sensitivity["classes"] == 8  # chance 12.5 %


@pytest.mark.demo
def test_at_least_two_single_removals_are_separable_from_the_unpruned_model(demo):
    sensitivity = _load(demo, "sensitivity")
    lower = [r for r in sensitivity["blocks"]
             if separable(r["interval"], sensitivity["baseline"]["interval"]) and r["top1"] < sensitivity["baseline"]["top1"]]
    assert len(lower) >= 2 and sorted(r["block"] for r in lower) == sensitivity["separable_from_unpruned"]


@pytest.mark.demo
def test_the_oracle_beats_random_orders_at_the_two_highest_ratios_and_falls(demo):
    sweep = _load(demo, "sweep")
    by = {(r["criterion"], r["ratio"]): r for r in sweep["rows"]}
    for ratio in sweep["ratios"][-2:]:
        oracle, rand = by[("sensitivity", ratio)], by[("random", ratio)]
        assert rand["runs"] == 10 and oracle["top1"] > rand["top1"]
        assert separable(oracle["interval"], rand["interval"]), ratio
    curve = [by[("sensitivity", q)] for q in sweep["ratios"]]
    for i, earlier in enumerate(curve):  # no larger ratio above a smaller one beyond noise
        assert not any(later["top1"] > earlier["top1"] and separable(later["interval"], earlier["interval"])
                       for later in curve[i + 1:])


@pytest.mark.demo
def test_the_agreement_table_gives_every_criterion_an_interval_and_a_verdict(demo):
    agreement = _load(demo, "agreement")
    band = agreement["random_orders"]["interval"]
    for name, row in agreement["criteria"].items():
        low, high = row["spearman_interval"]
        assert low <= high, name
        if name != "random":
            assert row["beats_random"] == (low > band[1]), name
    text = (demo / "report.md").read_text()
    winners = ", ".join(f"**{w}**" for w in agreement["beats_random"]) or "**none**"
    assert "Criteria whose whole interval lies above where random orders fall" in text and winners in text
