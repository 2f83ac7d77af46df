"""Figures of verdicts pooled over models: each model's value as a point, the mean over the models with its
interval, and where random orders fall; drawn from the pooled result only (experiments/pooled.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .experiment_figures import FAMILY_COLOURS, _save
from .style import PALETTE, figure


def pooled_agreement_figure(pooled: dict, path: Path) -> Path:
    """Per criterion (best mean first): every model's Spearman rho as a point, the mean with its interval over
    the models as a bar, the pooled random band shaded; a filled mean where the criterion is beyond random."""
    agreement, n = pooled["agreement"], pooled["models"]
    names = sorted(agreement["criteria"], key=lambda name: -agreement["criteria"][name]["mean"])
    fig, ax = figure(figsize=(7, 0.32 * len(names) + 1.6), layout="constrained")
    band = agreement["random"]["interval"]
    ax.axvspan(band[0], band[1], color="grey", alpha=0.15, label="random orders, mean over the models (95 %)")
    offsets = np.linspace(-0.22, 0.22, n) if n > 1 else np.zeros(1)
    for k, name in enumerate(names):
        row = agreement["criteria"][name]
        colour = FAMILY_COLOURS.get(row.get("group") or "", PALETTE[3])
        ax.scatter(row["per_model"], k + offsets, s=12, color=colour, alpha=0.55, linewidths=0,
                   label="one model" if k == 0 else None)
        ax.plot(row["interval"], [k, k], color="black", linewidth=1.4, marker="|", markersize=8)
        ax.scatter([row["mean"]], [k], s=40, marker="D", edgecolors="black", linewidths=0.8,
                   color=colour if row["beats_random"] else "white",
                   label=f"mean over {n} models (filled: beyond random)" if k == 0 else None)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman rho with the oracle ranking")
    ax.set_title(f"rank agreement with the oracle over {n} trained models", fontsize=10)
    fig.legend(fontsize=7, loc="outside lower center", ncol=3)
    return _save(fig, path)


def pooled_sweep_figure(pooled: dict, path: Path) -> Path:
    """One panel per criterion: points of top-1 above each model's own random orders at every ratio (a point per
    model), the mean over the models with its interval, and the zero line (no better than random)."""
    from .text import gain

    sweep, n = pooled["sweep"], pooled["models"]
    label, scale = gain(sweep)
    names = list(sweep["criteria"])
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = figure(rows, cols, figsize=(2.6 * cols, 2.1 * rows + 0.6), sharex=True, sharey=True,
                       layout="constrained", squeeze=False)
    for ax, name in zip(axes.flat, names):
        cells = sweep["criteria"][name]
        ratios = [r for r in sweep["ratios"] if str(r) in cells]
        for ratio in ratios:
            ax.scatter([ratio] * n, [scale * d for d in cells[str(ratio)]["vs_random"]], s=12, color=PALETTE[1],
                       alpha=0.6, linewidths=0)
        means = [scale * cells[str(r)]["mean_vs_random"] for r in ratios]
        spans = [cells[str(r)]["interval"] for r in ratios]
        errors = np.array([[m - scale * s[0] for m, s in zip(means, spans)],
                           [scale * s[1] - m for m, s in zip(means, spans)]])
        ax.errorbar(ratios, means, yerr=np.maximum(0, errors), color="black", marker="o", markersize=3,
                    linewidth=1, capsize=2)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.supxlabel("removed (% of blocks)", fontsize=9)
    fig.supylabel(label, fontsize=9)
    fig.suptitle(f"pruning-ratio sweep against random orders: each model a point, mean over {n} models "
                 f"with its interval", fontsize=9)
    return _save(fig, path)
