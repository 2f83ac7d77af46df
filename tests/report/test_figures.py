"""The experiment figures read at a glance: every family in the agreement legend, the oracle and random
drawn above the criteria in every panel of Fig. 1b, legends outside the data, and accuracy axes whose range
comes from the data, with the unpruned model and chance marked. Figures are built from made-up JSON data
and their matplotlib objects inspected."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from gardener.report import experiment_figures as figs
from gardener.stats import wilson

VIDEOS = 400


def _accuracy(top1: float, **fields) -> dict:
    """An accuracy as the run folder's tables hold it: top-1 and its 95 % Wilson interval."""
    return {"top1": top1, "interval": list(wilson(top1, VIDEOS)), **fields}


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- the agreement figure ---------------------------------------------------------------------------------

FAMILIES = {"entropy": "information", "l2": "magnitude", "stable_rank": "spectral", "skip_loss": "calibration",
            "random": "baseline", "my_plugin": "homegrown"}


def _agreement() -> dict:
    criteria = {name: {"spearman": 0.9 - 0.2 * k, "spearman_interval": [0.5 - 0.2 * k, 1.0 - 0.2 * k],
                       "family": family} for k, (name, family) in enumerate(FAMILIES.items())}
    return {"criteria": criteria, "random_orders": {"interval": [-0.6, 0.6]}}


def test_the_agreement_legend_holds_every_family_present_the_calibration_one_too():
    agree = _agreement()
    fig = figs.agreement_figure(agree, list(agree["criteria"]))
    texts = _legend_texts(fig)
    assert set(FAMILIES.values()) <= set(texts) and "random orders (95 %)" in texts
    assert fig.axes[0].get_legend() is None  # the legend is the figure's, below the axes: outside the data


def test_the_agreement_legend_names_only_the_families_present_each_in_its_own_colour():
    agree = _agreement()
    names = ["entropy", "random"]
    fig = figs.agreement_figure(agree, names)
    assert set(_legend_texts(fig)) == {"information", "baseline", "random orders (95 %)"}
    colours = figs.family_colours(list(FAMILIES.values()))
    assert len(set(colours.values())) == len(FAMILIES) and colours["calibration"] == figs.FAMILY_COLOURS["calibration"]


# --- Fig. 1b: accuracy against pruning ratio ---------------------------------------------------------------

CRITERIA = ["entropy", "mutual_information", "l1", "l2", "variance", "stable_rank", "alpha", "random", "sensitivity"]


def _sweep(criteria=CRITERIA, base: float = 0.91) -> dict:
    ratios = [25.0, 50.0, 75.0]
    rows = [{"criterion": name, "ratio": q, "runs": 3 if name == "random" else 1,
             **_accuracy(base - 0.0005 * q - 0.004 * k)}
            for k, name in enumerate(criteria) for q in ratios]
    return {"criteria": list(criteria), "ratios": ratios, "rows": rows, "baseline": _accuracy(base)}


def _data_zorders(ax) -> list[float]:
    return [a.get_zorder() for a in [*ax.lines, *ax.collections, *ax.patches]]


def test_the_oracle_is_drawn_last_and_above_every_criterion_in_every_panel():
    fig = figs.ratio_figure(_sweep(), chance=0.125)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["information", "magnitude", "spectral"]  # small multiples
    for ax in panels:
        oracle, random = ax.lines[-1], ax.lines[-2]
        assert oracle.get_label() == figs.ORACLE_LABEL and random.get_label() == "random (mean of 3 orders)"
        others = _data_zorders(ax)
        others.remove(oracle.get_zorder())
        assert oracle.get_zorder() > max(others)  # drawn last: matplotlib draws by zorder
        assert random.get_zorder() > max(line.get_zorder() for line in ax.lines[:-2])


def test_each_panel_names_its_own_criteria_beside_it_and_the_references_once_below():
    fig = figs.ratio_figure(_sweep(), chance=0.125)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert [t.get_text() for t in panels["magnitude"].get_legend().get_texts()] == ["l1", "l2", "variance"]
    legend = panels["magnitude"].get_legend()
    assert legend.get_bbox_to_anchor().x0 >= panels["magnitude"].get_window_extent().x1  # right of the data
    assert set(_legend_texts(fig)) == {"unpruned", figs.ORACLE_LABEL, "random (mean of 3 orders)"}


def test_the_ratio_axis_spans_the_data_with_its_intervals_and_says_chance_lies_below():
    sweep = _sweep()
    fig = figs.ratio_figure(sweep, chance=0.125)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    ends = [100 * x for r in sweep["rows"] + [sweep["baseline"]] for x in r["interval"]]
    assert min(ends) > low > 50 and max(ends) < high < 100  # not 0-100: a few points' differences show
    assert "chance, 12.5 %, lies below" in ax.get_ylabel()
    assert not [line for line in ax.lines if line.get_label() == "chance"]
    unpruned = next(line for line in ax.lines if line.get_label() == "unpruned")
    assert unpruned.get_ydata()[0] == pytest.approx(100 * sweep["baseline"]["top1"])


def test_a_sweep_of_the_oracle_and_random_alone_is_one_panel():
    fig = figs.ratio_figure(_sweep(["random", "sensitivity"]))
    assert len(fig.axes) == 1 and fig.axes[0].lines[-1].get_label() == figs.ORACLE_LABEL


# --- Fig. 1a: one block removed ----------------------------------------------------------------------------

def _table(accuracies: list[float], base: float, lower: set[int] = frozenset()) -> dict:
    return {"baseline": _accuracy(base),
            "blocks": [_accuracy(p, block=b, vs_unpruned="lower" if b in lower else "not separable")
                       for b, p in enumerate(accuracies, start=1)]}


def test_single_block_removal_keeps_every_interval_and_its_legend_outside_the_data():
    table = _table([0.82, 0.90, 0.88, 0.91], 0.91, lower={1})
    fig = figs.single_block_figure(table, chance=0.125)
    ax = fig.axes[0]
    assert ax.get_legend() is None and {"unpruned", "below unpruned beyond noise",
                                        "within noise of unpruned"} <= set(_legend_texts(fig))
    bars = [c for c in ax.containers if c.has_yerr]
    assert sum(len(c.lines[0].get_xdata()) for c in bars) == 4  # a point with its interval per block
    low, high = ax.get_ylim()
    assert 60 < low < 100 * table["blocks"][0]["interval"][0] and high > 100 * table["baseline"]["interval"][1]
    assert "chance, 12.5 %, lies below" in ax.get_ylabel()


def test_chance_a_little_below_the_data_is_brought_into_range_and_drawn():
    fig = figs.single_block_figure(_table([0.22, 0.30, 0.35], 0.40, lower={1}), chance=0.125)
    ax = fig.axes[0]
    chance = next(line for line in ax.lines if line.get_label() == "chance")
    assert chance.get_ydata()[0] == pytest.approx(12.5) and ax.get_ylim()[0] < 12.5
    assert "lies below" not in ax.get_ylabel() and "chance" in _legend_texts(fig)
