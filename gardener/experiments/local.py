"""`--launcher local`: worker processes on this machine drain the run folder's queue.

Each is a `gardener worker RUN` process (worker.py) on its own GPU, round robin, when there are GPUs;
what each prints goes to RUN/workers/worker-K.log (and, job by job, to RUN/jobs/<id>/log.txt).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from ..errors import GardenerError
from .queue import QueueOptions, failed_for_good
from .runs import Job, RunDir
from .worker import worker_command


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(k) for k in range(torch.cuda.device_count())]


def run_local_workers(run: RunDir, jobs: list[Job], workers: int, options: QueueOptions,
                      progress: Callable | None = None) -> dict[str, int]:
    """Run `workers` worker processes on the run folder until its queue is drained (each on its own
    GPU, round robin, when there are GPUs; logs in RUN/workers/); counts for `jobs`."""
    before = {j.id for j in jobs if run.has_result(j)}
    logs = run.path / "workers"
    logs.mkdir(exist_ok=True)
    procs = _start(run, workers, options)
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


def _start(run: RunDir, workers: int, options: QueueOptions) -> list[subprocess.Popen]:
    """The worker processes, each writing to its log in RUN/workers/ (appended: a rerun keeps the last one's)."""
    from ..threads import ENV, chosen, per_worker

    gpus, procs, share = visible_gpus(), [], chosen() is None  # the machine's cores shared, unless the user chose
    for k in range(workers):
        env = {key: v for key, v in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        if share:
            env[ENV] = str(per_worker(workers))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        with open(run.path / "workers" / f"worker-{k + 1}.log", "a") as log:
            procs.append(subprocess.Popen(worker_command(run.path, options), env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    return procs


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
