"""`gardener report RUN`: the paper's tables and figures from a run folder's JSON files, with the
statistics that say which differences are beyond noise.

Every accuracy carries its 95 % Wilson interval from the number of test videos, and each table
states the test-set size and chance level. The oracle's ranking is marked where its accuracies
are not separable; when none are, the agreement of the data-free criteria with it is printed
without p-values and said to be noise. The report is a list of parts rendered to Markdown or
HTML (`render`), so both formats carry the same numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GardenerError
from ..fileio import write_text
from ..settings import read_json
from ..stats import separable
from . import experiment_figures as figs
from .render import Part, to_html, to_markdown


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


# --- Table 3: the sweep ---------------------------------------------------------------------------------

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


# --- agreement ------------------------------------------------------------------------------------------

def by_agreement(agree: dict) -> list[str]:
    """Criterion names, best Spearman rho against the oracle first (an undefined rho last)."""
    def key(name: str) -> float:
        rho = agree["criteria"][name]["spearman"]
        return -rho if rho is not None and rho == rho else np.inf
    return sorted(agree["criteria"], key=key)


def _family(agree: dict, name: str) -> str:
    from ..criteria import family_of

    return agree["criteria"][name].get("family") or family_of(name)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def agreement_rows(agree: dict) -> tuple[list[str], list[list[str]]]:
    """Every criterion ranked by Spearman rho with the oracle, with its bootstrap interval; p-values and
    the verdict against random only where the oracle has spread beyond noise."""
    names = by_agreement(agree)
    ks = list(agree["criteria"][names[0]]["top_k_overlap"]) if names else []
    spread = agree.get("oracle_spread") is not False  # unknown: shown, as published results are
    headers = ["#", "criterion", "family", "Spearman rho", "95 % interval"]
    headers += ["p", "Kendall tau", "p", "beats random"] if spread else ["Kendall tau"]
    headers += [f"top-{k} overlap" for k in ks] + ["cost beyond the weights"]
    rows = []
    for place, name in enumerate(names, start=1):
        c = agree["criteria"][name]
        interval = c.get("spearman_interval")
        row = [str(place), name, _family(agree, name), _fmt(c["spearman"]),
               f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval and interval[0] == interval[0] else "-"]
        if spread:
            verdict = "-" if c.get("beats_random") is None else ("yes" if c["beats_random"] else "no")
            row += [_fmt(c.get("spearman_p"), ".3g"), _fmt(c.get("kendall")), _fmt(c.get("kendall_p"), ".3g"),
                    "reference" if name == "random" else verdict]
        else:
            row += [_fmt(c.get("kendall"))]
        rows.append(row + [f"{c['top_k_overlap'][k]:.2f}" for k in ks] + [_cost(c.get("cost"))])
    return headers, rows


def _cost(cost: dict | None) -> str:
    """A calibration criterion's clips and seconds; nothing for one that reads the weights alone."""
    return f"{cost['clips']} clips, {cost['seconds']:.1f} s" if cost else "none"


def agreement_summary(agree: dict) -> str:
    """Which oracle the criteria are judged against, and which criteria, if any, agree with it beyond what
    a random order does."""
    from .oracles import oracle_text

    return (oracle_text(agree["oracle"]) + " " if agree.get("oracle") else "") + _agreement_verdict(agree)


def _agreement_verdict(agree: dict) -> str:
    band = (agree.get("random_orders") or {}).get("interval")
    band_text = f" (95 % of random orders fall in [{band[0]:.2f}, {band[1]:.2f}])" if band and band[0] == band[0] else ""
    if agree.get("oracle_spread") is False:
        return ("**Not separable**: the oracle has no spread beyond noise, so no criterion's agreement with it is a "
                "finding; no p-values are given" + band_text + ".")
    boot = agree.get("bootstrap") or {}
    if not boot.get("resamples"):
        return ("The oracle's per-video results are not recorded, so there are no bootstrap intervals and whether a "
                "criterion beats random orders is not tested" + band_text + ".")
    seeds = boot.get("seeds") or 1
    how = (f"Intervals: basic bootstrap, {boot['resamples']} resamples of the oracle's test videos"
           + (f" and of its {seeds} seeds per block. " if seeds > 1 else
              " (one finetuning seed: the spread between seeds is not covered). "))
    winners = agree.get("beats_random", [])
    return how + ("Criteria whose whole interval lies above where random orders fall" + band_text + ": "
                  + (", ".join(f"**{w}**" for w in winners) if winners else "**none**") + ".")


# --- the report -----------------------------------------------------------------------------------------

def _load(run: Path, name: str) -> Any:
    path = run / name
    return read_json(path) if path.is_file() else None


def _chance(*tables) -> float | None:
    classes = next((t.get("classes") for t in tables if t and t.get("classes")), None)
    return 1 / classes if classes else None


def check_job_results(run: Path) -> None:
    """Every job result the run folder's plans name must be its job's own (`InvalidResult` otherwise): the
    tables were built from them, and a report must not print a result that is not what its job measured."""
    from ..experiments.protocol import plan_job_ids
    from ..experiments.runs import open_existing

    folder = open_existing(run)
    for job_id in plan_job_ids(folder):
        folder.result(job_id)


def _files(run: Path) -> dict[str, Any]:
    """The run folder's result files by name (None where absent); an error when there is nothing to report."""
    files = {name: _load(run, f"{name}.json") for name in ("run", "sensitivity", "healing", "sweep", "agreement",
                                                            "scores")}
    if files["run"] is None:
        raise GardenerError(f"{run}: not a gardener run folder (no run.json)")
    check_job_results(run)
    if all(files[name] is None for name in ("sensitivity", "healing", "sweep")):
        raise GardenerError(f"{run}: no finished experiment yet (no sensitivity.json, healing.json or sweep.json); "
                            f"run `gardener sensitivity` or `gardener sweep` (and `gardener collect` after shards)")
    return files


def _head_parts(run: Path, info: dict, note: str | None, extra: list[Part] | None) -> list[Part]:
    """The title, the checkpoint, the note and extra parts, and the recipe the run's jobs share."""
    parts: list[Part] = [("h", 1, "Gardener report"),
                         ("p", f"Checkpoint: `{info['source']}` (sha256 of its weights {info['source_hash'][:16]}). "
                               f"Accuracies are top-1 on the test split in percent (the paper's WAR).")]
    if note:
        parts.append(("p", note))
    parts += extra or []
    plan = _load(run, "sensitivity.plan.json") or _load(run, "sweep.plan.json") or _load(run, "healing.plan.json")
    if plan:
        s = plan["settings"]
        parts.append(("p", f"Finetuning recipe: {recipe_line(s['recipe'])}; data: `{s['data']['data']}`; "
                           f"seed {s['seed']}."))
    return parts


def build(run: Path, figures: Path, note: str | None = None, extra: list[Part] | None = None) -> list[Part]:
    """The report's parts from the run folder's files; figures are written into `figures`.
    `extra` parts (e.g. the demo's) go after the note."""
    from .oracles import KINDS, between_parts, oracle_sections

    files = _files(run)
    figures.mkdir(parents=True, exist_ok=True)
    parts = _head_parts(run, files["run"], note, extra)
    sweep, agree = files["sweep"], files["agreement"]
    chance = _chance(files["sensitivity"], files["healing"], sweep)
    parts += oracle_sections([files[kind] for kind in KINDS if files[kind]], figures, chance)
    if agree and agree.get("between_oracles"):
        parts += between_parts(agree["between_oracles"])
    if agree and agree.get("criteria"):
        parts += _agreement_parts(agree, figures)
    if sweep:
        parts += _sweep_parts(sweep, figures, chance)
    if files["scores"]:
        parts += _weights_parts(files["scores"], figures)
    return parts


def _weights_parts(scores: dict, figures: Path) -> list[Part]:
    """The entropy profile and the weight histograms (Fig. 3)."""
    from .figures import weight_histograms

    parts: list[Part] = [("h", 2, "Weights")]
    if "entropy" in scores["criteria"]:
        parts.append(("img", figs.profile(scores, "entropy", figures / "entropy_per_block.png"),
                      f"Entropy per block ({scores['dtype_view']} view of weights stored as "
                      f"{'/'.join(scores.get('stored_dtypes', []))}; absolute values, no axis offset)."))
    if scores.get("histograms"):
        parts.append(("img", weight_histograms(scores, figures / "weight_histograms.png", force=True),
                      "Weight histograms at several depths."))
    return parts


def _agreement_parts(agree: dict, figures: Path) -> list[Part]:
    """Table 2 and the agreement of every criterion with the oracle (which one, `agreement_summary` says)."""
    from .oracles import oracle_name

    names = list(agree["criteria"])
    healing = (agree.get("oracle") or {}).get("kind") == "healing"
    depth = len(agree["oracle_ranks"])
    parts: list[Part] = [
        ("h", 2, "Block ranks (1 = most important, Table 2)"),
        ("p", "Equal scores are ties and share their average rank."),
        ("table", ["block", *map(str, range(1, depth + 1))],
         [[name, *map(rank_text, agree["criteria"][name]["ranks"])] for name in names
          if agree["criteria"][name].get("ranks")]
         + [[f"sensitivity ({oracle_name(agree['oracle']) if healing else 'oracle'})",
             *map(rank_text, agree["oracle_ranks"])]]),
        ("h", 2, "Agreement with the oracle, all criteria ranked"),
        ("p", "Every data-free criterion, the paper's and the spectral ones, ranked by Spearman rho between its "
              "block importance and the oracle's (ties as ties). `random` is any random order: the mean rho over "
              "random orders and the range where 95 % of them fall. " + agreement_summary(agree)),
        ("table", *agreement_rows(agree)),
        ("img", figs.agreement_bars(agree, by_agreement(agree), figures / "agreement.png"),
         "Spearman rho with the oracle per criterion with its 95 % bootstrap interval, coloured by family; "
         "grey band: where random orders fall.")]
    if "entropy" in agree["criteria"]:
        parts.append(("img", figs.rank_scatter(agree, "entropy", figures / "entropy_vs_oracle_ranks.png"),
                      "Entropy rank against oracle rank per block (tied blocks share their average rank)."))
    return parts


def _sweep_parts(sweep: dict, figures: Path, chance: float | None) -> list[Part]:
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


def recipe_line(recipe: dict) -> str:
    """A finetuning recipe in one line: its length, batch, learning rate and regularisation."""
    length = f"{recipe['max_steps']} steps" if recipe.get("max_steps") else f"{recipe['epochs']} epochs"
    return (f"{length}, batch {recipe['batch_size']} x {recipe['grad_accum']}, lr {recipe['base_lr']:g}/256, "
            f"layer decay {recipe['layer_decay']}, drop path {recipe['drop_path']}")


def write_report(run: str | Path, fmt: str = "md", out: str | Path | None = None, note: str | None = None,
                 extra: list[Part] | None = None) -> Path:
    """RUN/report.md with RUN/figures/*.png, or RUN/report.html with the figures inlined (or `out`)."""
    run = Path(run)
    if fmt not in ("md", "html"):
        raise GardenerError(f"--format {fmt!r}: expected md or html")
    if not run.is_dir():
        raise GardenerError(f"{run}: no such run folder")
    target = Path(out) if out is not None else run / f"report.{fmt}"
    parts = build(run, run / "figures", note, extra)
    if fmt == "md":
        return write_text(target, to_markdown(parts, target.parent), force=True)
    return write_text(target, to_html(parts), force=True)
