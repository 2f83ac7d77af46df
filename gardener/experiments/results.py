"""An experiment's tables from its job results, and the one function that finishes a run folder.

`sensitivity_table` is Table 1 and the oracle's scores (of either oracle: full finetuning, or
healing), `sweep_table` Table 3. `finish_tables` is the tail that `sensitivity`, `sweep` and `collect`
(`rebuild_tables`) share: it writes the tables of the plans whose jobs all have a result, each
oracle's ranking file (oracle.json, healing_oracle.json) and agreement.json (the criteria against the
oracle; the two oracles against each other, with their costs, when the run folder holds both).
Nothing here opens a model: scores come from the experiment's one scoring pass (or its scores.json),
accuracies and costs from the job results.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..fileio import write_text
from ..scoring import ScoreResult
from ..stats import average_ranks, interval_of, perplexity_interval, runs_interval, separable, spread_interval
from ..settings import read_json
from .identity import VIDEO
from .runs import RunDir, read_plan

ORACLE = "sensitivity"  # the full oracle's plan kind, and the score name of both oracles' ranking files
HEALING = "healing"  # the healing oracle's plan kind
ORACLE_FILES = {ORACLE: ("sensitivity.json", "oracle.json"), HEALING: ("healing.json", "healing_oracle.json")}
ORACLE_NOTE = "accuracy (top-1) after finetuning with the block removed"
HEALING_NOTE = "accuracy (top-1) after {steps} steps of healing the finetuned checkpoint with the block removed"


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n", force=True)


# --- Table 1: the oracle -----------------------------------------------------------------------------

def sensitivity_table(exp_or_plan: dict, run: RunDir) -> dict | None:
    """Table 1 and the oracle scores from a sensitivity plan; None while a job has no result.

    Each value of the task's metric (top-1 accuracy, perplexity) is the mean over the oracle's seeds,
    with its 95 % interval from the test set (Wilson from the number of test videos or images; for a
    perplexity, a bootstrap over the test sequences). Ranks treat equal values as ties (average ranks),
    the metric's direction deciding which end is removed first; `separable_from` names the blocks whose
    intervals do not overlap this block's, and `spread` says whether any two single-block removals are
    separable at all.
    """
    results = [run.result(j["id"]) for j in exp_or_plan["jobs"]]
    if any(r is None for r in results):
        return None
    metric = metric_of(exp_or_plan.get("settings"))
    groups: dict[tuple, list[dict]] = {}
    for job, result in zip(exp_or_plan["jobs"], results):
        groups.setdefault(tuple(job["removed"]), []).append(result)
    depth = exp_or_plan.get("depth") or len(groups) - 1
    baseline = _summary(groups[()], metric)
    blocks = [{"block": b, **_summary(groups[(b,)], metric)} for b in range(1, depth + 1)]
    scores = [r[metric.name] for r in blocks]
    order = average_ranks(scores, metric.removes)  # the removal that hurts most = the most important block
    for row, rank in zip(blocks, order):
        row["rank"] = rank
        row["vs_unpruned"] = _versus(row, baseline, metric.name)
    known = all(r["interval"] for r in blocks)  # not when the test-set size is unknown
    for row in blocks:
        row["separable_from"] = [other["block"] for other in blocks if other is not row
                                 and separable(row["interval"], other["interval"])] if known else None
    spread = any(r["separable_from"] for r in blocks) if known else None
    first = groups[()][0]
    worse = "lower" if metric.better == "higher" else "higher"
    return {"oracle": oracle_of(exp_or_plan), **_task_keys(exp_or_plan), "baseline": baseline, "blocks": blocks,
            "scores": scores, "ranks": order, "removes": metric.removes, "seeds": len(groups[()]),
            _count_key(first): count_of(first), "classes": first.get("classes"),
            "spread": spread, "separable_from_unpruned": [r["block"] for r in blocks if r["vs_unpruned"] == worse]}


def metric_of(settings: dict | None):
    """The metric of the task a plan's (or a table's) jobs were judged on: video classification's top-1 for
    run folders made before there were other tasks."""
    from .. import tasks

    return tasks.get((settings or {}).get("task") or VIDEO).metric


def table_metric(table: dict):
    """The metric a table (sensitivity.json, sweep.json) reports (top-1 for tables that do not say)."""
    from .. import tasks

    return tasks.get(table.get("task") or VIDEO).metric


def _task_keys(plan: dict) -> dict:
    """What a table says of its task and metric; nothing for a video run (its tables stay as they were)."""
    task = (plan.get("settings") or {}).get("task") or VIDEO
    return {} if task == VIDEO else {"task": task, "metric": metric_of(plan.get("settings")).to_dict()}


def count_of(result: dict) -> int | None:
    """How many test samples a result or table row was measured on (videos, images, sequences)."""
    return result.get("videos", result.get("samples"))


def _count_key(result: dict) -> str:
    return "videos" if "videos" in result else "samples"


def oracle_of(plan: dict) -> dict:
    """Which oracle a sensitivity plan runs ("full" for plans older than the healing oracle), with its recipe."""
    oracle = plan.get("oracle") or {"kind": "full", "head": "fresh"}
    return {**oracle, "recipe": (plan.get("settings") or {}).get("recipe")}


def oracle_cost(run: RunDir, kind: str) -> dict | None:
    """What an oracle cost, from its plan and job results: jobs, finetuning steps and wall seconds summed
    over its jobs (None where a result does not record them); None without its plan."""
    path = run.path / f"{kind}.plan.json"
    if not path.is_file():
        return None
    results = [run.result(j["id"]) or {} for j in read_plan(path)["jobs"]]

    def total(key: str) -> float | None:
        values = [r.get(key) for r in results]
        return None if any(v is None for v in values) else sum(values)
    return {"jobs": len(results), "steps": total("steps"), "seconds": total("seconds")}


def _summary(results: list[dict], metric) -> dict:
    """One oracle job over its seeds: the mean metric, its per-seed values, its interval (and per-sample records)."""
    if metric.name == "perplexity":
        return _text_summary(results)
    top1 = [r["top1"] for r in results]
    videos = count_of(results[0])
    mean = float(np.mean(top1))
    row = {"params": results[0]["params"], "gflops": results[0]["gflops"], "top1": mean,
           "top5": _mean(r.get("top5") for r in results), "uar": _mean(r.get("uar") for r in results),
           "top1_seeds": top1, _count_key(results[0]): videos, "interval": interval_of(mean, videos)}
    if all(r.get("correct") for r in results):
        row["correct"] = [r["correct"] for r in results]
    return row


def _text_summary(results: list[dict]) -> dict:
    """A causal LM's oracle job over its seeds: mean perplexity, its bootstrap interval over the test sequences,
    the per-seed values, and each seed's per-sequence losses and tokens (what the agreement resamples)."""
    values = [r["perplexity"] for r in results]
    row = {"params": results[0]["params"], "gflops": results[0]["gflops"], "perplexity": float(np.mean(values)),
           "next_token_accuracy": _mean(r.get("next_token_accuracy") for r in results), "perplexity_seeds": values,
           "samples": results[0].get("samples"), "interval": None}
    if all(r.get("nll") for r in results):
        row["nll"], row["tokens"] = [r["nll"] for r in results], [r["tokens"] for r in results]
        row["interval"] = perplexity_interval(np.array(row["nll"]), np.array(row["tokens"]))
    return row


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _versus(row: dict, baseline: dict, key: str = "top1") -> str | None:
    """'lower' or 'higher' than the unpruned model beyond both intervals, else 'not separable'."""
    if not row["interval"] or not baseline["interval"]:
        return None
    if not separable(row["interval"], baseline["interval"]):
        return "not separable"
    return "lower" if row[key] < baseline[key] else "higher"


def oracle_meta(table: dict) -> dict:
    """The parts of a sensitivity table the agreement statistics need."""
    meta = {"videos": table.get("videos"), "seeds": table.get("seeds"), "spread": table.get("spread"),
            "correct": [r.get("correct") for r in table["blocks"]], "oracle": table.get("oracle")}
    if "task" in table:  # not video: the task, its metric, and per-sequence records where it has them
        meta = {**meta, "videos": None, "samples": table.get("samples"), "task": table["task"],
                "metric": table.get("metric"), "removes": table.get("removes")}
        if all(r.get("nll") for r in table["blocks"]):
            meta.update(nll=[r["nll"] for r in table["blocks"]], tokens=[r["tokens"] for r in table["blocks"]])
    return meta


def oracle_result(layout: ScoreResult, table: dict, source_hash: str | None = None) -> ScoreResult:
    """The oracle as a score result (oracle.json or healing_oracle.json, which `prune --ranking` and
    `agree` take): the blocks of `layout` (any scoring pass of the checkpoint) scored by their accuracy
    after removal, under the one score name "sensitivity" whichever oracle it is (its meta says which).

    The oracle reads no weights, so it carries no precision view, aggregate, histograms or distinct-value
    counts; its meta carries what `agree` needs for honest statistics (test videos, seeds, per-video results).
    """
    oracle = table.get("oracle") or {}
    note = HEALING_NOTE.format(steps=oracle.get("heal_steps")) if oracle.get("kind") == "healing" else ORACLE_NOTE
    if "task" in table:
        note = note.replace("accuracy (top-1)", table_metric(table).label)
    return replace(layout, dtype_view="stored", primary=ORACLE, aggregate="mean", histograms=None,
                   blocks=[replace(b, distinct=None) for b in layout.blocks], scores={ORACLE: list(table["scores"])},
                   removes={ORACLE: table.get("removes", "highest")}, meta={"note": note, "oracle": oracle_meta(table),
                                                      **({"source_hash": source_hash} if source_hash else {})})


# --- Table 3: the sweep ------------------------------------------------------------------------------

ROW_KEYS = {"top1": ("params", "gflops", "top1", "top5", "uar", "videos", "samples", "correct"),
            "perplexity": ("params", "gflops", "perplexity", "next_token_accuracy", "samples", "nll", "tokens")}


def _row(result: dict, metric) -> dict:
    return {k: result.get(k) for k in ROW_KEYS[metric.name] if k in result or k in ("top5", "uar")}


def sweep_table(plan: dict, run: RunDir) -> dict | None:
    """Table 3 from a sweep plan: the task's metric per criterion and ratio (random: mean and std over seeds)."""
    baseline = run.result(plan["baseline"])
    results = {r["id"]: run.result(r["id"]) for r in plan["rows"]}
    if baseline is None or any(v is None for v in results.values()) or plan.get("waiting_for_oracle"):
        return None
    metric = metric_of(plan.get("settings"))
    base = _row(baseline, metric)
    base["interval"] = _mean_interval([base], metric)
    cells: dict[tuple[str, float], list[dict]] = {}
    for row in plan["rows"]:
        cells.setdefault((row["criterion"], row["ratio"]), []).append({**row, **_row(results[row["id"]], metric)})
    table = [_cell(name, ratio, members, base, metric) for (name, ratio), members in cells.items()]
    for row in [base, *table]:  # per-sample records stay in the job results
        for key in ("correct", "nll", "tokens"):
            row.pop(key, None)
    return {**_task_keys(plan), "baseline": base, "rows": table, "ratios": sorted({r["ratio"] for r in table}),
            "criteria": list(dict.fromkeys(r["criterion"] for r in table)), "classes": baseline.get("classes"),
            _count_key(base): count_of(base)}


def _mean_interval(members: list[dict], metric) -> list[float] | None:
    """The interval of the members' mean metric: from the test set alone (Wilson from the number of test samples
    for an accuracy; a bootstrap over the test sequences for a perplexity), and, over several runs, widened to
    the t-interval of their spread."""
    values = np.array([m[metric.name] for m in members])
    if metric.name != "perplexity":
        return runs_interval(values, count_of(members[0]))
    if not all(m.get("nll") for m in members):
        return spread_interval(values, None, (1.0, np.inf)) if len(members) > 1 else None
    test = perplexity_interval(np.array([m["nll"] for m in members]), np.array([m["tokens"] for m in members]))
    return spread_interval(values, test, (1.0, float("inf")))


def _cell(name: str, ratio: float, members: list[dict], base: dict, metric) -> dict:
    """One (criterion, ratio) cell over its runs (several for random: one per seed); `drop` is how much worse
    than the unpruned model it is, in the metric's units (points of accuracy, or of perplexity)."""
    key = metric.name
    values = np.array([m[key] for m in members])
    return {"criterion": name, "ratio": ratio, "count": members[0]["count"],
            "removed": [m["removed"] for m in members] if len(members) > 1 else members[0]["removed"],
            "gflops": float(np.mean([m["gflops"] for m in members])), key: float(values.mean()),
            f"{key}_std": float(values.std(ddof=1)) if len(members) > 1 else None, "runs": len(members),
            "drop": float(metric.worse_by(values.mean(), base[key])), _count_key(members[0]): count_of(members[0]),
            "interval": _mean_interval(members, metric)}


# --- the tail every experiment shares -----------------------------------------------------------------

def known_table(run: RunDir, made: dict, kind: str) -> dict | None:
    """An oracle's table (`kind` of ORACLE_FILES): the one just made, else an earlier command's, else None."""
    if kind in made:
        return made[kind]
    path = run.path / ORACLE_FILES[kind][0]
    return read_json(path) if path.is_file() else None


def known_oracle(run: RunDir, made: dict) -> dict | None:
    """The oracle the criteria are judged against: the full oracle's table when there is one, else the
    healing oracle's (its table says which it is), else None."""
    return next((t for kind in ORACLE_FILES if (t := known_table(run, made, kind)) is not None), None)


def between_oracles(run: RunDir, made: dict) -> dict | None:
    """The healing oracle against the full one, with what each cost; None unless the run folder holds both."""
    from .agreement import oracle_agreement

    full, healing = (known_table(run, made, kind) for kind in (ORACLE, HEALING))
    if full is None or healing is None:
        return None
    return {**oracle_agreement(full, healing), "cost": {"full": oracle_cost(run, ORACLE),
                                                        "healing": oracle_cost(run, HEALING)}}


def write_agreement(run: RunDir, criteria: dict | None, between: dict | None) -> dict:
    """agreement.json: every criterion against the oracle (`criteria`, from `agreement.agreement`) and,
    under "between_oracles", the two oracles against each other. A part not given is kept from the file."""
    path = run.path / "agreement.json"
    old = read_json(path) if path.is_file() else {}
    data = criteria if criteria is not None else {k: v for k, v in old.items() if k != "between_oracles"}
    between = between if between is not None else old.get("between_oracles")
    data = {**data, **({"between_oracles": between} if between is not None else {})}
    write_json(path, data)
    return data


def finish_tables(run: RunDir, plans: dict[str, dict], scores: ScoreResult | None) -> dict:
    """Write the tables of `plans` (by kind: "sensitivity", "healing", "sweep") whose jobs all have a result.

    Per oracle its table and, on the blocks of `scores`, its ranking file (ORACLE_FILES); sweep.json,
    and the criteria's agreement of every criterion of `scores` once an oracle is known (this call's
    or an earlier one); the agreement between the oracles once both are known. `scores` is the
    experiment's one scoring pass (None: no ranking file or criteria agreement). Returns the tables by kind.
    """
    from .agreement import agreement

    made = {}
    for kind, (table_file, ranking_file) in ORACLE_FILES.items():
        if kind in plans and (table := sensitivity_table(plans[kind], run)) is not None:
            made[kind] = table
            write_json(run.path / table_file, table)
            if scores is not None:
                write_json(run.path / ranking_file, oracle_result(scores, table, run.source_hash).to_dict())
    criteria = None
    if "sweep" in plans and (table := sweep_table(plans["sweep"], run)) is not None:
        made["sweep"] = table
        write_json(run.path / "sweep.json", table)
        oracle = known_oracle(run, made)
        if oracle is not None and scores is not None:
            criteria = agreement(scores, oracle)
    between = between_oracles(run, made) if any(kind in made for kind in ORACLE_FILES) else None
    if criteria is not None or between is not None:
        write_agreement(run, criteria, between)
    return made
