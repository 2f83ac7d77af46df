"""What a job is: the settings every job of an experiment shares, and the blocks one job removes.

A job's identity is a hash of (source checkpoint hash, removed blocks, recipe, data, clips, seed,
whether it keeps the checkpoint's classifier head: the healing oracle's jobs do, and its task), so a result file can
be checked against the job it claims to be (`validation.py`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

VIDEO = "video-classification"  # the task of every run folder made before there were others


@dataclass(frozen=True)
class Settings:
    """Everything but the removed blocks that decides a job's result."""

    source: str
    source_hash: str
    data: dict
    recipe: dict
    clip: dict
    seed: int = 0
    keep_head: bool = False  # the healing oracle's jobs train on the checkpoint's own classifier head
    task: str = VIDEO  # the task its jobs are trained and judged on (tasks registry)

    def job(self, removed: list[int] | tuple[int, ...], seed: int | None = None) -> Job:
        """The job removing `removed`; `seed` repeats it with another finetuning seed (the oracle's seeds)."""
        return Job(self, tuple(sorted(int(b) for b in removed)), None if seed in (None, self.seed) else int(seed))


@dataclass(frozen=True)
class Job:
    """One job: the experiment's settings and the blocks it removes (and its own seed, for an oracle's repeats)."""

    settings: Settings
    removed: tuple[int, ...]
    seed: int | None = None  # None: the settings' seed

    @property
    def finetune_seed(self) -> int:
        return self.settings.seed if self.seed is None else self.seed

    @property
    def id(self) -> str:
        s = self.settings
        key = {"source": s.source_hash, "removed": list(self.removed), "recipe": s.recipe, "data": s.data,
               "clip": s.clip, "seed": self.finetune_seed}
        if s.keep_head:  # only then, so that the ids of every other job stay what they were
            key["head"] = "kept"
        if s.task != VIDEO:  # likewise: a video job's id is what it was before there were other tasks
            key["task"] = s.task
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def decisive(settings: dict) -> dict:
    """The recorded settings (a plan's) that enter every job's id, as `Job.id` uses them: the checkpoint's
    hash (not its path), data, recipe, clips, seed, whether the head is kept (unset: not) and the task."""
    return {"task": settings.get("task") or VIDEO, "source_hash": settings.get("source_hash"), "data": settings.get("data"),
            "recipe": settings.get("recipe"), "clip": settings.get("clip"), "seed": settings.get("seed"),
            "keep_head": bool(settings.get("keep_head"))}
