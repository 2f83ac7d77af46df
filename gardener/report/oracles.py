"""The report's oracle parts: which oracle measured an accuracy table (full finetuning with its recipe,
or healing the finetuned checkpoint for K steps), each oracle's Table 1, and, when a run folder holds
both, how far the cheap oracle ranks the blocks as the full one does and what each cost.

Every place that shows oracle results names its oracle with `oracle_name` or `oracle_text`, so a
healing ranking is never read as the full protocol's.
"""
from __future__ import annotations

from pathlib import Path

from . import experiment_figures as figs
from .render import Part
from .text import (count_in, interval_text, measurement_line, metric_header, metric_of, num, pct, rank_text, recipe_line,
                   value_text)

KINDS = ("sensitivity", "healing")  # the oracles' table names, in report order: the full oracle first


# --- Table 1 of either oracle ---------------------------------------------------------------------------

def sensitivity_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    """Table 1: the unpruned model and each single-block removal, with interval, rank and separability."""
    seeds, metric = table.get("seeds") or 1, metric_of(table)
    key, header = metric["name"], metric_header(metric)
    others_head = ["top-5 (%)", "UAR (%)"] if key == "top1" else ["next-token accuracy (%)"]
    headers = ["model state", "params (M)", "GFLOPs", header, "95 % interval", *others_head, "rank",
               "vs unpruned", "separable from blocks"] + ([f"{header} per seed"] if seeds > 1 else [])

    def row(name: str, r: dict, rank: str, versus: str, others: str) -> list[str]:
        more = [pct(r.get("top5")), pct(r.get("uar"))] if key == "top1" else [pct(r.get("next_token_accuracy"))]
        cells = [name, num(r["params"] / 1e6), num(r["gflops"]), value_text(r[key], metric),
                 interval_text(r.get("interval"), metric), *more, rank, versus, others]
        return cells + ([", ".join(value_text(x, metric) for x in r.get(f"{key}_seeds", []))] if seeds > 1 else [])
    rows = [row("unpruned", table["baseline"], "", "", "")]
    for r in table["blocks"]:
        others = r.get("separable_from")
        versus = _versus_text(r.get("vs_unpruned"), metric)
        rows.append(row(f"block {r['block']} removed", r, rank_text(r["rank"]), versus,
                        "-" if others is None else ", ".join(map(str, others)) or "none"))
    return headers, rows


def _versus_text(verdict: str | None, metric: dict) -> str:
    """A removal against the unpruned model: 'lower' / 'higher' beyond noise, which for a metric where lower is
    better (a perplexity) also says 'better' or 'worse'."""
    if metric["better"] == "higher" or verdict not in ("higher", "lower"):
        return verdict or "-"
    return f"{verdict} ({'better' if verdict == metric['better'] else 'worse'})"


def sensitivity_summary(table: dict) -> str:
    """In words: which single removals are beyond noise, and whether the oracle ranking means anything."""
    if table.get("spread") is None:
        return "The test-set size of these results is not recorded, so their noise cannot be judged."
    lower = table.get("separable_from_unpruned", [])
    seeds, metric = table.get("seeds") or 1, metric_of(table)
    noun, worse = ("accuracy", "below") if metric["name"] == "top1" else (metric["label"], "worse than")
    untrained = (table.get("oracle") or {}).get("heal_steps") == 0
    text = ((f"Each {noun} is measured once, without training. " if untrained else
             f"Each {noun} is the mean of {seeds} finetuning seed{'s' if seeds > 1 else ''}. ")
            + f"{len(lower)} of {len(table['blocks'])} single-block removals are {worse} the unpruned model beyond "
            f"noise" + (f" (block{'s' if len(lower) > 1 else ''} {', '.join(map(str, lower))})" if lower else "")
            + ". ")
    if not table["spread"]:
        return text + ("**The oracle is not separable**: no two single-block removals differ beyond their "
                       "intervals, so its ranking is noise at this budget and test-set size.")
    return text + ("Ranks are only ordered between blocks that are separable from each other (column "
                   "'separable from blocks'); among the others the oracle's order is within noise, and equal "
                   f"{'accuracies' if noun == 'accuracy' else 'values'} share a rank.")


def _healing(oracle: dict | None) -> bool:
    return bool(oracle) and oracle.get("kind") == "healing"


def oracle_name(oracle: dict | None) -> str:
    """'full oracle' or 'healing oracle, K steps', from a table's "oracle" description."""
    if _healing(oracle) and oracle.get("heal_steps") == 0:
        return "removal alone, no training"
    return f"healing oracle, {oracle.get('heal_steps')} steps" if _healing(oracle) else "full oracle"


def oracle_text(oracle: dict | None) -> str:
    """One sentence on how the oracle measured its accuracies (tables older than the healing oracle: full)."""
    recipe = (oracle or {}).get("recipe")
    if not _healing(oracle):
        return (f"Oracle: **full finetuning**: each job finetunes the pruned model with the whole recipe"
                f"{f' ({recipe_line(recipe)})' if recipe else ''}"
                f"{' and a fresh classifier head' if (oracle or {}).get('head') != 'kept' else ''}, then evaluates it.")
    steps = oracle.get("heal_steps")
    if steps == 0:
        return ("Oracle: **removal alone**: each job removes the block from the given checkpoint and measures it as it "
                "is, without any training (the plain remove-one-block measure of the layer-pruning literature).")
    return (f"Oracle: **healing, {steps} steps**: each job removes the block from the given checkpoint (finetuned on "
            f"this task), keeps its classifier head, finetunes only {steps} optimizer steps with a warmup of "
            f"{oracle.get('warmup_steps') or 0}, then evaluates it: far cheaper than the full recipe, whose ranking "
            f"it approximates." + (f" Recipe: {recipe_line(recipe)}." if recipe else ""))


def oracle_sections(tables: list[dict], figures: Path, chance: float | None) -> list[Part]:
    """Table 1 and Fig. 1a of each oracle the run folder holds (their sensitivity tables), each naming its oracle."""
    parts: list[Part] = []
    for table in tables:
        oracle = table.get("oracle")
        healing = _healing(oracle)
        figure = figures / ("single_block_removal_healing.png" if healing else "single_block_removal.png")
        parts += [("h", 2, f"Single-block removal ({oracle_name(oracle)}; Table 1)" if healing else
                   "Single-block removal (oracle, Table 1)"),
                  ("p", oracle_text(oracle)),
                  ("p", measurement_line(count_in(table), table.get("classes"), metric_of(table))),
                  ("table", *sensitivity_rows(table)), ("p", sensitivity_summary(table)),
                  ("img", figs.single_block(table, figure, chance), _figure_caption(table, oracle))]
    return parts


def _figure_caption(table: dict, oracle: dict | None) -> str:
    metric = metric_of(table)
    if metric["name"] == "top1":
        return (f"Accuracy after removing each block ({oracle_name(oracle)}), with 95 % intervals, coloured by "
                f"whether it is below the unpruned model beyond noise (dashed: unpruned, its interval shaded; "
                f"dotted: chance, or named on the axis when below it). The axis spans the data, not 0-100.")
    return (f"{metric['label'].capitalize()} after removing each block ({oracle_name(oracle)}; lower is better), with "
            f"95 % intervals, coloured by whether it is worse than the unpruned model beyond noise (dashed: unpruned, "
            f"its interval shaded). The axis spans the data.")


# --- the two oracles against each other ---------------------------------------------------------------

def _stat(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def _interval(interval: list | None) -> str:
    return "-" if not interval or interval[0] != interval[0] else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def between_summary(between: dict) -> str:
    """In words: rho with its interval, whether it is a finding, and how the interval was resampled."""
    steps = (between["oracles"].get("healing") or {}).get("heal_steps")
    second = "The removal-alone oracle (no training)" if steps == 0 else f"The healing oracle ({steps} steps)"
    text = (f"{second} against the full oracle: Spearman rho {_stat(between['spearman'])}, "
            f"95 % interval {_interval(between.get('spearman_interval'))} ({between['bootstrap']['how']}). ")
    band = between["random_orders"]["interval"]
    band_text = f"95 % of random block orders fall in [{band[0]:.2f}, {band[1]:.2f}]" if band[0] == band[0] else ""
    if between.get("separable") is False:
        noisy = [f"{k} oracle" for k, v in between["spread"].items() if v is False]
        return text + (f"**Not separable**: the {' and the '.join(noisy)} {'have' if len(noisy) > 1 else 'has'} no "
                       f"spread beyond noise (no two single-block removals differ beyond their intervals), so the "
                       f"agreement between the oracles is not a finding; no p-values are given"
                       + (f" ({band_text})" if band_text else "") + ".")
    verdict = {True: "lies above", False: "does not lie above", None: "is not tested against"}[between["beats_random"]]
    return (text + f"Its whole interval {verdict} where random orders fall" + (f" ({band_text})" if band_text else "")
            + ("." if between["beats_random"] else "; no p-values are given."))


def between_rows(between: dict) -> tuple[list[str], list[list[str]]]:
    """The agreement statistics in one row; the verdict against random only where both oracles are
    separable, and p-values only where that verdict is yes (beside a 'no' they would read as a finding)."""
    ks = list(between["top_k_overlap"])
    shown = between.get("separable") is not False
    verdict = between.get("beats_random") if shown else None
    with_p = verdict is True
    headers = ["Spearman rho", "95 % interval", "Kendall tau"] + (["p (rho)", "p (tau)"] if with_p else [])
    row = [_stat(between["spearman"]), _interval(between.get("spearman_interval")), _stat(between.get("kendall"))]
    if with_p:
        row += [_stat(between.get("spearman_p"), ".3g"), _stat(between.get("kendall_p"), ".3g")]
    if shown:
        headers.append("beats random")
        row.append("-" if verdict is None else ("yes" if verdict else "no"))
    return headers + [f"top-{k} overlap" for k in ks], [row + [f"{between['top_k_overlap'][k]:.2f}" for k in ks]]


def cost_rows(between: dict) -> tuple[list[str], list[list[str]]]:
    """What each oracle cost: its jobs, the finetuning steps of all of them, their wall time."""
    rows = []
    for kind, oracle in between["oracles"].items():
        cost = (between.get("cost") or {}).get(kind) or {}
        seconds = cost.get("seconds")
        rows.append([oracle_name(oracle or {"kind": kind}), str(cost.get("jobs", "-")),
                     "-" if cost.get("steps") is None else f"{cost['steps']:,}",
                     "not recorded" if seconds is None else f"{seconds:,.1f}"])
    return ["oracle", "jobs", "finetuning steps (all jobs)", "wall time (s, summed over jobs)"], rows


def between_parts(between: dict) -> list[Part]:
    """The section comparing the two oracles: their ranks per block, the agreement, and their cost."""
    names = {k: oracle_name(v or {"kind": k}) for k, v in between["oracles"].items()}
    depth = len(between["ranks"]["full"])
    return [("h", 2, "Agreement between the oracles"),
            ("p", between_summary(between)),
            ("table", ["block", *map(str, range(1, depth + 1))],
             [[names[k], *map(rank_text, between["ranks"][k])] for k in ("full", "healing")]),
            ("table", *between_rows(between)),
            ("h", 3, "Cost of each oracle"),
            ("table", *cost_rows(between))]
