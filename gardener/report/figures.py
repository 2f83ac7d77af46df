"""Figures from score data: per-block weight histograms at several depths (the paper's Fig. 3)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GardenerError
from ..fileio import atomic_file
from .style import figure, save


def depth_picks(depth: int, count: int = 4) -> list[int]:
    """0-based positions spread from the first block to the last."""
    return sorted({round(i * (depth - 1) / max(count - 1, 1)) for i in range(min(count, depth))})


def weight_histograms(scores: dict[str, Any], path: str | Path, count: int = 4, force: bool = False) -> Path:
    """Histograms of block weights at `count` depths, with each block's entropy in its title."""
    hists = scores.get("histograms")
    if not hists:
        raise GardenerError("the scores hold no histograms; score with histograms=True")
    picks = depth_picks(len(hists), count)
    fig, axes = figure(1, len(picks), figsize=(3.2 * len(picks), 3.0), sharey=True, squeeze=False,
                       layout="constrained")
    entropy = scores.get("criteria", {}).get("entropy", {}).get("scores")
    for ax, pos in zip(axes[0], picks):
        edges, counts = np.asarray(hists[pos]["edges"]), np.asarray(hists[pos]["counts"])
        ax.stairs(np.maximum(counts, 0.5), edges, fill=True, alpha=0.85)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        title = f"block {scores['blocks'][pos]['number']}"
        ax.set_title(title + (f"\nH = {entropy[pos]:.4f} nats" if entropy else ""))
        ax.set_xlabel("weight value")
    axes[0][0].set_ylabel("count (log)")
    fig.suptitle(f"{Path(scores['source']).name}: {scores['stack']} ({scores['dtype_view']} view)", fontsize=10)
    with atomic_file(path, force) as tmp:
        save(fig, tmp)
    return Path(path)
