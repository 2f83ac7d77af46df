"""A run folder's jobs as a queue that any number of workers drain, on any number of machines.

Files per job, in `RUN/jobs/<id>/`:
- `job.json`: what the job is (its blocks, seed and experiment settings), written when it is queued,
  so that a worker needs nothing but the folder (`gardener worker RUN`);
- `claim.json`: who runs it now (claims.py);
- `result.json`: the result, the one source of truth: a job with a result is done, whoever ran it;
- `failure.json`: each failed attempt (exception, host, time); a job is tried `1 + retries` times;
- `log.txt`: what the workers printed while they ran it, attempt after attempt (joblog.py).
`RUN/jobs.log` gets one line per job this folder ran, with the worker that ran it.

Load balancing needs no coordinator: each worker takes the first job, in queue order, that has no
result, is not failed for good and that it can claim.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import GardenerError
from ..fileio import write_text
from ..settings import check_number
from ..oserrors import FULL, DiskFull, disk_full, writing
from .claims import Claim, Heartbeat, LostClaim, ensure_held, heartbeat_interval, holds, read_claim, release, try_claim
from .joblog import job_log
from .validation import RESULT, InvalidResult, read_result, run_hash

SPEC, FAILURE = "job.json", "failure.json"

log = logging.getLogger("gardener.experiments")
# Set when the scheduler is about to stop this process (submitit's checkpoint on a time limit or a
# preemption): the running job's claim is given back, and no error it raises then counts as its failure.
STOPPING = threading.Event()


@dataclass(frozen=True)
class QueueOptions:
    """How a worker drains a queue."""

    retries: int = 1  # a failed job is tried again this many times, then it is failed for good
    raise_errors: bool = False  # a user mistake (GardenerError) in a job stops the worker (a command run here)
    stale_after: float = 300.0  # seconds without a heartbeat after which a claim is taken over
    wait: bool = True  # wait for jobs that other workers hold (taking them over if they go stale)
    max_jobs: int | None = None  # stop after finishing this many jobs (a SLURM array task runs one)
    poll: float = 2.0  # seconds between looks at a queue whose jobs other workers hold

    def check(self) -> QueueOptions:
        check_number("--retries", self.retries, 0)
        check_number("--stale-after", self.stale_after, 0, above=True)
        check_number("--max-jobs", self.max_jobs, 1)
        return self


@dataclass(frozen=True)
class Task:
    """One queued job as a worker runs it: `run(folder)` returns its complete result."""

    id: str
    removed: tuple[int, ...]
    seed: int
    run: Callable[..., dict]  # (folder, guard=None): guard() raises LostClaim once the job's claim is not ours


def write_spec(folder: Path, spec: dict) -> None:
    """Queue a job (once: a job's spec never changes, its id is the hash of what it is); a job.json that
    cannot be read is written again."""
    if not (folder / SPEC).is_file() or spec_problem(folder / SPEC) is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / SPEC, json.dumps({**spec, "queued": time.time()}, indent=2) + "\n", force=True)


def spec_problem(path: Path) -> str | None:
    """What is wrong with a job.json (written whole by `write_spec`, so never half-written), or None."""
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        return "it is missing"
    except (OSError, UnicodeDecodeError, ValueError):
        return "it is not readable JSON"
    if not isinstance(spec, dict) or spec.get("id") != path.parent.name or not isinstance(spec.get("removed"), list) \
            or not isinstance(spec.get("queued"), (int, float)) or not isinstance(spec.get("experiment"), dict):
        return "it does not describe the job of its folder (id, removed blocks, experiment)"
    return None


def read_specs(jobs: Path, unreadable: dict[str, str] | None = None) -> list[dict]:
    """Every queued job's spec, in queue order (when it was queued, then its place in its plan). A job.json
    that cannot be read is never left out silently: it is an error naming it, or, given `unreadable`, it is
    named there (by job id) and the others are read."""
    specs = []
    for path in sorted(jobs.glob(f"*/{SPEC}")):
        why = spec_problem(path)
        if why == "it is missing":  # its folder removed meanwhile
            continue
        if why:
            message = (f"{path}: {why}; run the command that queued it again (it writes it anew), or delete "
                       f"{path.parent} to drop the job")
            if unreadable is None:
                raise GardenerError(message)
            unreadable[path.parent.name] = message
            continue
        specs.append(json.loads(path.read_text()))
    return sorted(specs, key=lambda s: (s["queued"], s.get("order", 0), s["id"]))


def has_result(folder: Path) -> bool:
    """Whether a job is done: it has a result, and the result is its own (an invalid one does not count: the
    job runs again, and the invalid file is set aside first)."""
    try:
        return read_result(folder, run_hash(folder.parent)) is not None
    except InvalidResult:
        return False


def failures(folder: Path) -> list[dict]:
    """The failed attempts of a job, oldest first (a failure.json that cannot be read counts as none)."""
    try:
        attempts = json.loads((folder / FAILURE).read_text())["attempts"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: not readable; its failed attempts are not counted", folder / FAILURE)
        return []
    return [a for a in attempts if isinstance(a, dict) and "error" in a] if isinstance(attempts, list) else []


def given_up(attempts: list[dict], retries: int) -> bool:
    """Tried 1 + `retries` times, or stopped by a user mistake (a GardenerError: trying again gives the same)."""
    return bool(attempts) and (len(attempts) > retries or attempts[-1]["final"])


def failed_for_good(folder: Path, retries: int) -> bool:
    return not has_result(folder) and given_up(failures(folder), retries)


def is_open(folder: Path, retries: int) -> bool:
    """Still to run: no result, and not failed for good."""
    return not has_result(folder) and not given_up(failures(folder), retries)


def record_failure(claim: Claim, exc: BaseException) -> None:
    """Add an attempt to failure.json (only the claim's holder writes it, so no lock is needed; a
    worker that lost its claim records nothing)."""
    if not holds(claim):
        return
    attempts = failures(claim.folder) + [{
        "error": f"{type(exc).__name__}: {exc}", "final": isinstance(exc, GardenerError), "host": claim.host,
        "pid": claim.pid, "slurm_job": claim.slurm_job, "time": time.time(),
        "traceback": "".join(traceback.format_exception(exc)[-6:])}]
    write_text(claim.folder / FAILURE, json.dumps({"attempts": attempts}, indent=2) + "\n", force=True)


def forget_failures(folder: Path) -> None:
    """A new command on the folder tries its failed jobs again: their attempts are kept aside
    (failure-<time>.json), not counted."""
    try:
        (folder / FAILURE).rename(folder / f"failure-{time.time():.0f}.json")
    except FileNotFoundError:  # none, or another command on the folder set it aside first
        pass


def set_aside_invalid(folder: Path) -> None:
    """Keep an invalid result.json as result-invalid-<time>.json before the job runs again (nothing is lost)."""
    try:
        read_result(folder, run_hash(folder.parent))
    except InvalidResult as exc:
        aside = folder / f"result-invalid-{time.time_ns()}.json"
        (folder / RESULT).rename(aside)
        log.warning("%s; kept as %s, and the job runs again", exc, aside.name)


def write_result(run_path: Path, claim: Claim, result: dict) -> None:
    write_text(claim.folder / RESULT, json.dumps(result, indent=2) + "\n", force=True)
    # jobs.log: which jobs this folder ran, and where
    with writing(run_path / "jobs.log"), open(run_path / "jobs.log", "a") as handle:
        handle.write(json.dumps({"id": result["id"], "removed": result["removed"], "seed": result["seed"],
                                 "host": claim.host, "pid": claim.pid, "slurm_job": claim.slurm_job,
                                 "took_over": claim.took_over is not None, "finished": time.time()}) + "\n")


def drain(run_path: Path, tasks: Callable[[], list[Task]], options: QueueOptions = QueueOptions(),
          progress: Callable | None = None, say: Callable[[str], None] | None = None) -> dict[str, int]:
    """Claim and run jobs until none is left to this worker; returns how many it ran, found done
    before it started, saw done elsewhere, and found failed for good (or held elsewhere, without `wait`)."""
    jobs = Path(run_path) / "jobs"
    start = {t.id for t in tasks() if has_result(jobs / t.id)}
    ran: set[str] = set()
    shown: list = [None]
    waited: set[str] = set()

    def show(done: int, total: int, task: Task | None) -> None:  # once per change, not once per look
        if progress and shown[0] != (done, total, task and task.id):
            shown[0] = (done, total, task and task.id)
            progress(done, total, task)

    while True:
        current = tasks()
        pending = [t for t in current if is_open(jobs / t.id, options.retries)]
        if not pending or STOPPING.is_set() or (options.max_jobs is not None and len(ran) >= options.max_jobs):
            show(len(current) - len(pending), len(current), None)
            break
        taken = next(((t, c) for t in pending if (c := try_claim(jobs / t.id, options.stale_after))), None)
        if taken is None:
            stalled = _stalled(jobs, pending, options.stale_after)
            if not options.wait and not stalled:
                show(len(current) - len(pending), len(current), None)
                break
            _waiting(jobs, pending, stalled, waited)
            time.sleep(options.poll)
            continue
        show(len(current) - len(pending), len(current), taken[0])
        if _run_claimed(run_path, *taken, options, say) == "done":
            ran.add(taken[0].id)
    return _counts(jobs, tasks(), start, ran, options.retries)


def _stalled(jobs: Path, pending: list[Task], stale_after: float) -> bool:
    """Whether a job another worker holds has missed two heartbeats (its worker probably died: worth
    waiting for the claim to go stale, even for a worker that does not wait for live ones)."""
    beat = heartbeat_interval(stale_after)
    return any((info := read_claim(jobs / t.id)) is not None and info["age"] > 2 * beat for t in pending)


def _waiting(jobs: Path, pending: list[Task], stalled: bool, waited: set[str]) -> None:
    """Say once per job why this worker waits: who holds it."""
    for task in pending:
        info = read_claim(jobs / task.id)
        if info is not None and task.id not in waited:
            waited.add(task.id)
            log.warning("job %s is held by %s pid %s (heartbeat %.0f s ago); waiting%s", task.id, info["host"],
                        info["pid"], info["age"], ": it has missed heartbeats and is taken over once stale"
                        if stalled else " (a claim without a heartbeat for --stale-after seconds is taken over)")


def _run_claimed(run_path: Path, task: Task, claim: Claim, options: QueueOptions, say, guard: bool = True) -> str:
    """Run a claimed job under a heartbeat: "done", "failed" (recorded) or "lost" (taken over meanwhile: with
    `guard`, the job stops at its next step once its claim is not ours, so two workers never write its folder)."""
    if has_result(claim.folder):  # finished by another worker between our look and our claim
        release(claim)
        return "cached"
    with job_log(claim.folder, task.id):  # what the worker prints meanwhile goes to the job's log too
        return _attempt(run_path, task, claim, options, say, guard)


def _attempt(run_path: Path, task: Task, claim: Claim, options: QueueOptions, say, guard: bool) -> str:
    """One attempt at a claimed job (`_run_claimed`), its claim given back whatever happens."""
    if say and claim.took_over:
        held = claim.took_over
        say(f"job {task.id}: took over the stale claim of {held['host']} pid {held['pid']} "
            f"(no heartbeat for {held['age']:.0f} s)")
    try:
        set_aside_invalid(claim.folder)
        with Heartbeat(claim, heartbeat_interval(options.stale_after)):
            result = task.run(claim.folder, (lambda: ensure_held(claim)) if guard else None)
        ensure_held(claim)
        write_result(run_path, claim, result)
    except LostClaim:  # taken over while it ran (its heartbeat stalled): the new holder finishes it
        if say:
            say(f"job {task.id}: its claim was taken over while it ran (no heartbeat for {options.stale_after:g} s); "
                f"it stopped, and the new holder finishes it")
        return "lost"
    except Exception as exc:  # the job failed: recorded, tried again up to `retries` times
        if STOPPING.is_set():  # the scheduler stops this process (no requeue left): not the job's failure
            release(claim)
            raise
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in FULL):
            release(claim)  # not the job's failure (nothing recorded): this worker stops, the job waits for space
            raise exc if isinstance(exc, DiskFull) else disk_full(exc.filename or claim.folder) from None
        try:
            record_failure(claim, exc)
        except OSError:  # the record cannot be written: the claim is given back all the same
            log.warning("job %s: its failure could not be recorded in %s", task.id, claim.folder / FAILURE)
        if options.raise_errors and isinstance(exc, GardenerError):
            release(claim)
            raise
        if say:
            say(f"job {task.id} failed (attempt {len(failures(claim.folder))} of {options.retries + 1}): "
                f"{type(exc).__name__}: {exc}")
        release(claim)
        return "failed"
    except BaseException:  # interrupted (Ctrl-C, SIGTERM, a SLURM requeue): the job goes back to the queue
        release(claim)
        raise
    release(claim)
    return "done"


def _counts(jobs: Path, tasks: list[Task], start: set[str], ran: set[str], retries: int) -> dict[str, int]:
    counts = {"run": len(ran), "cached": len(start), "elsewhere": 0, "failed": 0, "held": 0}
    for task in tasks:
        if task.id in ran or task.id in start:
            continue
        if has_result(jobs / task.id):
            counts["elsewhere"] += 1
        elif failed_for_good(jobs / task.id, retries):
            counts["failed"] += 1
        elif read_claim(jobs / task.id) is not None:
            counts["held"] += 1
    return counts


def lockstep(run_path: Path, tasks: list[Task], options: QueueOptions, rank: int) -> dict[str, int]:
    """Under torchrun every rank trains every job together: rank 0 claims each job in turn (waiting
    while another worker holds it), tells the other ranks whether to run or skip it, and records it."""
    from accelerate.utils import broadcast_object_list

    from ..train.loop import make_accelerator

    make_accelerator()  # the ranks' process group (each job's own accelerator shares it)
    jobs = Path(run_path) / "jobs"
    start = {t.id for t in tasks if has_result(jobs / t.id)}
    ran: set[str] = set()
    for task in tasks:
        while True:
            claim, decision = _decide(jobs / task.id, options) if rank == 0 else (None, [None])
            broadcast_object_list(decision)
            if decision[0] == "skip":
                break
            if decision[0] == "wait":
                time.sleep(options.poll)
                continue
            if rank != 0:
                task.run(jobs / task.id)  # rank 0 records the result
            elif _run_claimed(run_path, task, claim, replace(options, retries=0), None, guard=False) == "failed":
                raise GardenerError(f"job {task.id} failed: {failures(claim.folder)[-1]['error']}")
            ran.add(task.id)
            break
    return _counts(jobs, tasks, start, ran, options.retries)


def _decide(folder: Path, options: QueueOptions) -> tuple[Claim | None, list[str]]:
    """Rank 0's decision on a job: skip it (done), run it (claimed) or wait (another worker holds it)."""
    if has_result(folder):
        return None, ["skip"]
    claim = try_claim(folder, options.stale_after)
    if claim is None:
        return None, ["wait"]
    if has_result(folder):  # finished by its last holder between the two looks
        release(claim)
        return None, ["skip"]
    set_aside_invalid(folder)
    return claim, ["run"]
