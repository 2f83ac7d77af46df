"""A run folder's plans (sensitivity/healing/sweep.plan.json) and the tables built from them.

A plan is written beside the results, so that `collect`, `report` and the last worker need no
arguments: `rebuild_tables` builds the table of every plan whose jobs are all done, from the job
results and the run folder's scores.json. Which jobs the plans name, and which still lack a result,
is the run folder's own bookkeeping (`runs.plan_job_ids`, `runs.missing_jobs`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import GardenerError
from ..scoring import ScoreResult
from .identity import decisive
from .protocol import layout_scores
from .results import HEALING, ORACLE, finish_tables, write_json
from .runs import RunDir, collect, missing_jobs, open_existing, read_plan


def write_plan(run: RunDir, kind: str, plan: dict) -> None:
    """Write the plan of `kind` ("sensitivity", "healing", "sweep"). A plan already there that was made with
    other settings (recipe, data, clips, seed, heal steps) is refused, not replaced: its table would be
    another experiment's; the same experiment with other criteria, ratios or seeds replaces it."""
    path = run.path / f"{kind}.plan.json"
    if path.is_file():
        changed = plan_changes(path, plan)
        if changed:
            raise GardenerError(f"{run.path}: its {kind} was run with other settings ({changed}); run this one in "
                                f"another run folder (its jobs' results there stay as they are)")
    write_json(path, plan)


def plan_changes(path: Path, plan: dict) -> str | None:
    """What differs, in what decides the results, between the plan in `path` and `plan`; None when nothing
    (or when the old plan cannot be read: it is replaced)."""
    from ..train.state import changes_said

    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        return None
    return changes_said({"settings": decisive(old["settings"])}, {"settings": decisive(plan["settings"])})


def rebuild_tables(run: RunDir) -> dict:
    """After `collect` or the last worker: the tables of every plan in the run folder whose jobs are all
    done (scores from its scores.json, the sweep's one scoring pass, when there is one; an oracle run
    alone makes the cheap pass it would have made, for its ranking file's block layout)."""
    plans = {kind: read_plan(path) for kind in (ORACLE, HEALING, "sweep")
             if (path := run.path / f"{kind}.plan.json").is_file()}
    scores_file = run.path / "scores.json"
    scores = ScoreResult.load(scores_file) if scores_file.is_file() else None
    source = Path(run.info.get("source", ""))
    if scores is None and set(plans) & {ORACLE, HEALING} and source.exists() and missing_jobs(run) == 0:
        scores = layout_scores(source)
    return finish_tables(run, plans, scores)


def collect_runs(run_dir: str | Path, others: list[Path], warn: Callable[[str], None] | None = None) -> dict:
    """`gardener collect`: copy the other shards' job results into RUN and rebuild its tables.

    Returns how many results were copied, the tables built (by kind) and how many jobs of the plans
    still have no result (the caller decides whether that is an error). A result in RUN that is not its
    job's own stops it (`InvalidResult`, naming the file); one in another folder is not merged (`warn`)."""
    run = open_existing(run_dir)
    copied = collect(run, list(others), warn)
    return {"copied": copied, "tables": rebuild_tables(run), "missing": missing_jobs(run)}
