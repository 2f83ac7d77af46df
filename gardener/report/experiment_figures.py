"""The experiment report's figures (the paper's Fig. 1a, 1b, rank scatter, entropy profile), drawn
from the run folder's JSON data only, with every accuracy's interval, the unpruned model and chance shown.

Each figure has a builder that returns the matplotlib figure (`*_figure`, what the tests inspect) and a
function that saves it into the run folder's figures. Legends sit outside the data; accuracy axes take
their range from the data (accuracy_axis.py), so that differences of a few points show.
"""
from __future__ import annotations

from math import ceil
from pathlib import Path

import numpy as np

from ..fileio import atomic_file
from .accuracy_axis import CHANCE, UNPRUNED, Axis, accuracy_range, axis_for, errors, extent, mark_references
from .style import PALETTE, figure, save

ORACLE, RANDOM = "sensitivity", "random"
ORACLE_LABEL = "oracle (sensitivity)"
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">"]


def _save(fig, path: Path) -> Path:
    with atomic_file(path, force=True) as tmp:
        save(fig, tmp)
    return path


def _outside_legend(fig, ax=None, handles: list | None = None, ncol: int = 4) -> None:
    """One legend for the figure, below the axes (outside the data): the given handles, or those of `ax`."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    fig.legend(handles=handles, loc="outside lower center", ncol=min(ncol, len(handles)), fontsize=8, frameon=False)


# --- Fig. 1a: one block removed ------------------------------------------------------------------------

VERSUS = {"lower": ("below unpruned beyond noise", PALETTE[4]), "not separable": ("within noise of unpruned", PALETTE[1]),
          "higher": ("above unpruned beyond noise", PALETTE[0]), None: ("one block removed", PALETTE[1])}


def single_block_figure(table: dict, chance: float | None = None):
    """Fig. 1a: accuracy after removing each block, a point with its 95 % interval coloured by whether it is
    below the unpruned model beyond noise; the unpruned accuracy dashed with its interval shaded; chance
    dotted (or named on the axis when below its range). Points, not bars: the axis need not start at 0."""
    rows, base, axis = table["blocks"], table["baseline"], axis_for(table)
    fig, ax = figure(figsize=(7, 3.8), layout="constrained")
    for verdict, (label, colour) in _versus(axis).items():
        mine = [r for r in rows if r.get("vs_unpruned") == verdict]
        if mine:
            ax.errorbar([r["block"] for r in mine], [axis.scale * r[axis.key] for r in mine], fmt="o", color=colour,
                        yerr=errors([r[axis.key] for r in mine], [r.get("interval") for r in mine], axis.scale),
                        capsize=3, label=label, zorder=3)
    ax.set_ylim(*accuracy_range(extent(rows + [base], axis), chance, axis.bounds))
    mark_references(ax, base, chance, axis=axis)
    ax.set_xticks([r["block"] for r in rows])
    ax.set_xlabel("block removed")
    trained = "" if (table.get("oracle") or {}).get("heal_steps") == 0 else " and finetuning"
    ax.set_title(f"{axis.noun} after removing one block{trained} (bars: 95 % intervals)", fontsize=10)
    _outside_legend(fig, ax)
    return fig


def _versus(axis: Axis) -> dict:
    """The colours of Fig. 1a's verdicts: worse than unpruned is red whichever way the metric points."""
    if axis.key == "top1":
        return VERSUS
    return {"higher": ("worse than unpruned beyond noise", PALETTE[4]), "not separable": VERSUS["not separable"],
            "lower": ("better than unpruned beyond noise", PALETTE[0]), None: VERSUS[None]}


def single_block(table: dict, path: Path, chance: float | None = None) -> Path:
    """Fig. 1a (`single_block_figure`) saved at `path`."""
    return _save(single_block_figure(table, chance), path)


# --- Fig. 1b: accuracy against pruning ratio, in small multiples by family ----------------------------------

def _panels(names: list[str]) -> list[tuple[str, list[str]]]:
    """The criteria by family, in the order they first appear (the oracle and random are in every panel)."""
    from ..criteria import group_of

    families: dict[str, list[str]] = {}
    for name in names:
        if name not in (ORACLE, RANDOM):
            families.setdefault(group_of(name) or "other", []).append(name)
    return list(families.items()) or [("", [])]


def _curve(sweep: dict, name: str) -> list[dict]:
    return sorted((r for r in sweep["rows"] if r["criterion"] == name), key=lambda r: r["ratio"])


def _criterion_line(ax, rows: list[dict], name: str, k: int, axis: Axis) -> None:
    """One criterion: its line, and its 95 % intervals as light bars beneath the lines."""
    x, y = [r["ratio"] for r in rows], [axis.scale * r[axis.key] for r in rows]
    colour = PALETTE[k % len(PALETTE)]
    ax.plot(x, y, color=colour, marker=MARKERS[k % len(MARKERS)], markersize=4, linewidth=1.4, label=name, zorder=2)
    yerr = errors([r[axis.key] for r in rows], [r.get("interval") for r in rows], axis.scale)
    if yerr is not None:
        ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=colour, alpha=0.35, linewidth=0.8, zorder=1.5)


REFERENCE_STYLE = {RANDOM: {"color": "grey", "linewidth": 2.0, "marker": "s", "zorder": 3.5},
                   ORACLE: {"color": "black", "linewidth": 2.4, "marker": "o", "zorder": 4}}


def _reference_line(ax, rows: list[dict], name: str, axis: Axis) -> None:
    """The oracle or random, above every criterion (higher zorder, drawn after them), its interval shaded."""
    style = REFERENCE_STYLE[name]
    x = [r["ratio"] for r in rows]
    if all(r.get("interval") for r in rows):
        ax.fill_between(x, [axis.scale * r["interval"][0] for r in rows], [axis.scale * r["interval"][1] for r in rows],
                        color=style["color"], alpha=0.12, linewidth=0, zorder=1.2)
    runs = max((r.get("runs") or 1 for r in rows), default=1)
    label = ORACLE_LABEL if name == ORACLE else f"random (mean of {runs} orders)" if runs > 1 else "random"
    ax.plot(x, [axis.scale * r[axis.key] for r in rows], label=label, **style)


def _panel(ax, sweep: dict, family: str, names: list[str], chance: float | None) -> None:
    """One family's criteria, then random, then the oracle last; the unpruned model and chance beneath."""
    axis = axis_for(sweep)
    mark_references(ax, sweep["baseline"], chance, ylabel=ax.get_subplotspec().is_first_col(), axis=axis)
    for k, name in enumerate(names):
        _criterion_line(ax, _curve(sweep, name), name, k, axis)
    for name in (RANDOM, ORACLE):
        if name in sweep["criteria"]:
            _reference_line(ax, _curve(sweep, name), name, axis)
    if family:  # the panel's own criteria beside it; the references once, below the figure
        handles, labels = ax.get_legend_handles_labels()
        ax.set_title(family, fontsize=10)
        ax.legend(handles=[h for h, label in zip(handles, labels) if label in names], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
    if ax.get_subplotspec().is_last_row():
        ax.set_xlabel("pruning ratio (% of blocks removed)")


def ratio_figure(sweep: dict, chance: float | None = None):
    """Fig. 1b: accuracy against pruning ratio, the criteria in small multiples by family (each panel's
    legend beside it), the oracle and random repeated in every panel and drawn above the criteria, their
    95 % intervals shaded; one shared accuracy axis from the data, with the unpruned model and chance."""
    panels = _panels(sweep["criteria"])
    cols = min(2, len(panels))
    rows = ceil(len(panels) / cols)
    fig, axes = figure(rows, cols, figsize=(5.6 * cols, 2.9 * rows + 1.0), sharex=True, sharey=True,
                       layout="constrained", squeeze=False)
    axis = axis_for(sweep)
    axes[0, 0].set_ylim(*accuracy_range(extent(sweep["rows"] + [sweep["baseline"]], axis), chance, axis.bounds))
    for ax, (family, names) in zip(axes.flat, panels):
        _panel(ax, sweep, family, names, chance)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes[0, 0].set_xticks(sweep["ratios"])
    fig.suptitle(f"{axis.noun} after pruning and finetuning, criteria by family\n(shaded: 95 % intervals of the "
                 "oracle and of the mean of random orders)", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()  # the references, shared by every panel
    shared = {UNPRUNED, CHANCE, ORACLE_LABEL}
    _outside_legend(fig, handles=[h for h, lab in zip(handles, labels) if lab in shared or lab.startswith(RANDOM)])
    return fig


def ratio_curves(sweep: dict, path: Path, chance: float | None = None) -> Path:
    """Fig. 1b (`ratio_figure`) saved at `path`."""
    return _save(ratio_figure(sweep, chance), path)


# --- the criteria against the oracle -------------------------------------------------------------------

FAMILY_COLOURS = {"information": PALETTE[0], "magnitude": PALETTE[1], "spectral": PALETTE[2],
                  "calibration": PALETTE[3], "baseline": "grey"}
SPARE_COLOURS = PALETTE[5:] + [PALETTE[4]]  # for families a plugin registers


def family_of(agree: dict, name: str) -> str:
    """A criterion's family: the one its agreement entry records, else its registered group."""
    from ..criteria import group_of

    return agree["criteria"][name].get("family") or group_of(name) or "other"


def family_colours(families: list[str]) -> dict[str, str]:
    """A colour for every family present: the built-in families' own, then spare ones in turn."""
    spare = iter(SPARE_COLOURS * (1 + len(families) // len(SPARE_COLOURS)))
    found = [f for f in FAMILY_COLOURS if f in families] + [f for f in dict.fromkeys(families)
                                                             if f not in FAMILY_COLOURS]
    return {f: FAMILY_COLOURS.get(f) or next(spare) for f in found}


def agreement_figure(agree: dict, names: list[str]):
    """Every criterion's Spearman rho with the oracle (bootstrap 95 % interval as a segment), in the order
    given, coloured by family; the band where random orders fall shaded; a legend, below the axes, with
    every family present and the band."""
    from matplotlib.patches import Patch

    rho = [agree["criteria"][n]["spearman"] for n in names]
    family = [family_of(agree, n) for n in names]
    colours = family_colours(family)
    fig, ax = figure(figsize=(7, 0.32 * len(names) + 1.9), layout="constrained")
    ax.barh(range(len(names)), np.nan_to_num(rho), color=[colours[f] for f in family], zorder=2)
    for k, name in enumerate(names):  # segments: a bootstrap interval need not hold the bar's end
        interval = agree["criteria"][name].get("spearman_interval")
        if interval is not None and not any(np.isnan(interval)):
            ax.plot(interval, [k, k], color="black", linewidth=1.2, marker="|", markersize=7, zorder=3)
    handles = [Patch(color=colour, label=f) for f, colour in colours.items()]
    band = (agree.get("random_orders") or {}).get("interval")
    if band and band[0] == band[0]:
        ax.axvspan(band[0], band[1], color="grey", alpha=0.15, zorder=1)
        handles.append(Patch(color="grey", alpha=0.15, label="random orders (95 %)"))
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman rho with the oracle ranking")
    title = "rank agreement with the oracle, all criteria"
    if agree.get("oracle_spread") is False:
        title += "\n(the oracle has no spread beyond noise: these are not findings)"
    ax.set_title(title, fontsize=10)
    _outside_legend(fig, handles=handles, ncol=3)
    return fig


def agreement_bars(agree: dict, names: list[str], path: Path) -> Path:
    """The agreement figure (`agreement_figure`) saved at `path`."""
    return _save(agreement_figure(agree, names), path)


def rank_scatter(agreement: dict, criterion: str, path: Path) -> Path:
    """A criterion's importance ranks against the oracle's, one point per block; tied blocks share
    their average rank, so they sit at the same place on that axis."""
    mine, oracle = agreement["criteria"][criterion]["ranks"], agreement["oracle_ranks"]
    depth = len(oracle)
    fig, ax = figure(figsize=(4.4, 4.2), layout="constrained")
    ax.plot([1, depth], [1, depth], color="grey", linestyle=":", linewidth=1)
    ax.scatter(oracle, mine, color=PALETTE[1], zorder=3)
    for block, (x, y) in enumerate(zip(oracle, mine), start=1):
        ax.annotate(str(block), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    stats = agreement["criteria"][criterion]
    interval = stats.get("spearman_interval")
    shown = interval and not any(np.isnan(interval))
    ax.set_title(f"{criterion} vs oracle: Spearman {stats['spearman']:.3f}"
                 + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if shown else ""), fontsize=9)
    ax.set_xlabel("oracle (sensitivity) rank, ties averaged")
    ax.set_ylabel(f"{criterion} rank")
    ax.set_xticks(range(1, depth + 1))
    ax.set_yticks(range(1, depth + 1))
    return _save(fig, path)


def profile(scores: dict, criterion: str, path: Path) -> Path:
    """A criterion's score per block, in absolute values (no axis offset, so that round-off does not
    read as a profile)."""
    values = scores["criteria"][criterion]["scores"]
    blocks = [b["number"] for b in scores["blocks"]]
    fig, ax = figure(figsize=(7, 3.2), layout="constrained")
    ax.plot(blocks, values, marker="o", color=PALETTE[0])
    ax.set_xticks(blocks)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel("block")
    ax.set_ylabel(f"{criterion} ({scores['dtype_view']} view)")
    ax.set_title(f"{criterion} per block")
    return _save(fig, path)
