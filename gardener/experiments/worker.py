"""`gardener worker RUN`: a worker drains a run folder's queue, and the last one builds its tables.

Every launcher's jobs end in the queue (queue.py) that workers drain: the command's own process
(`--launcher none`), worker processes on this machine (local.py) or SLURM array tasks (slurm.py);
workers started by hand, on any machine that shares the folder, join them.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import GardenerError
from .plans import rebuild_tables
from .protocol import queued_tasks
from .queue import QueueOptions, drain, is_open, read_specs
from .runs import RunDir, missing_jobs, open_existing


def pending(run: RunDir, retries: int) -> list[str]:
    """Queued jobs still to run, in queue order."""
    return [s["id"] for s in read_specs(run.jobs) if is_open(run.jobs / s["id"], retries)]


def worker_command(run: Path, options: QueueOptions) -> list[str]:
    """The command line of a `gardener worker` on the run folder, with the queue options."""
    command = [sys.executable, "-m", "gardener", "worker", str(Path(run).resolve()), "--retries", str(options.retries),
               "--stale-after", f"{options.stale_after:g}"]
    if not options.wait:
        command.append("--no-wait")
    if options.max_jobs is not None:
        command += ["--max-jobs", str(options.max_jobs)]
    return command


def work(run_dir: Path, options: QueueOptions, say: Callable | None = None, progress: Callable | None = None,
         job_progress: Callable | None = None) -> dict[str, int]:
    """`gardener worker RUN`: drain the folder's queue; once every job of its plans is done, build the tables."""
    run = open_existing(run_dir)
    unreadable: dict[str, str] = {}
    counts = drain(run.path, queued_tasks(run, progress=job_progress, unreadable=unreadable), options.check(),
                   progress, say)
    if counts["run"] and missing_jobs(run) == 0:
        rebuild_tables(run)
    if unreadable:  # the other jobs ran; these could not be read, and say so
        first = next(iter(unreadable.values()))
        raise GardenerError(first if len(unreadable) == 1 else f"{len(unreadable)} queued jobs cannot be read, "
                                                                 f"e.g. {first}")
    return counts
