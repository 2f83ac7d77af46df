"""The sweep in the report: Table 3 (accuracy by pruning ratio), what it shows beyond noise, the
criteria against a random order, the blocks each removed, and Fig. 1b."""
from __future__ import annotations

from pathlib import Path

from ..stats import separable
from . import experiment_figures as figs
from .render import Part
from .text import accuracy_cell, count_in, interval_text, measurement_line, metric_of, num, pct, value_text


def cells(sweep: dict) -> dict[tuple[str, float], dict]:
    """The sweep's rows by (criterion, ratio)."""
    return {(r["criterion"], r["ratio"]): r for r in sweep["rows"]}


def sweep_rows(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """Table 3: GFLOPs, then the metric per criterion (rows) and ratio (columns); random as mean ± std."""
    ratios, by, metric = sweep["ratios"], cells(sweep), metric_of(sweep)
    gflops = [next((by[(c, q)]["gflops"] for c in sweep["criteria"] if (c, q) in by), None) for q in ratios]
    rows = [["GFLOPs", *map(num, gflops)]]
    rows += [[name, *[accuracy_cell(by.get((name, q)), metric) for q in ratios]] for name in sweep["criteria"]]
    return ["ratio (%)", *[f"{q:g}" for q in ratios]], rows


def _beyond(a: dict | None, b: dict | None, metric: dict | None = None) -> int:
    """+1 / -1 when a is better / worse than b beyond both intervals (above / below for an accuracy), 0 when not
    separable or unknown."""
    if a is None or b is None or not a.get("interval") or not b.get("interval"):
        return 0
    if not separable(a["interval"], b["interval"]):
        return 0
    metric = metric or metric_of(None)
    higher = a[metric["name"]] > b[metric["name"]]
    return 1 if higher == (metric["better"] == "higher") else -1


def versus_random_rows(sweep: dict) -> tuple[list[str], list[list[str]]] | None:
    """Per criterion: the ratios where it is above or below the random orders' mean beyond noise."""
    by, metric = cells(sweep), metric_of(sweep)
    if "random" not in sweep["criteria"] or not sweep["baseline"].get("interval"):
        return None
    rows = []
    for name in sweep["criteria"]:
        if name == "random":
            continue
        verdicts = {q: _beyond(by.get((name, q)), by.get(("random", q)), metric) for q in sweep["ratios"]}
        rows.append([name, ", ".join(f"{q:g}" for q, v in verdicts.items() if v > 0) or "none",
                     ", ".join(f"{q:g}" for q, v in verdicts.items() if v < 0) or "none"])
    above, below = ("above", "below") if metric["better"] == "higher" else ("better than", "worse than")
    return ["criterion", f"{above} random beyond noise at ratio (%)", f"{below} random beyond noise at ratio (%)"], rows


def _trend(curve: list[dict], base: dict, metric: dict | None = None) -> str:
    """The oracle's curve in words: whether it ever improves beyond noise, and whether it ends worse than the
    unpruned model beyond noise."""
    rises = any(_beyond(b, a, metric) > 0 for i, a in enumerate(curve) for b in curve[i + 1:])
    ends_lower = bool(curve) and _beyond(curve[-1], base, metric) < 0
    if (metric or metric_of(None))["better"] == "lower":
        if rises:
            return "is not monotone: a larger ratio scores better than a smaller one beyond noise"
        return ("never improves beyond noise as more blocks are removed"
                + (" and is worse than the unpruned model beyond noise at the largest ratio" if ends_lower else
                   ", and even at the largest ratio it is within noise of the unpruned model"))
    if rises:
        return "is not monotone: a larger ratio scores above a smaller one beyond noise"
    return ("never rises beyond noise as more blocks are removed"
            + (" and falls below the unpruned model beyond noise at the largest ratio" if ends_lower else
               ", and even at the largest ratio it is within noise of the unpruned model"))


def sweep_findings(sweep: dict) -> list[str]:
    """What the sweep shows beyond noise: the oracle against the random orders, the oracle's trend, and
    any pruned model that scores above the unpruned one."""
    by, base, ratios, out = cells(sweep), sweep["baseline"], sweep["ratios"], []
    metric = metric_of(sweep)
    key, up = metric["name"], metric["better"] == "higher"
    if not base.get("interval"):
        return out
    if "sensitivity" in sweep["criteria"] and "random" in sweep["criteria"]:
        wins = [q for q in ratios if _beyond(by.get(("sensitivity", q)), by.get(("random", q)), metric) > 0]
        out.append(f"The oracle's order is {'above' if up else 'better than'} the mean of the random orders beyond "
                   "noise (the random interval covers how much the orders differ) at "
                   + (", ".join(f"{q:g} %" for q in wins) if wins else "no ratio") + f" (of {len(ratios)}).")
    if "sensitivity" in sweep["criteria"]:
        curve = [by[("sensitivity", q)] for q in ratios if ("sensitivity", q) in by]
        out.append(f"The oracle's {'accuracy' if key == 'top1' else metric['label']} {_trend(curve, base, metric)}.")
    above = [(r, _beyond(r, base, metric)) for r in sweep["rows"] if (r[key] > base[key]) == up and r[key] != base[key]]
    if above:
        beyond = [r for r, v in above if v > 0]
        out.append(f"{len(above)} pruned result{'s' if len(above) > 1 else ''} score "
                   f"{'above' if up else 'better than'} the unpruned model; "
                   + (f"{len(beyond)} beyond noise ({', '.join(_cell_name(r) for r in beyond[:6])})."
                      if beyond else "all within noise of it."))
    return out


def _cell_name(row: dict) -> str:
    return f"{row['criterion']} at {row['ratio']:g} %"


def sweep_parts(sweep: dict, figures: Path, chance: float | None) -> list[Part]:
    """Table 3 with its findings, the criteria against random, the blocks removed and Fig. 1b."""
    base, metric = sweep["baseline"], metric_of(sweep)
    key = metric["name"]
    unpruned = (f"{pct(base[key])} % {interval_text(base.get('interval'))}" if metric["percent"] else
                f"{value_text(base[key], metric)} {interval_text(base.get('interval'), metric)}")
    parts: list[Part] = [
        ("h", 2, f"{'Accuracy' if key == 'top1' else metric['label'].capitalize()} by pruning ratio (Table 3)"),
        ("p", measurement_line(count_in(sweep), sweep.get("classes"), metric)
         + f" Unpruned: {unpruned}, {num(base['gflops'])} GFLOPs. "
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
    parts += removed_parts(sweep)
    parts.append(("img", figs.ratio_curves(sweep, figures / "accuracy_vs_ratio.png", chance),
                  f"{'Accuracy' if key == 'top1' else metric['label'].capitalize()} against pruning ratio, the "
                  "criteria in one panel per family with the oracle (black) "
                  "and random (grey) drawn above them in every panel (shaded: their 95 % intervals; light bars: "
                  "each criterion's; dashed: unpruned, its interval shaded; dotted: chance, or named on the axis "
                  "when below it)."))
    return parts


def _orders(row: dict | None) -> list[list[int]]:
    """The blocks each run of a cell removed: one list per random order, one list for a criterion."""
    if row is None:
        return []
    removed = row["removed"]
    return removed if removed and isinstance(removed[0], list) else [removed]


def _blocks(removed: list[int]) -> str:
    return ",".join(map(str, removed)) or "none"


def _removed_cell(orders: list[list[int]]) -> str:
    """One cell of 'Blocks removed': the blocks, or how many orders the table below lists."""
    if not orders:
        return "-"
    return _blocks(orders[0]) if len(orders) == 1 else f"{len(orders)} orders (table below)"


def removed_parts(sweep: dict) -> list[Part]:
    """The blocks each criterion removed at each ratio; a criterion of several orders (random) gets a row per
    order in a table of its own, not every order in one cell."""
    ratios, by = sweep["ratios"], cells(sweep)
    columns = ["criterion", *[f"{q:g} %" for q in ratios]]
    rows, several = [], {}
    for name in sweep["criteria"]:
        orders = {q: _orders(by.get((name, q))) for q in ratios}
        count = max(map(len, orders.values()), default=0)
        if count > 1:
            several[name] = orders
        rows.append([name, *[_removed_cell(orders[q]) for q in ratios]])
    parts: list[Part] = [("h", 3, "Blocks removed"), ("table", columns, rows)]
    for name, orders in several.items():
        count = max(map(len, orders.values()))
        parts += [("p", f"Blocks removed by each of the {count} `{name}` orders:"),
                  ("table", [f"{name} order", *columns[1:]],
                   [[str(k + 1), *[_blocks(orders[q][k]) if k < len(orders[q]) else "-" for q in ratios]]
                    for k in range(count)])]
    return parts
