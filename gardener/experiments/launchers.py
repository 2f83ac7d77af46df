"""Launchers: who runs a run folder's queued jobs. `--launcher none|local|slurm` becomes one here, in
`launcher_for` (the one place that reads the launcher's name), and the rest of gardener calls its steps:

- `prepare(sharded)`: the checks that need no run folder, before anything is written (submitit and
  sbatch present; no `--shard` or torchrun beside workers that share out the jobs themselves);
- `execute(exp, jobs, ...)`: run the queued jobs, or leave them queued for later;
- `finish(exp, result, say)`: once the command's plans are written: submit the queue, and build the
  tables when its jobs ran meanwhile; returns the command's result.

`Here` (`none`) runs the jobs in this process (its `--shard` share); `LocalWorkers` (`local`) starts
worker processes on this machine (local.py); `Slurm` (`slurm`) submits a job array (slurm.py). Each
worker drains the same queue (worker.py), so jobs are claimed and resumed alike whoever runs them.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ..errors import GardenerError
from .launch import Launch
from .local import run_local_workers
from .plans import rebuild_tables
from .protocol import Experiment, job_runner, queue_jobs, task
from .queue import failed_for_good, forget_failures
from .runs import Job, missing_jobs, process_rank, run_jobs, unique
from .slurm import check_slurm, submit_slurm


class Launcher(Protocol):
    """What every launcher does (see the module's docstring)."""

    launch: Launch

    def prepare(self, sharded: bool) -> None: ...

    def execute(self, exp: Experiment, jobs: list[Job], shard: tuple[int, int], callbacks=None,
                progress: Callable | None = None, job_progress: Callable | None = None) -> dict[str, int]: ...

    def finish(self, exp: Experiment, result: dict, say: Callable[[str], None]) -> dict: ...


@dataclass(frozen=True)
class Here:
    """`--launcher none`: this process runs the jobs (its `--shard` share; every rank together under torchrun)."""

    launch: Launch = Launch()

    def prepare(self, sharded: bool) -> None:
        """Nothing to check: this process can always run its own jobs."""

    def execute(self, exp: Experiment, jobs: list[Job], shard: tuple[int, int], callbacks=None,
                progress: Callable | None = None, job_progress: Callable | None = None) -> dict[str, int]:
        runner = job_runner(exp, callbacks, job_progress)
        return run_jobs(exp.run, [task(job, runner) for job in jobs], shard, replace(exp.queue, raise_errors=True),
                        progress)

    def finish(self, exp: Experiment, result: dict, say: Callable[[str], None]) -> dict:
        return result


@dataclass(frozen=True)
class LocalWorkers:
    """`--launcher local`: `--local-workers` worker processes on this machine, one GPU each when there are GPUs."""

    launch: Launch

    def prepare(self, sharded: bool) -> None:
        _alone(self.launch, sharded)

    def execute(self, exp: Experiment, jobs: list[Job], shard: tuple[int, int], callbacks=None,
                progress: Callable | None = None, job_progress: Callable | None = None) -> dict[str, int]:
        return run_local_workers(exp.run, jobs, self.launch.local_workers, exp.queue, progress)

    def finish(self, exp: Experiment, result: dict, say: Callable[[str], None]) -> dict:
        return result


@dataclass(frozen=True)
class Slurm:
    """`--launcher slurm`: the jobs stay queued until the command ends, then a job array drains them."""

    launch: Launch

    def prepare(self, sharded: bool) -> None:
        _alone(self.launch, sharded)
        check_slurm(self.launch)

    def execute(self, exp: Experiment, jobs: list[Job], shard: tuple[int, int], callbacks=None,
                progress: Callable | None = None, job_progress: Callable | None = None) -> dict[str, int]:
        done = sum(1 for job in jobs if exp.run.has_result(job))
        return {"run": 0, "cached": done, "other_shards": 0, "queued": len(jobs) - done}

    def finish(self, exp: Experiment, result: dict, say: Callable[[str], None]) -> dict:
        """Submit the queue; with submitit's local or debug cluster the array ran here: build the tables now."""
        submitted = submit_slurm(exp.run, self.launch, exp.queue, say=say)
        if self.launch.submitit_cluster == "slurm":
            return result
        result = {**result, "table": rebuild_tables(exp.run).get(result.get("kind", "sweep"))}
        result["counts"] = {**result["counts"], "run": submitted.get("done", 0), "failed": submitted.get("failed", 0),
                            "queued": 0}
        return result


LAUNCHERS: dict[str, Callable[[Launch], Launcher]] = {"none": Here, "local": LocalWorkers, "slurm": Slurm}


def launcher_for(launch: Launch) -> Launcher:
    """The launcher that `--launcher` names; a name it does not know is a one-line error."""
    make = LAUNCHERS.get(launch.launcher)
    if make is None:
        raise GardenerError(f"--launcher {launch.launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    return make(launch)


def _alone(launch: Launch, sharded: bool) -> None:
    """Workers share out the jobs themselves: no `--shard`, and no torchrun / accelerate launch around them."""
    if sharded:
        raise GardenerError(f"--shard with --launcher {launch.launcher}: workers share out the jobs themselves; "
                            f"give one or the other")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise GardenerError(f"--launcher {launch.launcher} under torchrun / accelerate launch: run the command once; "
                            f"its workers are the processes")


def execute(exp: Experiment, jobs: list[Job], shard: tuple[int, int] = (0, 1), callbacks=None,
            progress: Callable | None = None, job_progress: Callable | None = None) -> dict[str, int]:
    """Queue the jobs (a new command tries failed jobs again), then let the experiment's launcher run them:
    here (this shard's share), by local worker processes, or later (`slurm`: `finish` submits the queue)."""
    jobs = unique(jobs)
    for job in jobs if process_rank() == 0 else []:
        if failed_for_good(exp.run.jobs / job.id, exp.queue.retries):
            forget_failures(exp.run.jobs / job.id)
    queue_jobs(exp, jobs)
    return launcher_for(exp.launch).execute(exp, jobs, shard, callbacks, progress, job_progress)


def run_to_end(exp: Experiment, step: Callable[[], dict], say: Callable[[str], None]) -> dict | None:
    """Run an experiment step (`run_sweep`, `run_sensitivity`) with the experiment's launcher and let it finish;
    the step's result once every job of the run folder's plans has one, None while some wait in a queue (a SLURM
    array on a cluster: the same call picks up the results when made again). A sweep that waited for the oracle
    is stepped again once the launcher has run the oracle meanwhile (submitit's local or debug cluster)."""
    launcher = launcher_for(exp.launch)
    result = launcher.finish(exp, step(), say)
    if result.get("waiting_for_oracle") and (exp.run.path / "sensitivity.json").is_file():
        result = launcher.finish(exp, step(), say)
    failed = result["counts"].get("failed")
    if failed:
        raise GardenerError(f"{exp.run.path}: {failed} job(s) failed; `gardener status {exp.run.path}` says why")
    if result.get("waiting_for_oracle") or missing_jobs(exp.run):
        return None
    return result
