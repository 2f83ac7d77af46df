"""Tables of verdicts pooled over models (`gardener pool`), made from the pooled result only."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .text import gain


def _rho(value: float) -> str:
    return f"{value:.2f}"


def _span(interval: list | None, scale: float = 1.0) -> str:
    return "" if not interval else f"[{scale * interval[0]:.2f}, {scale * interval[1]:.2f}]"


def pooled_agreement_rows(pooled: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per criterion: each model's rho, the mean, its interval over models, the verdict, and in how many models."""
    agreement, n = pooled["agreement"], pooled["models"]
    band = agreement["random"]
    headers = ["criterion", "group", "rho per model", "mean rho", "95 % interval (models)", "beyond random",
               f"alone, in N of {n}"]
    rows = [["random orders", "", "", _rho(band["mean"]), _span(band["interval"]), "(the band)", ""]]
    ordered = sorted(agreement["criteria"].items(), key=lambda item: -item[1]["mean"])
    for name, row in ordered:
        rows.append([name, row["group"], " ".join(_rho(r) for r in row["per_model"]), _rho(row["mean"]),
                     _span(row["interval"]), _verdict(row),
                     f"{row['beats_random_in']} of {row['tested_in']}"])
    return headers, rows


def _verdict(row: dict[str, Any]) -> str:
    """Above the pooled random band, below it (the blocks ranked the wrong way round), or within it."""
    if row["beats_random"]:
        return "yes"
    return "below random (reversed)" if row.get("below_random") else "not separable"


def pooled_sweep_rows(pooled: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per criterion and ratio: the mean gain over random orders (points of top-1, or perplexity below theirs), its
    interval, and in how many models."""
    sweep, n = pooled["sweep"], pooled["models"]
    scale = gain(sweep)[1]
    headers = ["criterion", *[f"{ratio:g} %" for ratio in sweep["ratios"]]]
    rows = []
    for name, cells in sweep["criteria"].items():
        row = [name]
        for ratio in sweep["ratios"]:
            cell = cells.get(str(ratio))
            row.append("" if cell is None else f"{scale * cell['mean_vs_random']:+.1f} {_span(cell['interval'], scale)}"
                                               f"{' *' if cell['above_random'] else ''} ({cell['above_random_in']}/{n})")
        rows.append(row)
    return headers, rows


def pooled_summary(pooled: dict[str, Any]) -> str:
    """One paragraph: what the verdicts cover and which criteria are beyond random over the models."""
    n = pooled["models"]
    text = (f"Pooled over {n} independently trained models ({pooled['method']}); a criterion is beyond random only "
            f"where its interval lies above the random band of the mean over the models.")
    if "agreement" in pooled:
        winners = pooled["agreement"]["beats_random"]
        text += (f" Beyond random over the {n} models: {', '.join(winners)}." if winners else
                 f" No criterion is beyond random over the {n} models (not separable).")
        reversed_ = [name for name, row in pooled["agreement"]["criteria"].items() if row.get("below_random")]
        if reversed_:
            text += f" Below random (ranking the blocks the wrong way round): {', '.join(reversed_)}."
    if "sweep" in pooled:
        what = ("points of top-1 above the model's own random orders" if gain(pooled["sweep"])[1] == 100.0 else
                f"{gain(pooled['sweep'])[0].replace('random orders', 'the model’s own random orders')}")
        text += (f" Ratio table: {what}, mean over models [interval]; "
                 "* where the interval lies above 0; (k/N) where a model alone shows it.")
    return text


def _versions(pooled: dict[str, Any]) -> str:
    """Which torch, transformers and accelerate the models were trained with (each run's run.json)."""
    from .experiment import VERSIONED

    made = [", ".join(f"{p} {v[p]}" for p in VERSIONED if p in v) or "not recorded" for v in pooled.get("versions", [])]
    if not made:
        return "Versions: not recorded."
    if len(set(made)) == 1:
        return f"Every model was made with {made[0]}; numbers from trained models can move with these versions."
    return "Models made with different versions: " + "; ".join(f"model {k + 1}: {m}" for k, m in enumerate(made)) + "."


def pooled_parts(pooled: dict[str, Any], names: list[str], figures: Path | None = None) -> list[tuple]:
    """The pooled report as parts (`report.render`): what it covers, then the pooled tables, each with its figure
    (per-model points and the pooled interval) when `figures` names a folder to draw them in."""
    from .pooled_figures import pooled_agreement_figure, pooled_sweep_figure

    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
    parts: list[tuple] = [("h", 1, f"Verdicts pooled over {pooled['models']} trained models"),
                          ("p", "Run folders, one per independently trained model: " + ", ".join(
                              f"`{n}`" for n in names) + ". Each has its own report; every number here comes "
                                                         "from their agreement.json and sweep.json."),
                          ("p", _versions(pooled)), ("p", pooled_summary(pooled))]
    if "agreement" in pooled:
        parts += [("h", 2, "Agreement with the oracle, per model and pooled"), ("table", *pooled_agreement_rows(pooled))]
        if figures is not None:
            parts.append(("img", pooled_agreement_figure(pooled, figures / "pooled_agreement.png"),
                          "Each model's rho (points), the mean over the models with its interval (diamond and bar; "
                          "filled where beyond random) and the pooled random band (shaded)."))
    if "sweep" in pooled:
        parts += [("h", 2, "Top-1 above random orders by pruning ratio (points), pooled"),
                  ("table", *pooled_sweep_rows(pooled))]
        if figures is not None:
            parts.append(("img", pooled_sweep_figure(pooled, figures / "pooled_sweep.png"),
                          "Top-1 above each model's own random orders: a point per model, the mean over the models "
                          "with its interval; above the zero line is better than random."))
    return parts



def check_pooled_markdown(path: Path, inputs: list[Path], force: bool = False) -> None:
    """The pooled report at `path` and its figures in figures/ beside it may not replace an existing file without
    `force`, nor touch one of `inputs` (the runs' tables), even with it: checked before anything is written."""
    from ..fileio import check_output

    for target in (path, path.parent / "figures" / "pooled_agreement.png", path.parent / "figures" / "pooled_sweep.png"):
        check_output(target, [("a pooled table", f) for f in inputs], force, "--markdown")


def write_pooled_markdown(pooled: dict[str, Any], path: Path, names: list[str], inputs: list[Path],
                          force: bool = False) -> Path:
    """The pooled report as Markdown at `path`, its figures in figures/ beside it (`check_pooled_markdown`)."""
    from ..fileio import write_text
    from .render import to_markdown

    path = Path(path)
    check_pooled_markdown(path, inputs, force)
    return write_text(path, to_markdown(pooled_parts(pooled, names, path.parent / "figures"), path.parent), force=True)
