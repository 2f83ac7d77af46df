"""How many threads torch, and the OpenMP and BLAS libraries beneath it, may use in a gardener process.

A process that takes every core of the machine while other processes share them slows all of them down: their
threads spin and wait for each other (on 2 cores under a load of 4, spectral scoring ran 14 times slower and a
tiny training 50-90 times slower than with one thread per process; issue 31). So each gardener process takes the
cores it may use (its CPU affinity, which SLURM and `taskset` set, bounded by a container's CPU quota) and the
local workers of `--launcher local` share them; `gardener --threads N` or `GARDENER_THREADS=N` choose otherwise,
and an `OMP_NUM_THREADS` the user set is kept.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from .errors import GardenerError

ENV = "GARDENER_THREADS"
LIBRARIES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_ours: dict[str, str] = {}  # the library variables this process set itself (not the user's)
_applied: int | None = None  # the threads set_threads gave, last


def usable_cores(quota_file: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may run on: its CPU affinity, at most the cgroup's CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        limit, period = quota_file.read_text().split()
        quota = math.ceil(int(limit) / int(period))
    except (OSError, ValueError):  # no cgroup v2 quota file, or "max" (no quota)
        quota = cores
    return max(1, min(cores, quota))


def per_worker(workers: int) -> int:
    """The threads each of `workers` processes started side by side on this machine takes."""
    return max(1, usable_cores() // max(1, workers))


def chosen() -> int | None:
    """The threads GARDENER_THREADS asks for, else those of an OMP_NUM_THREADS the user set; None for neither."""
    for name in (ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if not value or _ours.get(name) == value:
            continue
        if not value.isdigit() or int(value) < 1:
            raise GardenerError(f"{name}={value!r}: expected a whole number of threads, 1 or more")
        return int(value)
    return None


def set_threads(count: int | None = None) -> int:
    """Give torch and the OpenMP/BLAS libraries `count` threads (default: `chosen()`, else `usable_cores()`).

    The libraries not loaded yet and every child process read the environment variables; a loaded torch is told
    directly. An explicit `count` is also passed on to child processes as GARDENER_THREADS.
    """
    if count is not None and count < 1:
        raise GardenerError(f"--threads {count}: expected 1 or more")
    threads = count or chosen() or usable_cores()
    if count is not None:
        os.environ[ENV] = str(count)
    for name in LIBRARIES:
        if name not in os.environ or _ours.get(name) == os.environ[name]:
            os.environ[name] = _ours[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    global _applied
    _applied = threads
    return threads


def current() -> int | None:
    """The threads this process was given by `set_threads` (None before)."""
    return _applied


def worker_line(pid: int) -> str:
    """What a worker says of its threads when it starts (the CLI's and a SLURM task's alike)."""
    return f"worker {pid}: {current()} thread(s) for torch and OpenMP/BLAS"
