"""Who runs a run folder's queued jobs: this process, worker processes here, or a SLURM job array.

Every launcher ends in the same place, `work`: a worker that drains the folder's queue (queue.py).
- `none` (default): the command's own process runs the jobs (its `--shard` share).
- `local`: N `gardener worker RUN` processes on this machine, one GPU each when there are GPUs.
- `slurm`: a job array submitted with submitit; each array task is a worker that runs one job. On a
  time limit or preemption submitit calls `Worker.checkpoint`: the task gives its claim back and is
  requeued, and whichever worker takes the job next resumes its finetuning from the job's last
  checkpoint. `RUN/slurm/submit.sbatch` is the same array as a plain sbatch script, to submit by hand.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

from ..errors import GardenerError
from ..fileio import write_text
from .claims import release_mine
from .queue import STOPPING, QueueOptions, drain, failed_for_good, is_open, read_specs
from .runs import RunDir, open_existing

LAUNCHERS = ("none", "local", "slurm")
CLUSTERS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class Launch:
    """Where an experiment's jobs run (the command line's "Cluster" options)."""

    launcher: str = "none"
    local_workers: int = 1
    gpus_per_job: int = 1
    timeout_min: int = 240
    partition: Optional[str] = None
    array_parallelism: int = 16
    sbatch: Optional[list[str]] = None
    submitit_cluster: str = "slurm"

    def check(self) -> Launch:
        """One-line errors for values no launcher can use (before anything is written)."""
        if self.launcher not in LAUNCHERS:
            raise GardenerError(f"--launcher {self.launcher!r}: expected one of {', '.join(LAUNCHERS)}")
        if self.submitit_cluster not in CLUSTERS:
            raise GardenerError(f"--submitit-cluster {self.submitit_cluster!r}: expected one of {', '.join(CLUSTERS)}")
        for name in ("local_workers", "gpus_per_job", "timeout_min", "array_parallelism"):
            if getattr(self, name) < (0 if name == "gpus_per_job" else 1):
                raise GardenerError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a positive number")
        self.extra()
        return self

    def extra(self) -> dict[str, str]:
        """`--sbatch key=value` pairs as sbatch parameters."""
        out = {}
        for item in self.sbatch or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise GardenerError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. --sbatch account=myproject")
            out[key.strip().lstrip("-")] = value
        return out


def pending(run: RunDir, retries: int) -> list[str]:
    """Queued jobs still to run, in queue order."""
    return [s["id"] for s in read_specs(run.jobs) if is_open(run.jobs / s["id"], retries)]


def work(run_dir: Path, options: QueueOptions, say: Callable | None = None, progress: Callable | None = None,
         job_progress: Callable | None = None) -> dict[str, int]:
    """`gardener worker RUN`: drain the folder's queue; once every job of its plans is done, build the tables."""
    from .protocol import missing_jobs, queued_tasks, rebuild_tables

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


# --- local workers ----------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(k) for k in range(torch.cuda.device_count())]


def worker_command(run: Path, options: QueueOptions) -> list[str]:
    command = [sys.executable, "-m", "gardener", "worker", str(Path(run).resolve()), "--retries", str(options.retries),
               "--stale-after", f"{options.stale_after:g}"]
    if not options.wait:
        command.append("--no-wait")
    if options.max_jobs is not None:
        command += ["--max-jobs", str(options.max_jobs)]
    return command


def run_local_workers(run: RunDir, jobs: list, workers: int, options: QueueOptions,
                      progress: Callable | None = None) -> dict[str, int]:
    """Run `workers` worker processes on the run folder until its queue is drained (each on its own
    GPU, round robin, when there are GPUs; logs in RUN/workers/); counts for `jobs`."""
    before = {j.id for j in jobs if run.has_result(j)}
    gpus, logs = visible_gpus(), run.path / "workers"
    logs.mkdir(exist_ok=True)
    procs = []
    for k in range(workers):
        env = {key: v for key, v in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        with open(logs / f"worker-{k + 1}.log", "a") as log:
            procs.append(subprocess.Popen(worker_command(run.path, options), env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    try:
        while any(p.poll() is None for p in procs):
            if progress:
                progress(sum(1 for j in jobs if run.has_result(j)), len(jobs), None)
            time.sleep(0.5)
    finally:
        _stop(procs)
    done = {j.id for j in jobs if run.has_result(j)}
    failed = sum(1 for j in jobs if failed_for_good(run.jobs / j.id, options.retries))
    bad = [(k + 1, p.returncode) for k, p in enumerate(procs) if p.returncode]
    if bad and len(done) + failed < len(jobs):  # a worker that stopped on failed jobs has said so in failure.json
        k, code = bad[0]
        raise GardenerError(f"worker {k} exited with code {code}; see {logs / f'worker-{k}.log'}")
    return {"run": len(done - before), "cached": len(before), "elsewhere": 0, "failed": failed,
            "held": 0, "other_shards": 0}


def _stop(procs: list[subprocess.Popen]) -> None:
    """Workers still running when the command stops (Ctrl-C, SIGTERM) give their claims back and exit."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- SLURM through submitit ----------------------------------------------------------------------------

class Worker:
    """One SLURM array task: a worker that runs (at most) one queued job. Checkpointable: on a time limit
    or preemption it gives its claim back and submitit requeues it (the job resumes from its checkpoint)."""

    def __init__(self, run_dir: str, options: dict):
        self.run_dir, self.options = run_dir, options

    def __call__(self, index: int) -> dict[str, int]:
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


def write_sbatch(run: RunDir, launch: Launch, options: QueueOptions, tasks: int) -> Path:
    """RUN/slurm/submit.sbatch: the array as a plain sbatch script (`sbatch` it to add workers by hand)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = shlex.join(worker_command(run.path, options))
    logs = run.path / "slurm" / "manual"  # sbatch does not make the folders of its log files
    logs.mkdir(parents=True, exist_ok=True)
    text = _make_sbatch_string(command=command, folder=str(logs.resolve()),
                               job_name=f"gardener-{run.path.name}", partition=launch.partition,
                               time=launch.timeout_min, nodes=1, ntasks_per_node=1,
                               gpus_per_node=launch.gpus_per_job or None, map_count=tasks,
                               array_parallelism=launch.array_parallelism, stderr_to_stdout=True,
                               additional_parameters=launch.extra() or None)
    head = (f"# gardener: {tasks} worker task(s) for the queue of {run.path.resolve()}, each running one job.\n"
            f"# Re-submit by hand with `sbatch {run.path / 'slurm' / 'submit.sbatch'}`; watch with "
            f"`gardener status {run.path}`.\n")
    lines = text.splitlines(keepends=True)
    return write_text(run.path / "slurm" / "submit.sbatch", lines[0] + head + "".join(lines[1:]), force=True)


def submit_slurm(run: RunDir, launch: Launch, options: QueueOptions, say: Callable = print) -> dict:
    """Submit one array task per pending job; with submitit's local or debug cluster, wait for them
    (their processes are this one's children). Returns the submission."""
    submitit = _submitit()
    ids = pending(run, options.retries)
    if not ids:
        return {"submitted": 0}
    task_options = replace(options, wait=False, max_jobs=1)
    script = write_sbatch(run, launch, task_options, len(ids))
    executor = submitit.AutoExecutor(folder=run.path / "slurm" / "%j", cluster=launch.submitit_cluster,
                                     slurm_max_num_timeout=3)
    params = {"timeout_min": launch.timeout_min, "nodes": 1, "tasks_per_node": 1, "name": f"gardener-{run.path.name}"}
    if launch.submitit_cluster == "slurm":
        params.update(gpus_per_node=launch.gpus_per_job or None, slurm_array_parallelism=launch.array_parallelism,
                      slurm_partition=launch.partition, slurm_additional_parameters=launch.extra() or None)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    try:
        jobs = executor.map_array(Worker(str(run.path.resolve()), asdict(task_options)), range(len(ids)))
    except Exception as exc:  # sbatch refused the array (a partition, an account, a limit)
        raise GardenerError(f"submitting the array failed: {' '.join(str(exc).split())[:400]}; the {len(ids)} jobs stay "
                            f"queued in {run.path}: fix the options and run the same command again, or edit and "
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
    return {"submitted": len(jobs), "job_ids": [j.job_id for j in jobs], "script": str(script),
            "done": len(ids) - len(left) - sum(1 for i in ids if failed_for_good(run.jobs / i, options.retries)),
            "failed": sum(1 for i in ids if failed_for_good(run.jobs / i, options.retries))}
