"""Figures from result files: per-block weight histograms at several depths (the paper's Fig. 3), and the
confusion matrix of an evaluation."""
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


def confusion_matrix(confusion: list[list[int]], classes: list[str], path: str | Path, title: str = "",
                     force: bool = False) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across), counts in the cells."""
    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(classes)
    side = min(16.0, 2.0 + 0.45 * n)
    fig, ax = figure(figsize=(side, side * 0.9), layout="constrained")
    image = ax.imshow(rates, cmap="Greens", vmin=0, vmax=1)
    ax.grid(False)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    with atomic_file(path, force) as tmp:
        save(fig, tmp)
    return Path(path)


def draw_eval_figures(folder: str | Path, force: bool = True) -> list[Path]:
    """The figures of an evaluation folder (a finetuning run's or `gardener evaluate`'s), drawn from the
    eval.json that training wrote there: confusion.png. Returns the files drawn."""
    import json

    folder = Path(folder)
    source = folder / "eval.json"
    if not source.is_file():
        raise GardenerError(f"{folder}: no eval.json to draw from; evaluate (or finetune) into this folder first")
    result = json.loads(source.read_text())
    title = f"top-1 {result['top1']:.3f} · UAR {result['uar']:.3f} · {result['videos']} videos"
    return [confusion_matrix(result["confusion"], result["classes"], folder / "confusion.png", title, force=force)]
