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
from ..stats import average_ranks, interval_of, runs_interval, separable
from ..settings import read_json
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

    Each accuracy is the mean over the oracle's seeds, with its 95 % Wilson interval from the
    number of test videos. Ranks treat equal accuracies as ties (average ranks); `separable_from`
    names the blocks whose accuracy intervals do not overlap this block's, and `spread` says
    whether any two single-block removals are separable at all.
    """
    results = [run.result(j["id"]) for j in exp_or_plan["jobs"]]
    if any(r is None for r in results):
        return None
    groups: dict[tuple, list[dict]] = {}
    for job, result in zip(exp_or_plan["jobs"], results):
        groups.setdefault(tuple(job["removed"]), []).append(result)
    depth = exp_or_plan.get("depth") or len(groups) - 1
    baseline = _summary(groups[()])
    blocks = [{"block": b, **_summary(groups[(b,)])} for b in range(1, depth + 1)]
    scores = [r["top1"] for r in blocks]
    order = average_ranks(scores, "highest")  # lower accuracy after removal = more important
    for row, rank in zip(blocks, order):
        row["rank"] = rank
        row["vs_unpruned"] = _versus(row, baseline)
    known = all(r["interval"] for r in blocks)  # not when the test-set size is unknown
    for row in blocks:
        row["separable_from"] = [other["block"] for other in blocks if other is not row
                                 and separable(row["interval"], other["interval"])] if known else None
    spread = any(r["separable_from"] for r in blocks) if known else None
    first = groups[()][0]
    return {"oracle": oracle_of(exp_or_plan), "baseline": baseline, "blocks": blocks, "scores": scores,
            "ranks": order, "removes": "highest", "seeds": len(groups[()]), "videos": first.get("videos"),
            "classes": first.get("classes"),
            "spread": spread, "separable_from_unpruned": [r["block"] for r in blocks if r["vs_unpruned"] == "lower"]}


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


def _summary(results: list[dict]) -> dict:
    """One oracle job over its seeds: mean accuracies, the per-seed top-1, the Wilson interval."""
    top1 = [r["top1"] for r in results]
    videos = results[0].get("videos")
    mean = float(np.mean(top1))
    row = {"params": results[0]["params"], "gflops": results[0]["gflops"], "top1": mean,
           "top5": _mean(r.get("top5") for r in results), "uar": _mean(r.get("uar") for r in results),
           "top1_seeds": top1, "videos": videos, "interval": interval_of(mean, videos)}
    if all(r.get("correct") for r in results):
        row["correct"] = [r["correct"] for r in results]
    return row


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _versus(row: dict, baseline: dict) -> str | None:
    """'lower' or 'higher' than the unpruned model beyond both intervals, else 'not separable'."""
    if not row["interval"] or not baseline["interval"]:
        return None
    if not separable(row["interval"], baseline["interval"]):
        return "not separable"
    return "lower" if row["top1"] < baseline["top1"] else "higher"


def oracle_meta(table: dict) -> dict:
    """The parts of a sensitivity table the agreement statistics need."""
    return {"videos": table.get("videos"), "seeds": table.get("seeds"), "spread": table.get("spread"),
            "correct": [r.get("correct") for r in table["blocks"]], "oracle": table.get("oracle")}


def oracle_result(layout: ScoreResult, table: dict, source_hash: str | None = None) -> ScoreResult:
    """The oracle as a score result (oracle.json or healing_oracle.json, which `prune --ranking` and
    `agree` take): the blocks of `layout` (any scoring pass of the checkpoint) scored by their accuracy
    after removal, under the one score name "sensitivity" whichever oracle it is (its meta says which).

    The oracle reads no weights, so it carries no precision view, aggregate, histograms or distinct-value
    counts; its meta carries what `agree` needs for honest statistics (test videos, seeds, per-video results).
    """
    oracle = table.get("oracle") or {}
    note = HEALING_NOTE.format(steps=oracle.get("heal_steps")) if oracle.get("kind") == "healing" else ORACLE_NOTE
    return replace(layout, dtype_view="stored", primary=ORACLE, aggregate="mean", histograms=None,
                   blocks=[replace(b, distinct=None) for b in layout.blocks], scores={ORACLE: list(table["scores"])},
                   removes={ORACLE: "highest"}, meta={"note": note, "oracle": oracle_meta(table),
                                                      **({"source_hash": source_hash} if source_hash else {})})


# --- Table 3: the sweep ------------------------------------------------------------------------------

def _row(result: dict) -> dict:
    return {k: result.get(k) for k in ("params", "gflops", "top1", "top5", "uar", "videos")}


def sweep_table(plan: dict, run: RunDir) -> dict | None:
    """Table 3 from a sweep plan: accuracy per criterion and ratio (random: mean and std over seeds)."""
    baseline = run.result(plan["baseline"])
    results = {r["id"]: run.result(r["id"]) for r in plan["rows"]}
    if baseline is None or any(v is None for v in results.values()) or plan.get("waiting_for_oracle"):
        return None
    base = _row(baseline)
    base["interval"] = interval_of(base["top1"], base.get("videos"))
    cells: dict[tuple[str, float], list[dict]] = {}
    for row in plan["rows"]:
        cells.setdefault((row["criterion"], row["ratio"]), []).append({**row, **_row(results[row["id"]])})
    table = [_cell(name, ratio, members, base["top1"]) for (name, ratio), members in cells.items()]
    return {"baseline": base, "rows": table, "ratios": sorted({r["ratio"] for r in table}),
            "criteria": list(dict.fromkeys(r["criterion"] for r in table)), "classes": baseline.get("classes"),
            "videos": base.get("videos")}


def _cell(name: str, ratio: float, members: list[dict], base_top1: float) -> dict:
    """One (criterion, ratio) cell over its runs (several for random: one per seed)."""
    top1 = np.array([m["top1"] for m in members])
    videos = members[0].get("videos")
    return {"criterion": name, "ratio": ratio, "count": members[0]["count"],
            "removed": [m["removed"] for m in members] if len(members) > 1 else members[0]["removed"],
            "gflops": float(np.mean([m["gflops"] for m in members])), "top1": float(top1.mean()),
            "top1_std": float(top1.std(ddof=1)) if len(members) > 1 else None, "runs": len(members),
            "drop": float(base_top1 - top1.mean()), "videos": videos, "interval": runs_interval(top1, videos)}


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
