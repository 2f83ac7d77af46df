"""`--launcher slurm`: the run folder's queue drained by a SLURM job array, submitted with submitit.

Each array task is a worker (worker.py) that runs one job. On a time limit or preemption submitit
calls `Worker.checkpoint`: the task gives its claim back and is requeued, and whichever worker takes
the job next resumes its finetuning from the job's last checkpoint. `RUN/slurm/submit.sbatch` is the
same array as a plain sbatch script, written by `sbatch_script` from the launch settings, to submit by
hand (`sbatch RUN/slurm/submit.sbatch` adds workers).
"""
from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import GardenerError
from ..fileio import write_text
from .claims import release_mine
from .launch import Launch
from .queue import STOPPING, QueueOptions, failed_for_good
from .runs import RunDir
from .worker import pending, work, worker_command

SIGNAL = "USR2@90"  # SLURM's warning 90 s before the time limit: the worker gives its claim back (cli/cluster.py)


class Worker:
    """One SLURM array task: a worker that runs (at most) one queued job. Checkpointable: on a time limit
    or preemption it gives its claim back and submitit requeues it (the job resumes from its checkpoint)."""

    def __init__(self, run_dir: str, options: dict):
        self.run_dir, self.options = run_dir, options

    def __call__(self, index: int) -> dict[str, int]:
        from ..plugins import load_plugins
        from ..threads import set_threads, worker_line

        load_plugins()  # submitit starts the task here, not through the `gardener` command
        set_threads()  # the task's CPUs (its affinity: --sbatch cpus-per-task), not the node's
        print(worker_line(os.getpid()), flush=True)
        return work(Path(self.run_dir), QueueOptions(**self.options), say=lambda line: print(line, flush=True))

    def checkpoint(self, *args, **kwargs):
        import submitit

        STOPPING.set()  # what the job raises from here on is the scheduler's stop, not its failure
        released = release_mine(Path(self.run_dir) / "jobs")
        print(f"gardener worker: requeued by the scheduler; {released} claim(s) given back", flush=True)
        return submitit.helpers.DelayedSubmission(Worker(self.run_dir, self.options), *args, **kwargs)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise GardenerError('--launcher slurm needs submitit: pip install "vit-gardener[slurm]"') from None
    return submitit


def check_slurm(launch: Launch) -> None:
    """Before the run folder is written: submitit is there, and so is SLURM when it is the cluster."""
    _submitit()
    if launch.submitit_cluster == "slurm" and shutil.which("sbatch") is None:
        raise GardenerError("--launcher slurm: sbatch is not on this machine's PATH; submit from a SLURM login node, "
                            "or use --launcher local (or --submitit-cluster local to try the array here)")


def sbatch_script(run: RunDir, launch: Launch, options: QueueOptions, tasks: int) -> str:
    """The array of `tasks` worker tasks as a plain sbatch script, from the launch settings.

    Written here because submitit's public API has no function that renders an sbatch script without
    submitting it (its renderer is private). The parameters are those the submitted array gets; each
    `--sbatch key=value` becomes `#SBATCH --key=value` (replacing a parameter of the same name)."""
    logs = (run.path / "slurm" / "manual").resolve() / "%A_%a_0_log.out"  # stderr goes with stdout
    params = {"job-name": f"gardener-{run.path.name}", "partition": launch.partition, "time": launch.timeout_min,
              "nodes": 1, "ntasks-per-node": 1, "gpus-per-node": launch.gpus_per_job or None,
              "array": f"0-{tasks - 1}%{min(tasks, launch.array_parallelism)}", "output": logs, "error": logs,
              "open-mode": "append", "signal": SIGNAL, **launch.extra()}
    lines = ["#!/bin/bash",
             f"# gardener: {tasks} worker task(s) for the queue of {run.path.resolve()}, each running one job.",
             f"# Re-submit by hand with `sbatch {run.path / 'slurm' / 'submit.sbatch'}`; watch with "
             f"`gardener status {run.path}`.",
             *[f"#SBATCH --{key}" + (f"={shlex.quote(str(value))}" if value != "" else "")
               for key, value in params.items() if value is not None],
             "", f"srun --unbuffered {shlex.join(worker_command(run.path, options))}"]
    return "\n".join(lines) + "\n"


def write_sbatch(run: RunDir, launch: Launch, options: QueueOptions, tasks: int) -> Path:
    """RUN/slurm/submit.sbatch: the array as a plain sbatch script (`sbatch` it to add workers by hand)."""
    (run.path / "slurm" / "manual").mkdir(parents=True, exist_ok=True)  # sbatch does not make its logs' folders
    return write_text(run.path / "slurm" / "submit.sbatch", sbatch_script(run, launch, options, tasks), force=True)


def _executor(run: RunDir, launch: Launch):
    """submitit's executor for the array, with the launch settings as its parameters."""
    executor = _submitit().AutoExecutor(folder=run.path / "slurm" / "%j", cluster=launch.submitit_cluster,
                                        slurm_max_num_timeout=3)
    params = {"timeout_min": launch.timeout_min, "nodes": 1, "tasks_per_node": 1, "name": f"gardener-{run.path.name}"}
    if launch.submitit_cluster == "slurm":
        params.update(gpus_per_node=launch.gpus_per_job or None, slurm_array_parallelism=launch.array_parallelism,
                      slurm_partition=launch.partition, slurm_additional_parameters=launch.extra() or None)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def submit_slurm(run: RunDir, launch: Launch, options: QueueOptions, say: Callable = print) -> dict:
    """Submit one array task per pending job; with submitit's local or debug cluster, wait for them
    (their processes are this one's children). Returns the submission."""
    _submitit()
    ids = pending(run, options.retries)
    if not ids:
        return {"submitted": 0}
    task_options = replace(options, wait=False, max_jobs=1)
    script = write_sbatch(run, launch, task_options, len(ids))
    executor = _executor(run, launch)
    try:
        jobs = executor.map_array(Worker(str(run.path.resolve()), asdict(task_options)), range(len(ids)))
    except Exception as exc:  # sbatch refused the array (a partition, an account, a limit)
        raise GardenerError(f"submitting the array failed: {' '.join(str(exc).split())[:400]}; the {len(ids)} jobs "
                            f"stay queued in {run.path}: fix the options and run the same command again, or edit and "
                            f"`sbatch {script}`") from None
    say(f"submitted {len(jobs)} worker task(s) ({launch.submitit_cluster}): {jobs[0].job_id.split('_')[0]}; "
        f"script: {script}")
    if launch.submitit_cluster != "slurm":
        for job in jobs:
            job.wait()
        errors = [f"{job.job_id}: {exc}" for job in jobs if (exc := job.exception()) is not None]
        if errors:
            raise GardenerError(f"worker task {errors[0]}")
    left = pending(run, options.retries)
    failed = sum(1 for i in ids if failed_for_good(run.jobs / i, options.retries))
    return {"submitted": len(jobs), "job_ids": [j.job_id for j in jobs], "script": str(script),
            "done": len(ids) - len(left) - failed, "failed": failed}
