"""Who is running a job: an atomic claim file in the job's folder, kept alive by a heartbeat.

`jobs/<id>/claim.json` is created whole and atomically (written to a private file, then hard-linked
into place, which fails if the claim exists: O_EXCL semantics that hold on NFS too), so of any
number of workers on any number of machines sharing the run folder exactly one gets it, and no
claim is ever seen half-written. Its holder touches it every `heartbeat_interval` seconds (the
file's mtime); a claim whose heartbeat is older than `stale_after` seconds belongs to a worker that
died (SIGKILL, a lost node) and is taken over. Of the workers that judge it stale, only the one that
first marks the takeover (a mark file linked in beside it, removed once its own claim is in) renames
the stale claim aside, checks that what it moved is the claim it judged stale, then links its own
claim in. A claim left by an earlier run of the same SLURM task (requeued after a SIGKILL) is taken
over at once. Staleness compares this machine's clock with the file's mtime: the hosts' clocks must
agree to well within `stale_after` (NTP does).

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
    took_over: dict | None = None  # the stale claim it replaced

    @property
    def path(self) -> Path:
        return self.folder / CLAIM


def read_claim(folder: Path) -> dict | None:
    """The claim on a job folder, with its heartbeat age in seconds (`age`); None when unclaimed."""
    path = Path(folder) / CLAIM
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
    except FileNotFoundError:  # released meanwhile
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:  # not written by this version (claims are linked in whole): stale by its age
        info = {"token": None, "host": "unknown", "pid": None, "slurm_job": None, "started": mtime}
    info["age"] = max(0.0, time.time() - mtime)
    return info


def is_stale(info: dict, stale_after: float) -> bool:
    """No heartbeat for `stale_after` seconds, or left by an earlier run of this very SLURM task."""
    mine = owner()["slurm_job"]
    return info["age"] > stale_after or (mine is not None and info.get("slurm_job") == mine)


def owner() -> dict:
    """This process as a claim names it."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm and os.environ.get("SLURM_ARRAY_TASK_ID"):
        slurm = f"{os.environ.get('SLURM_ARRAY_JOB_ID', slurm)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm}


def try_claim(folder: Path, stale_after: float) -> Claim | None:
    """Claim a job folder: a new claim, or one taken over from a stale holder; None when another
    worker holds it (or took it first)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    claim = Claim(folder, uuid.uuid4().hex, started=time.time(), **owner())
    if _link_in(claim):
        return claim
    return _take_over(claim, stale_after)


def _link_in(claim: Claim) -> bool:
    """Put the claim in place whole, unless a claim is there (hard links never replace a file)."""
    private = claim.folder / f".{CLAIM}.{claim.token}.tmp"
    private.write_text(_text(claim))
    try:
        os.link(private, claim.path)
        return True
    except FileExistsError:
        return False
    finally:
        private.unlink(missing_ok=True)


def _take_over(claim: Claim, stale_after: float) -> Claim | None:
    """Take over a stale claim: of all the workers that judged it stale, only the one that first marks
    its takeover (`_mark`) moves it aside and links its own claim in; the mark goes once that is done,
    so a taker that looks later finds the new, live claim."""
    held = read_claim(claim.folder)
    if held is None or not is_stale(held, stale_after):
        return None
    mark = claim.folder / f".{CLAIM}.{held['token']}.takeover"
    if not _mark(mark, claim.token, stale_after):
        return None
    try:
        current = read_claim(claim.folder)
        if current is None or current["token"] != held["token"]:  # taken over (or released) meanwhile
            return None
        aside = claim.folder / f".{CLAIM}.{claim.token}.stale"
        try:
            os.rename(claim.path, aside)
        except FileNotFoundError:
            return None
        moved = _read_aside(aside)
        if moved != held["token"]:  # its holder came back, released it, and a new one claimed: put that back
            try:
                os.link(aside, claim.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return None
        aside.unlink(missing_ok=True)
        claim = Claim(**{**asdict(claim), "took_over": {k: held.get(k) for k in ("host", "pid", "slurm_job", "age")}})
        return claim if _link_in(claim) else None
    finally:
        mark.unlink(missing_ok=True)


def _mark(mark: Path, token: str, stale_after: float) -> bool:
    """Mark the takeover of one stale claim, unless another taker has (hard links never replace a file);
    a mark older than `stale_after` was left by a taker that died in its takeover and is removed, so that
    a later look can take the claim over."""
    private = mark.with_name(f"{mark.name}.{token}.tmp")
    private.write_text("")
    try:
        os.link(private, mark)
        return True
    except FileExistsError:
        try:
            if time.time() - mark.stat().st_mtime > stale_after:
                mark.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return False
    finally:
        private.unlink(missing_ok=True)


def _read_aside(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("token")
    except json.JSONDecodeError:
        return None


def _text(claim: Claim) -> str:
    info = asdict(claim)
    info.pop("folder")
    return json.dumps(info, indent=2) + "\n"


def holds(claim: Claim) -> bool:
    """Whether the claim is still this worker's (a worker whose heartbeat stalled may have lost it)."""
    current = read_claim(claim.folder)
    return current is not None and current["token"] == claim.token


class LostClaim(Exception):
    """This worker no longer holds the job it runs (its heartbeat stalled and another worker took it over)."""


def ensure_held(claim: Claim) -> None:
    """Raise LostClaim unless the claim is still this worker's: checked before a job writes into its folder."""
    if not holds(claim):
        raise LostClaim(claim.folder.name)


def release(claim: Claim) -> None:
    """Give the job back (only if the claim is still ours)."""
    if holds(claim):
        claim.path.unlink(missing_ok=True)


class Heartbeat:
    """Touches a claim every `interval` seconds from a daemon thread while a job runs (a context
    manager); it stops by itself when the claim is no longer ours."""

    def __init__(self, claim: Claim, interval: float):
        self.claim, self.interval = claim, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gardener-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not holds(self.claim):
                    return
                os.utime(self.claim.path)
            except FileNotFoundError:
                return
            except OSError:  # a network file system's hiccup (ESTALE, EIO): beat again next time
                continue

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
