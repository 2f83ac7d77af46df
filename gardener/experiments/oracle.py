"""The sensitivity oracle as jobs: the unpruned model and every single-block removal, finetuned (Table 1).

Its accuracies rank the blocks (lower accuracy after removal = more important). With `heal_steps` it is
the healing oracle instead: every job starts from the given (task-finetuned) classifier, head included,
and trains only K steps, orders of magnitude cheaper than the full recipe; its jobs and files
(healing.json, healing_oracle.json) are its own, so both oracles can share a run folder.
"""
from __future__ import annotations

from dataclasses import asdict, replace

from ..scoring import ScoreResult
from .launchers import execute
from .plans import write_plan
from .protocol import Experiment, check_heal_steps, layout_scores
from .results import HEALING, ORACLE, finish_tables
from .runs import Job


def sensitivity_jobs(exp: Experiment) -> list[Job]:
    """The unpruned baseline, then each single block removed; all of them once per oracle seed."""
    seeds = [exp.settings.seed + k for k in range(exp.oracle_seeds)]
    return [exp.job(removed, seed) for seed in seeds for removed in [[]] + [[b] for b in range(1, exp.depth + 1)]]


def healing(exp: Experiment, heal_steps: int) -> Experiment:
    """The experiment of the healing oracle: its jobs keep the checkpoint's classifier head and train
    exactly `heal_steps` optimizer steps, with a warmup of at most that many (the given warmup steps,
    else none: a warmup in epochs would span the whole run); every other setting is the experiment's."""
    check_heal_steps(heal_steps, exp.settings.task)
    recipe = replace(exp.recipe, max_steps=heal_steps, epochs=None,
                     warmup_steps=min(exp.recipe.warmup_steps or 0, heal_steps))
    return replace(exp, recipe=recipe, settings=replace(exp.settings, recipe=recipe.to_dict(), keep_head=True))


def oracle_plan(exp: Experiment, kind: str, jobs: list[Job]) -> dict:
    """The plan of an oracle: its jobs, settings, and which oracle it is ("full" finetuning with the
    experiment's recipe, or "healing" of the given checkpoint for K steps)."""
    head = "kept" if exp.settings.task == "causal-lm" else "fresh"  # a language model's head is its own
    oracle = {"kind": "full", "head": head} if kind == ORACLE else {
        "kind": "healing", "heal_steps": exp.recipe.max_steps, "warmup_steps": exp.recipe.warmup_steps, "head": "kept"}
    return {"kind": kind, "oracle": oracle, "depth": exp.depth, "seeds": exp.oracle_seeds,
            "jobs": [{"id": j.id, "removed": list(j.removed), "seed": j.finetune_seed} for j in jobs],
            "settings": asdict(exp.settings)}


def run_sensitivity(exp: Experiment, shard=(0, 1), callbacks=None, progress=None, job_progress=None,
                    scores: ScoreResult | None = None, heal_steps: int | None = None) -> dict:
    """Run (this shard's part of) the oracle; returns the table when every job has a result.

    `heal_steps` K makes it the healing oracle (`healing`): sensitivity plan, jobs and files of its own
    (healing.json, healing_oracle.json). `scores` is the experiment's scoring pass (a sweep's), whose
    blocks the oracle's ranking file names; alone, the oracle reads the blocks' layout (no criterion,
    no weight read) once every job has a result.
    """
    kind = ORACLE if heal_steps is None else HEALING
    exp = exp if heal_steps is None else healing(exp, heal_steps)
    jobs = sensitivity_jobs(exp)
    plan = oracle_plan(exp, kind, jobs)
    write_plan(exp.run, kind, plan)
    counts = execute(exp, jobs, shard, callbacks, progress, job_progress)
    if scores is None and all(exp.run.has_result(job) for job in jobs):
        scores = layout_scores(exp.source)
    return {"counts": counts, "kind": kind, "table": finish_tables(exp.run, {kind: plan}, scores).get(kind)}
