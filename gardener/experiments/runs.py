"""Run directories and jobs: "prune these blocks, finetune with this recipe on this data, evaluate".

A job's identity is a hash of (source checkpoint hash, removed blocks, recipe, data, clips, seed, and
whether it keeps the checkpoint's classifier head: the healing oracle's jobs do).
Its result lives in RUN/jobs/<id>/result.json and is never recomputed, so experiments that
share a job share its result, a killed run resumes where it stopped (the interrupted job's
finetuning resumes from its last checkpoint), and `--shard i/n` splits a plan without any
coordination: shard i takes every n-th job. Jobs are claimed before they run (queue.py), so
workers and invocations sharing a folder never run one twice.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GardenerError
from ..fileio import check_writable, write_text
from ..settings import read_json
from ..manifest import source_hash, versions  # noqa: F401  (source_hash: runs.source_hash for callers)
from .identity import Job, Settings  # noqa: F401  (Settings: runs.Settings for callers)
from .queue import QueueOptions, drain, lockstep, set_aside_invalid
from .validation import InvalidResult, read_result


@dataclass
class RunDir:
    """A run folder: run.json (the source it belongs to) and jobs/<id>/result.json."""

    path: Path
    source_hash: str
    info: dict = field(default_factory=dict)

    @property
    def jobs(self) -> Path:
        return self.path / "jobs"

    def result(self, job: Job | str) -> dict | None:
        """The job's result, checked against the job and this run (`InvalidResult` when it is not its own);
        None while it has none."""
        return read_result(self.jobs / (job if isinstance(job, str) else job.id), self.source_hash)

    def has_result(self, job: Job | str) -> bool:
        """Whether the job is done (an invalid result does not count: the job runs again)."""
        try:
            return self.result(job) is not None
        except InvalidResult:
            return False

    def results(self, jobs: list[Job]) -> dict[str, dict]:
        return {j.id: r for j in jobs if (r := self.result(j)) is not None}


def open_run(path: str | Path, source: str | Path, digest: str) -> RunDir:
    """Create a run folder for `source`, or open one made for the same checkpoint."""
    path = Path(path)
    marker = path / "run.json"
    if process_rank() != 0:  # under a multi-process launch rank 0 creates the folder
        wait_for(marker, timeout=600)
    if marker.is_file():
        info = open_existing(path).info
        if info["source_hash"] != digest:
            raise GardenerError(f"{path}: this run folder was made for another checkpoint ({info.get('source')}, "
                                f"hash {info['source_hash'][:12]}), not {source} (hash {digest[:12]}); "
                                f"use a new run folder")
        return RunDir(path, digest, info)
    if path.exists() and any(path.iterdir()):
        raise GardenerError(f"{path}: exists and is not a gardener run folder (no run.json)")
    check_writable(path, force=True)
    path.mkdir(parents=True, exist_ok=True)
    info = {"source": str(Path(source).resolve()), "source_hash": digest, "created": time.time(),
            "versions": versions()}
    write_text(marker, json.dumps(info, indent=2) + "\n")
    return RunDir(path, digest, info)


def open_existing(path: str | Path) -> RunDir:
    """A run folder that must exist already (a worker's, `status`'s, `collect`'s)."""
    marker = Path(path) / "run.json"
    if not marker.is_file():
        raise GardenerError(f"{path}: not a gardener run folder (no run.json)")
    info = read_json(marker)
    if not isinstance(info, dict) or not isinstance(info.get("source_hash"), str):
        raise GardenerError(f"{marker}: does not record the checkpoint the run folder was made for")
    return RunDir(Path(path), info["source_hash"], info)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'2/4' -> (1, 4): this shard's 0-based index and the shard count."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise GardenerError(f"--shard {text!r}: expected i/n, e.g. 1/2") from None
    if not 1 <= index <= count:
        raise GardenerError(f"--shard {text!r}: i must be between 1 and n")
    return index - 1, count


def unique(jobs: list[Job]) -> list[Job]:
    """Jobs in first-seen order, each once."""
    seen, out = set(), []
    for job in jobs:
        if job.id not in seen:
            seen.add(job.id)
            out.append(job)
    return out


JobRunner = Callable[[Job, Path], dict]


def process_rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when run alone)."""
    return int(os.environ.get("RANK", "0"))


def wait_for(path: Path, timeout: float = 3600.0) -> None:
    """Other ranks wait for what rank 0 writes (a pruned checkpoint, a job result)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise GardenerError(f"rank {process_rank()}: gave up waiting for {path}")
        time.sleep(0.2)


def run_jobs(run: RunDir, tasks: list, shard: tuple[int, int] = (0, 1), options=None,
             progress: Callable | None = None) -> dict[str, int]:
    """Run this shard's jobs that have no result yet, claiming each (so that other workers and other
    invocations on the same folder never run it twice); returns counts of jobs run here, found done,
    done elsewhere meanwhile, failed for good, held by others, and left to other shards."""
    options = options or QueueOptions()
    index, count = shard
    mine = [task for k, task in enumerate(tasks) if k % count == index]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank trains every job, together
        counts = lockstep(run.path, mine, options, process_rank())
    else:
        counts = drain(run.path, lambda: mine, options, progress)
    return {**counts, "other_shards": len(tasks) - len(mine)}


def collect(run: RunDir, others: list[Path], warn: Callable[[str], None] | None = None) -> int:
    """Copy finished job results (and plans) from other run folders of the same checkpoint; returns how many.
    A result that is not its job's own (`validation`) is not copied; `warn` is told which and why."""
    copied = 0
    for other in others:
        if open_existing(other).source_hash != run.source_hash:
            raise GardenerError(f"{other}: was made for another checkpoint than {run.path}")
        for result in sorted((Path(other) / "jobs").glob("*/result.json")):
            target = run.jobs / result.parent.name / "result.json"
            if run.has_result(result.parent.name):
                continue
            try:
                read_result(result.parent, run.source_hash)
            except InvalidResult as exc:
                if warn:
                    warn(f"not merged: {exc}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            set_aside_invalid(target.parent)  # an invalid result of its own is kept, not overwritten
            shutil.copy2(result, target)
            copied += 1
        for plan in Path(other).glob("*.plan.json"):
            if not (run.path / plan.name).exists():
                shutil.copy2(plan, run.path / plan.name)
    return copied


def read_plan(path: Path) -> dict:
    """A plan file of the run folder (sensitivity/healing/sweep.plan.json), checked to be readable."""
    plan = read_json(path, "; run the command that wrote it again")
    if not isinstance(plan, dict):
        raise GardenerError(f"{path}: not a plan (a JSON object); run the command that wrote it again")
    return plan


def plan_job_ids(run: RunDir) -> list[str]:
    """Every job the run folder's plans name (read from its *.plan.json files alone)."""
    ids: set[str] = set()
    for plan_file in run.path.glob("*.plan.json"):
        plan = read_plan(plan_file)
        ids |= {j["id"] for j in plan.get("jobs", [])} | {r["id"] for r in plan.get("rows", [])}
        if plan.get("baseline"):
            ids.add(plan["baseline"])
    return sorted(ids)


def missing_jobs(run: RunDir) -> int:
    """Jobs named by the run folder's plans that have no (valid) result yet."""
    return sum(1 for i in plan_job_ids(run) if not run.has_result(i))
