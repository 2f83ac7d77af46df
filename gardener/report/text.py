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


TOP1 = {"name": "top1", "label": "top-1 accuracy", "better": "higher", "unit": "videos", "percent": True}


def metric_of(table: dict | None) -> dict:
    """The metric a table reports (its "metric"; top-1 over test videos for tables that do not say)."""
    return (table or {}).get("metric") or TOP1


def value_text(x: float | None, metric: dict | None = None) -> str:
    """A value of the metric as tables print it: an accuracy in percent, a perplexity with 2 decimals."""
    if (metric or TOP1)["percent"]:
        return pct(x)
    return "-" if x is None else f"{x:.2f}"


def metric_header(metric: dict | None = None) -> str:
    """The metric's column header: 'top-1 (%)', 'perplexity'."""
    metric = metric or TOP1
    return "top-1 (%)" if metric["name"] == "top1" else metric["label"] + (" (%)" if metric["percent"] else "")


def interval_text(interval: list | None, metric: dict | None = None) -> str:
    """A 95 % interval, '[lo, hi]', in percent for an accuracy; empty when the test-set size is unknown."""
    if not interval:
        return ""
    if (metric or TOP1)["percent"]:
        return f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def accuracy_cell(row: dict | None, metric: dict | None = None) -> str:
    """'mean ± std over runs [interval]' for one table cell."""
    if row is None:
        return "-"
    metric = metric or TOP1
    key, std = metric["name"], row.get(f"{metric['name']}_std")
    spread = "" if std is None else (f" ± {100 * std:.2f}" if metric["percent"] else f" ± {std:.2f}")
    text = value_text(row[key], metric) + spread
    return text + (f" {interval_text(row['interval'], metric)}" if row.get("interval") else "")


def rank_text(rank: float) -> str:
    """An importance rank; a tie shows its average rank (e.g. 5.5)."""
    return str(int(rank)) if float(rank).is_integer() else f"{rank:g}"


def measurement_line(videos: int | None, classes: int | None, metric: dict | None = None) -> str:
    """What one value is worth: the test-set size, the chance level, and the interval used."""
    metric = metric or TOP1
    unit = metric.get("unit") or "videos"
    if metric["name"] == "perplexity":
        if not videos:
            return "Perplexity on the held-out text (lower is better); its sequences are not recorded: no interval."
        return (f"Perplexity (lower is better) on **{videos} held-out sequences**; brackets: 95 % bootstrap interval "
                f"that draws the test sequences with replacement, which covers the sampling of the test text, not "
                f"the spread between finetuning seeds. Two perplexities are *separable* when their intervals do not "
                f"overlap.")
    if not videos:
        return "Top-1 accuracy on the test split (%); the test-set size is not recorded, so no interval is given."
    chance = f", chance {100 / classes:.1f} %" if classes else ""
    one = unit[:-1] if unit.endswith("s") else unit
    return (f"Top-1 accuracy (%) on **{videos} test {unit}**{f' of {classes} classes' if classes else ''}{chance}; "
            f"brackets: 95 % Wilson interval (one {one} is {100 / videos:.2f} points), which covers the sampling "
            f"of the test {unit}, not the spread between finetuning seeds. Two accuracies are *separable* when "
            f"their intervals do not overlap.")


def count_in(table: dict) -> int | None:
    """The test-set size a table's values were measured on (videos, images or sequences)."""
    base = table.get("baseline") or {}
    return table.get("videos") or table.get("samples") or base.get("videos") or base.get("samples")


def gain(sweep: dict) -> tuple[str, float]:
    """How the pooled ratio table's differences read, and their scale: points of top-1 above the random orders,
    or a perplexity below theirs (a lower perplexity is better)."""
    metric = sweep.get("metric")
    if not metric or metric.get("percent"):
        return "top-1 above random orders (points)", 100.0
    return f"{metric['label']} below random orders", 1.0


def recipe_line(recipe: dict) -> str:
    """A finetuning recipe in one line: its length, batch, learning rate and regularisation."""
    length = f"{recipe['max_steps']} steps" if recipe.get("max_steps") else f"{recipe['epochs']} epochs"
    if recipe.get("max_steps") == 0:
        return "no training (each model measured as it is)"
    return (f"{length}, batch {recipe['batch_size']} x {recipe['grad_accum']}, lr {recipe['base_lr']:g}/256, "
            f"layer decay {recipe['layer_decay']}"
            + (f", drop path {recipe['drop_path']}" if "drop_path" in recipe else ""))
