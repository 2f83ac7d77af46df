"""The accuracy axis every experiment figure shares: a range chosen from the data and its intervals, so
that differences of a few points are not flattened by a 0-100 axis; the unpruned model's accuracy with its
interval; and chance, drawn where it lies in range and named on the axis where it lies below.

Accuracies arrive as fractions (as the JSON files hold them) and are drawn in percent.
"""
from __future__ import annotations

import numpy as np

LABEL = "top-1 accuracy (%)"
UNPRUNED, CHANCE = "unpruned", "chance"
NEAR = 0.25  # chance this close below the data (a share of the data's span) is brought into range


def errors(values: list[float], intervals: list) -> np.ndarray | None:
    """matplotlib yerr (2, n) in percent from [lo, hi] intervals; None when any is unknown."""
    if not intervals or any(i is None for i in intervals):
        return None
    lo = [100 * v - 100 * i[0] for v, i in zip(values, intervals)]
    hi = [100 * i[1] - 100 * v for v, i in zip(values, intervals)]
    return np.maximum(0, np.array([lo, hi]))


def extent(rows: list[dict]) -> list[float]:
    """Every accuracy of `rows` (dicts with "top1" and maybe "interval") and its interval ends, in percent."""
    points = []
    for row in rows:
        points.append(100 * row["top1"])
        points += [100 * x for x in row.get("interval") or []]
    return points


def accuracy_range(points: list[float], chance: float | None) -> tuple[float, float]:
    """The y range, in percent, that holds every point with a margin, within 0-100; chance (a fraction) is
    brought into range when it lies only a little below the data, else left below."""
    lo, hi = min(points), max(points)
    pad = max(1.0, 0.06 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    if chance and lo > 100 * chance >= lo - NEAR * (hi - lo):
        lo = 100 * chance - pad
    return max(0.0, lo), min(100.0, hi)


def chance_below(ax, chance: float | None) -> bool:
    """Whether chance lies below the axis' range (after its limits are set)."""
    return bool(chance) and 100 * chance < ax.get_ylim()[0]


def mark_references(ax, baseline: dict, chance: float | None, *, ylabel: bool = True) -> None:
    """The unpruned accuracy dashed with its interval shaded, and chance dotted where it is in range;
    where chance lies below, the axis label says so. Call after the limits are set. Drawn beneath the
    data (low zorder)."""
    ax.axhline(100 * baseline["top1"], color="black", linestyle="--", linewidth=1, label=UNPRUNED, zorder=1)
    if baseline.get("interval"):
        ax.axhspan(100 * baseline["interval"][0], 100 * baseline["interval"][1], color="black", alpha=0.08,
                   linewidth=0, zorder=0.5)
    if chance and not chance_below(ax, chance):
        ax.axhline(100 * chance, color="grey", linestyle=(0, (1, 3)), linewidth=1.2, label=CHANCE, zorder=1)
    if ylabel:
        ax.set_ylabel(axis_label(ax, chance))


def axis_label(ax, chance: float | None) -> str:
    """'top-1 accuracy (%)', with where chance lies when it is below the axis."""
    return LABEL + (f"\n(chance, {100 * chance:.1f} %, lies below)" if chance_below(ax, chance) else "")
