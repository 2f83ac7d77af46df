"""How the report writes its numbers and settings in words: accuracies, intervals, ranks, sizes, recipes.

Shared by every part of the report (report/experiment.py, sweep.py, agreement.py, oracles.py) and
by the terminal tables, so that a number reads the same wherever it is shown.
"""
from __future__ import annotations


def pct(x: float | None) -> str:
    """An accuracy in percent, as the paper prints it."""
    return "-" if x is None else f"{100 * x:.2f}"


def num(x: float | None) -> str:
    """GFLOPs or millions of parameters: 4 significant digits, whatever the model's size."""
    return "-" if x is None else f"{x:.4g}"


def interval_text(interval: list | None) -> str:
    """A 95 % interval in percent, '[lo, hi]'; empty when the test-set size is unknown."""
    return "" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def accuracy_cell(row: dict | None) -> str:
    """'mean ± std over runs [interval]' for one table cell."""
    if row is None:
        return "-"
    text = pct(row["top1"]) + (f" ± {100 * row['top1_std']:.2f}" if row.get("top1_std") is not None else "")
    return text + (f" {interval_text(row['interval'])}" if row.get("interval") else "")


def rank_text(rank: float) -> str:
    """An importance rank; a tie shows its average rank (e.g. 5.5)."""
    return str(int(rank)) if float(rank).is_integer() else f"{rank:g}"


def measurement_line(videos: int | None, classes: int | None) -> str:
    """What one accuracy is worth: the test-set size, the chance level, and the interval used."""
    if not videos:
        return "Top-1 accuracy on the test split (%); the test-set size is not recorded, so no interval is given."
    chance = f", chance {100 / classes:.1f} %" if classes else ""
    return (f"Top-1 accuracy (%) on **{videos} test videos**{f' of {classes} classes' if classes else ''}{chance}; "
            f"brackets: 95 % Wilson interval (one video is {100 / videos:.2f} points), which covers the sampling "
            f"of the test videos, not the spread between finetuning seeds. Two accuracies are *separable* when "
            f"their intervals do not overlap.")


def recipe_line(recipe: dict) -> str:
    """A finetuning recipe in one line: its length, batch, learning rate and regularisation."""
    length = f"{recipe['max_steps']} steps" if recipe.get("max_steps") else f"{recipe['epochs']} epochs"
    return (f"{length}, batch {recipe['batch_size']} x {recipe['grad_accum']}, lr {recipe['base_lr']:g}/256, "
            f"layer decay {recipe['layer_decay']}, drop path {recipe['drop_path']}")
