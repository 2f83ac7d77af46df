"""The sweep in the report: Table 3 (accuracy by pruning ratio), what it shows beyond noise, the
criteria against a random order, the blocks each removed, and Fig. 1b."""
from __future__ import annotations

from pathlib import Path

from ..stats import separable
from . import experiment_figures as figs
from .render import Part
from .text import accuracy_cell, interval_text, measurement_line, num, pct


def cells(sweep: dict) -> dict[tuple[str, float], dict]:
    """The sweep's rows by (criterion, ratio)."""
    return {(r["criterion"], r["ratio"]): r for r in sweep["rows"]}


def sweep_rows(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """Table 3: GFLOPs, then accuracy per criterion (rows) and ratio (columns); random as mean ± std."""
    ratios, by = sweep["ratios"], cells(sweep)
    gflops = [next((by[(c, q)]["gflops"] for c in sweep["criteria"] if (c, q) in by), None) for q in ratios]
    rows = [["GFLOPs", *map(num, gflops)]]
    rows += [[name, *[accuracy_cell(by.get((name, q))) for q in ratios]] for name in sweep["criteria"]]
    return ["ratio (%)", *[f"{q:g}" for q in ratios]], rows


def _beyond(a: dict | None, b: dict | None) -> int:
    """+1 / -1 when a is above / below b beyond both intervals, 0 when not separable or unknown."""
    if a is None or b is None or not a.get("interval") or not b.get("interval"):
        return 0
    if not separable(a["interval"], b["interval"]):
        return 0
    return 1 if a["top1"] > b["top1"] else -1


def versus_random_rows(sweep: dict) -> tuple[list[str], list[list[str]]] | None:
    """Per criterion: the ratios where it is above or below the random orders' mean beyond noise."""
    by = cells(sweep)
    if "random" not in sweep["criteria"] or not sweep["baseline"].get("interval"):
        return None
    rows = []
    for name in sweep["criteria"]:
        if name == "random":
            continue
        verdicts = {q: _beyond(by.get((name, q)), by.get(("random", q))) for q in sweep["ratios"]}
        rows.append([name, ", ".join(f"{q:g}" for q, v in verdicts.items() if v > 0) or "none",
                     ", ".join(f"{q:g}" for q, v in verdicts.items() if v < 0) or "none"])
    return ["criterion", "above random beyond noise at ratio (%)", "below random beyond noise at ratio (%)"], rows


def _trend(curve: list[dict], base: dict) -> str:
    """The oracle's curve in words: whether it ever rises beyond noise, and whether it ends below the
    unpruned model beyond noise."""
    rises = any(_beyond(b, a) > 0 for i, a in enumerate(curve) for b in curve[i + 1:])
    ends_lower = bool(curve) and _beyond(curve[-1], base) < 0
    if rises:
        return "is not monotone: a larger ratio scores above a smaller one beyond noise"
    return ("never rises beyond noise as more blocks are removed"
            + (" and falls below the unpruned model beyond noise at the largest ratio" if ends_lower else
               ", and even at the largest ratio it is within noise of the unpruned model"))


def sweep_findings(sweep: dict) -> list[str]:
    """What the sweep shows beyond noise: the oracle against the random orders, the oracle's trend, and
    any pruned model that scores above the unpruned one."""
    by, base, ratios, out = cells(sweep), sweep["baseline"], sweep["ratios"], []
    if not base.get("interval"):
        return out
    if "sensitivity" in sweep["criteria"] and "random" in sweep["criteria"]:
        wins = [q for q in ratios if _beyond(by.get(("sensitivity", q)), by.get(("random", q))) > 0]
        out.append("The oracle's order is above the mean of the random orders beyond noise (the random interval "
                   "covers how much the orders differ) at " + (", ".join(f"{q:g} %" for q in wins) if wins else
                                                                "no ratio") + f" (of {len(ratios)}).")
    if "sensitivity" in sweep["criteria"]:
        curve = [by[("sensitivity", q)] for q in ratios if ("sensitivity", q) in by]
        out.append(f"The oracle's accuracy {_trend(curve, base)}.")
    above = [(r, _beyond(r, base)) for r in sweep["rows"] if r["top1"] > base["top1"]]
    if above:
        beyond = [r for r, v in above if v > 0]
        out.append(f"{len(above)} pruned result{'s' if len(above) > 1 else ''} score above the unpruned model; "
                   + (f"{len(beyond)} beyond noise ({', '.join(_cell_name(r) for r in beyond[:6])})."
                      if beyond else "all within noise of it."))
    return out


def _cell_name(row: dict) -> str:
    return f"{row['criterion']} at {row['ratio']:g} %"


def sweep_parts(sweep: dict, figures: Path, chance: float | None) -> list[Part]:
    """Table 3 with its findings, the criteria against random, the blocks removed and Fig. 1b."""
    ratios, by, base = sweep["ratios"], cells(sweep), sweep["baseline"]
    parts: list[Part] = [
        ("h", 2, "Accuracy by pruning ratio (Table 3)"),
        ("p", measurement_line(sweep.get("videos") or base.get("videos"), sweep.get("classes"))
         + f" Unpruned: {pct(base['top1'])} % {interval_text(base.get('interval'))}, {num(base['gflops'])} GFLOPs. "
           f"One finetuning seed per cell; `random` is the mean ± std of its random orders"
         + ("; `sensitivity` removes the blocks the full oracle ranks least important." if "sensitivity" in
            sweep["criteria"] else ".")),
        ("table", *sweep_rows(sweep))]
    findings = sweep_findings(sweep)
    if findings:
        parts.append(("p", " ".join(findings)))
    versus = versus_random_rows(sweep)
    if versus:
        parts += [("h", 3, "Against a random order"), ("table", *versus)]
    parts += [("h", 3, "Blocks removed"),
              ("table", ["criterion", *[f"{q:g} %" for q in ratios]],
               [[name, *[_removed(by.get((name, q))) for q in ratios]] for name in sweep["criteria"]]),
              ("img", figs.ratio_curves(sweep, figures / "accuracy_vs_ratio.png", chance),
               "Accuracy against pruning ratio, one line per criterion (shaded: 95 % intervals of the oracle and "
               "random; dotted: chance).")]
    return parts


def _removed(row: dict | None) -> str:
    if row is None:
        return "-"
    removed = row["removed"]
    if removed and isinstance(removed[0], list):
        return " / ".join(",".join(map(str, r)) for r in removed)
    return ",".join(map(str, removed))
