"""The experiment report's figures (the paper's Fig. 1a, 1b, rank scatter, entropy profile), drawn
from the run folder's JSON data only, with every accuracy's interval and the chance level shown."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import atomic_file
from .style import PALETTE, figure, save


def _save(fig, path: Path) -> Path:
    with atomic_file(path, force=True) as tmp:
        save(fig, tmp)
    return path


def _errors(values: list[float], intervals: list) -> np.ndarray | None:
    """matplotlib yerr (2, n) in percent from [lo, hi] intervals; None when any is unknown."""
    if not intervals or any(i is None for i in intervals):
        return None
    lo = [100 * v - 100 * i[0] for v, i in zip(values, intervals)]
    hi = [100 * i[1] - 100 * v for v, i in zip(values, intervals)]
    return np.maximum(0, np.array([lo, hi]))


def _chance_line(ax, chance: float | None) -> None:
    if chance:
        ax.axhline(100 * chance, color="grey", linestyle=(0, (1, 3)), linewidth=1, label="chance")


def single_block(table: dict, path: Path, chance: float | None = None) -> Path:
    """Fig. 1a: accuracy after removing each block (with its 95 % interval), the unpruned accuracy
    dashed with its interval shaded, and chance dotted."""
    blocks = [r["block"] for r in table["blocks"]]
    values = [r["top1"] for r in table["blocks"]]
    fig, ax = figure(figsize=(7, 3.6), layout="constrained")
    ax.bar(blocks, [100 * v for v in values], color=PALETTE[0], yerr=_errors(values, [r.get("interval") for r in
                                                                                       table["blocks"]]),
           ecolor="black", capsize=2)
    base = table["baseline"]
    ax.axhline(100 * base["top1"], color=PALETTE[4], linestyle="--", label="unpruned")
    if base.get("interval"):
        ax.axhspan(100 * base["interval"][0], 100 * base["interval"][1], color=PALETTE[4], alpha=0.12)
    _chance_line(ax, chance)
    ax.set_xticks(blocks)
    ax.set_ylim(0, 100)
    ax.set_xlabel("block removed")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy after removing one block and finetuning (bars: 95 % interval)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def ratio_curves(sweep: dict, path: Path, chance: float | None = None) -> Path:
    """Fig. 1b: accuracy against pruning ratio, one line per criterion; the oracle's and random's
    95 % intervals shaded. Spectral criteria are dashed, so that the two schools read apart."""
    import matplotlib

    from ..criteria import group_of

    names = sweep["criteria"]
    colours = PALETTE if len(names) <= len(PALETTE) else [matplotlib.colormaps["tab20"](k % 20)
                                                          for k in range(len(names))]
    fixed = {"sensitivity": "black", "random": "grey"}  # the oracle and the floor stand out
    colours = [fixed.get(name, colours[k]) for k, name in enumerate(names)]
    fig, ax = figure(figsize=(8, 4.4), layout="constrained")
    for k, name in enumerate(names):
        rows = sorted((r for r in sweep["rows"] if r["criterion"] == name), key=lambda r: r["ratio"])
        x, y = [r["ratio"] for r in rows], [100 * r["top1"] for r in rows]
        style = {"linewidth": 2.4, "marker": "o"} if name in ("entropy", "sensitivity") else {"marker": "."}
        style["linestyle"] = "--" if group_of(name) == "spectral" else "-"
        ax.plot(x, y, label=name, color=colours[k], **style)
        if name in fixed and all(r.get("interval") for r in rows):
            ax.fill_between(x, [100 * r["interval"][0] for r in rows], [100 * r["interval"][1] for r in rows],
                            color=colours[k], alpha=0.15)
    ax.axhline(100 * sweep["baseline"]["top1"], color="grey", linestyle=":", label="unpruned")
    _chance_line(ax, chance)
    ax.set_ylim(0, 100)
    ax.set_xlabel("pruning ratio (% of blocks removed)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy after pruning and finetuning (shaded: 95 % intervals of the oracle and of the mean "
                 "of random orders)", fontsize=10)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


FAMILY_COLOURS = {"information": PALETTE[0], "magnitude": PALETTE[1], "spectral": PALETTE[2], "baseline": "grey"}


def agreement_bars(agree: dict, names: list[str], path: Path) -> Path:
    """Every criterion's Spearman rho with the oracle (bootstrap 95 % interval as error bars), best
    first, coloured by family; the band where random orders fall is shaded."""
    rho = [agree["criteria"][n]["spearman"] for n in names]
    intervals = [agree["criteria"][n].get("spearman_interval") for n in names]
    fig, ax = figure(figsize=(7, 0.32 * len(names) + 1.4), layout="constrained")
    family = [agree["criteria"][n].get("family") or "" for n in names]
    colours = [FAMILY_COLOURS.get(f, PALETTE[3]) for f in family]
    ax.barh(range(len(names)), np.nan_to_num(rho), color=colours)
    for k, interval in enumerate(intervals):  # drawn as segments: a bootstrap interval need not hold the bar's end
        if interval is not None and not any(np.isnan(interval)):
            ax.plot(interval, [k, k], color="black", linewidth=1.2, marker="|", markersize=7)
    band = (agree.get("random_orders") or {}).get("interval")
    if band and band[0] == band[0]:
        ax.axvspan(band[0], band[1], color="grey", alpha=0.15, label="random orders (95 %)")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman rho with the oracle ranking")
    title = "rank agreement with the oracle, all criteria"
    if agree.get("oracle_spread") is False:
        title += "\n(the oracle has no spread beyond noise: these are not findings)"
    ax.set_title(title, fontsize=10)
    for name, colour in FAMILY_COLOURS.items():
        if name in family:
            ax.barh([0], [0], color=colour, label=name)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


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
