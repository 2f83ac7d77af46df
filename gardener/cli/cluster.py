"""Commands that drain and watch a run folder's job queue: worker, status."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import typer

from ..errors import GardenerError, Terminated
from ._app import app, live_progress, out, say

RUN_ARG = typer.Argument(..., help="Run folder of `gardener sweep` / `sensitivity` (its jobs are queued there).")
RETRIES_OPT = typer.Option(1, "--retries", help="Try a failed job this many more times before it counts as failed.")
STALE_OPT = typer.Option(300.0, "--stale-after", help="Seconds without a heartbeat after which a claim is stale "
                         "(its worker died) and is taken over.")


@app.command(rich_help_panel="Cluster")
def worker(
    run_dir: Path = RUN_ARG, retries: int = RETRIES_OPT, stale_after: float = STALE_OPT,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for jobs other workers hold (taking over those "
                              "that go stale) until the queue is empty; --no-wait: stop when nothing is free."),
    max_jobs: int = typer.Option(None, "--max-jobs", help="Stop after finishing this many jobs."),
) -> None:
    """Run queued jobs of a run folder until none is left; start any number, on any machines that share it."""
    from ..experiments.worker import work
    from ..experiments.queue import QueueOptions
    from ..report.console import counts_line

    from ..threads import worker_line

    options = QueueOptions(retries=retries, stale_after=stale_after, wait=wait, max_jobs=max_jobs).check()
    say(worker_line(os.getpid()))
    previous = signal.signal(signal.SIGUSR2, _requeued)  # SLURM's warning before a time limit
    live = live_progress("queued jobs")
    try:
        with live:
            counts = work(run_dir, options, say=say, progress=live.job, job_progress=live.step)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    say(counts_line(counts))
    if counts["failed"]:
        raise GardenerError(f"{run_dir}: {counts['failed']} job(s) failed; `gardener status {run_dir}` says why")


def _requeued(signum, frame):
    raise Terminated()  # the claim is given back on the way out; another worker resumes the job


@app.command(rich_help_panel="Cluster")
def status(
    run_dir: Path = RUN_ARG, as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    retries: int = RETRIES_OPT, stale_after: float = STALE_OPT,
) -> None:
    """Jobs of a run folder: done, running (where, how long), failed (why), pending; and the time left."""
    from ..experiments.queue import QueueOptions
    from ..experiments.runs import open_existing
    from ..experiments.status import run_status
    from ..report.console import status_lines, status_table

    QueueOptions(retries=retries, stale_after=stale_after).check()
    state = run_status(open_existing(run_dir), retries, stale_after)
    if as_json:
        print(json.dumps(state, indent=2))
        return
    out.print(status_table(state))
    for line in status_lines(state):
        out.print(line, highlight=False, markup=False)
