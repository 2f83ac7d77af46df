"""Who is running a job: an atomic claim file in the job's folder, kept alive by a heartbeat.

`jobs/<id>/claim.json` is created with O_EXCL, so of any number of workers on any number of
machines sharing the run folder exactly one gets it. Its holder touches it every few seconds (the
heartbeat: the file's mtime); a claim whose heartbeat is older than `stale_after` seconds belongs
to a worker that died (SIGKILL, a lost node) and is taken over. A takeover first creates
`claim.json.taken-<token>` with O_EXCL, so one worker takes over a given stale claim; the claim is
then replaced in one rename, never deleted, so no third worker can slip in between.

Nothing here trusts a process to say goodbye: a claim is released when its job ends, but a
worker that never comes back only costs the `stale_after` wait.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

CLAIM = "claim.json"


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one job folder."""

    folder: Path
    token: str
    host: str
    pid: int
    started: float
    slurm_job: str | None = None  # SLURM_JOB_ID[_ARRAY_TASK_ID] of the worker, when it runs under SLURM
    launch: str | None = None  # the torchrun launch whose rank 0 holds it (its other ranks follow)
    took_over: dict | None = None  # the stale claim it replaced

    @property
    def path(self) -> Path:
        return self.folder / CLAIM


def read_claim(folder: Path) -> dict | None:
    """The claim on a job folder, with its heartbeat age in seconds (`age`); None when unclaimed."""
    path = Path(folder) / CLAIM
    try:
        info = json.loads(path.read_text())
        info["age"] = max(0.0, time.time() - path.stat().st_mtime)
    except (FileNotFoundError, json.JSONDecodeError):  # released meanwhile, or being replaced
        return None
    return info


def is_stale(info: dict, stale_after: float) -> bool:
    return info["age"] > stale_after


def owner() -> dict:
    """This process as a claim names it."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm and os.environ.get("SLURM_ARRAY_TASK_ID"):
        slurm = f"{os.environ.get('SLURM_ARRAY_JOB_ID', slurm)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm, "launch": launch_id()}


def launch_id() -> str | None:
    """The torchrun / accelerate launch this process belongs to (None when it runs alone)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return ":".join(os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))


def try_claim(folder: Path, stale_after: float) -> Claim | None:
    """Claim a job folder: a new claim, or one taken over from a stale holder; None when another
    worker holds it (or took it first)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    claim = Claim(folder, uuid.uuid4().hex, started=time.time(), **owner())
    try:
        fd = os.open(claim.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return _take_over(claim, stale_after)
    with os.fdopen(fd, "w") as handle:
        handle.write(_text(claim))
    return claim


def _take_over(claim: Claim, stale_after: float) -> Claim | None:
    held = read_claim(claim.folder)
    if held is None or not is_stale(held, stale_after):
        return None
    lock = claim.folder / f"{CLAIM}.taken-{held['token']}"
    try:  # one taker per stale claim; the lock stays, so nobody takes the same claim twice
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return None
    current = read_claim(claim.folder)
    if current is None or current["token"] != held["token"]:  # released or replaced meanwhile
        return None
    claim = Claim(**{**asdict(claim), "took_over": {k: held[k] for k in ("host", "pid", "slurm_job", "age")}})
    temp = claim.folder / f".{CLAIM}.{claim.token}.tmp"
    temp.write_text(_text(claim))
    os.replace(temp, claim.path)
    return claim


def _text(claim: Claim) -> str:
    info = asdict(claim)
    info.pop("folder")
    return json.dumps(info, indent=2) + "\n"


def holds(claim: Claim) -> bool:
    """Whether the claim is still this worker's (a worker whose heartbeat stalled may have lost it)."""
    current = read_claim(claim.folder)
    return current is not None and current["token"] == claim.token


def release(claim: Claim) -> None:
    """Give the job back (only if the claim is still ours); stale-claim locks go with it."""
    if holds(claim):
        claim.path.unlink(missing_ok=True)


def clear_locks(folder: Path) -> None:
    """Once a job has its result, the takeover locks of its old claims are of no use."""
    for lock in Path(folder).glob(f"{CLAIM}.taken-*"):
        lock.unlink(missing_ok=True)


class Heartbeat:
    """Touches a claim every `interval` seconds from a daemon thread while a job runs (a context
    manager); it stops by itself when the claim is no longer ours."""

    def __init__(self, claim: Claim, interval: float):
        self.claim, self.interval = claim, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gardener-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if not holds(self.claim):
                return
            try:
                os.utime(self.claim.path)
            except FileNotFoundError:
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def heartbeat_interval(stale_after: float) -> float:
    """Often enough that a live claim never looks stale (a third of the timeout, at most 30 s)."""
    return max(0.2, min(30.0, stale_after / 3))


def release_mine(jobs: Path) -> int:
    """Give back every claim this process holds under `jobs` (a worker about to be requeued); how many."""
    me, released = owner(), 0
    for path in Path(jobs).glob(f"*/{CLAIM}"):
        info = read_claim(path.parent)
        if info is not None and info["host"] == me["host"] and info["pid"] == me["pid"]:
            path.unlink(missing_ok=True)
            released += 1
    return released
