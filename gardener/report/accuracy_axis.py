"""The metric axis every experiment figure shares: a range chosen from the data and its intervals, so
that differences of a few points are not flattened by a 0-100 axis; the unpruned model's value with its
interval; and chance, drawn where it lies in range and named on the axis where it lies below.

Accuracies arrive as fractions (as the JSON files hold them) and are drawn in percent; another task's metric
(a perplexity) is drawn as it is, with its own label and bounds (`Axis`, from the table's metric).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL = "top-1 accuracy (%)"


@dataclass(frozen=True)
class Axis:
    """Which value of a row is drawn, how it is scaled, labelled and bounded."""

    key: str = "top1"
    scale: float = 100.0
    label: str = LABEL
    bounds: tuple[float, float] = (0.0, 100.0)
    noun: str = "accuracy"  # as figure titles name it


TOP1 = Axis()


def axis_for(table: dict) -> Axis:
    """The axis of a table's metric (sensitivity.json, sweep.json): top-1 unless the table names another."""
    metric = table.get("metric")
    if not metric or metric.get("percent"):
        return TOP1
    return Axis(metric["name"], 1.0, metric["label"] + (" (lower is better)" if metric["better"] == "lower" else ""),
                (0.0, float("inf")), metric["label"])
UNPRUNED, CHANCE = "unpruned", "chance"
NEAR = 0.25  # chance this close below the data (a share of the data's span) is brought into range


def errors(values: list[float], intervals: list, scale: float = 100.0) -> np.ndarray | None:
    """matplotlib yerr (2, n) in drawn units (percent for an accuracy) from [lo, hi] intervals; None when any is
    unknown."""
    if not intervals or any(i is None for i in intervals):
        return None
    lo = [scale * v - scale * i[0] for v, i in zip(values, intervals)]
    hi = [scale * i[1] - scale * v for v, i in zip(values, intervals)]
    return np.maximum(0, np.array([lo, hi]))


def extent(rows: list[dict], axis: Axis = TOP1) -> list[float]:
    """Every value of `rows` (dicts with the axis' key and maybe "interval") and its interval ends, drawn units."""
    points = []
    for row in rows:
        points.append(axis.scale * row[axis.key])
        points += [axis.scale * x for x in row.get("interval") or []]
    return points


def accuracy_range(points: list[float], chance: float | None, bounds: tuple[float, float] = (0.0, 100.0)
                   ) -> tuple[float, float]:
    """The y range, in percent, that holds every point with a margin, within 0-100 (or `bounds`); chance (a
    fraction) is brought into range when it lies only a little below the data, else left below."""
    lo, hi = min(points), max(points)
    pad = max(1.0 if bounds[1] == 100.0 else 0.0, 0.06 * (hi - lo)) or 0.05 * abs(hi) or 1.0
    lo, hi = lo - pad, hi + pad
    if chance and lo > 100 * chance >= lo - NEAR * (hi - lo):
        lo = 100 * chance - pad
    return max(bounds[0], lo), min(bounds[1], hi)


def chance_below(ax, chance: float | None) -> bool:
    """Whether chance lies below the axis' range (after its limits are set)."""
    return bool(chance) and 100 * chance < ax.get_ylim()[0]


def mark_references(ax, baseline: dict, chance: float | None, *, ylabel: bool = True, axis: Axis = TOP1) -> None:
    """The unpruned value dashed with its interval shaded, and chance dotted where it is in range (an accuracy's
    only); where chance lies below, the axis label says so. Call after the limits are set. Drawn beneath the
    data (low zorder)."""
    ax.axhline(axis.scale * baseline[axis.key], color="black", linestyle="--", linewidth=1, label=UNPRUNED, zorder=1)
    if baseline.get("interval"):
        ax.axhspan(axis.scale * baseline["interval"][0], axis.scale * baseline["interval"][1], color="black",
                   alpha=0.08, linewidth=0, zorder=0.5)
    if chance and not chance_below(ax, chance):
        ax.axhline(100 * chance, color="grey", linestyle=(0, (1, 3)), linewidth=1.2, label=CHANCE, zorder=1)
    if ylabel:
        ax.set_ylabel(axis_label(ax, chance, axis))


def axis_label(ax, chance: float | None, axis: Axis = TOP1) -> str:
    """'top-1 accuracy (%)', with where chance lies when it is below the axis."""
    return axis.label + (f"\n(chance, {100 * chance:.1f} %, lies below)" if chance_below(ax, chance) else "")
