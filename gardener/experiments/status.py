"""Where a run folder stands: each job done, running (where, for how long), failed (why) or pending,
grouped by what the plans use it for, with an estimate of the time left.

Read from the folder alone (plans, job.json, claim.json, failure.json, result.json), so it can be
run from any machine that sees the folder, while workers run.
"""
from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

from ..fileio import alive
from .claims import heartbeat_interval, read_claim
from .queue import failures, given_up, read_specs
from .runs import RunDir, read_plan
from .validation import InvalidResult, read_result, run_hash

STATES = ("done", "running", "stale", "failed", "pending")


def job_state(folder: Path, retries: int, stale_after: float) -> dict:
    """One job's state: done (with its wall time), running or stale (the claim's holder and heartbeat
    age), failed for good (the last reason), or pending (with its failed attempts so far)."""
    attempts = failures(folder)
    invalid = None
    try:
        result = read_result(folder, run_hash(folder.parent))
        if result is not None:
            return {"state": "done", "seconds": result.get("seconds"), "top1": result.get("top1"),
                    **({"perplexity": result["perplexity"]} if "perplexity" in result else {})}
    except InvalidResult as exc:  # not counted as done: the next worker sets it aside and runs the job again
        invalid = str(exc)
    claim = read_claim(folder)
    if claim is not None:
        # its worker is gone: a pid of this host that no longer runs, whose heartbeat stopped too (a pid
        # alone could be of another pid namespace, a container that shares the host's name)
        dead = (claim["host"] == socket.gethostname() and isinstance(claim["pid"], int) and not alive(claim["pid"])
                and claim["age"] > 2 * heartbeat_interval(stale_after))
        return {"state": "stale" if dead or claim["age"] > stale_after else "running", "host": claim["host"],
                "pid": claim["pid"], "slurm_job": claim.get("slurm_job"), "heartbeat_age": round(claim["age"], 1),
                "running_for": round(time.time() - claim["started"], 1), "attempts": len(attempts),
                **({"dead": True} if dead else {})}
    if given_up(attempts, retries):
        return {"state": "failed", "reason": attempts[-1]["error"], "attempts": len(attempts),
                "host": attempts[-1]["host"]}
    state = {"state": "pending", "attempts": len(attempts)}
    if attempts:
        state["last_error"] = attempts[-1]["error"]
    if invalid:
        state["invalid_result"] = invalid
    return state


def plan_groups(run: RunDir) -> list[dict]:
    """The folder's plans as groups of job ids: each oracle, the sweep's baseline, and each
    (criterion, ratio) of the sweep (all its random seeds together)."""
    groups = []
    for kind in ("sensitivity", "healing"):
        path = run.path / f"{kind}.plan.json"
        if path.is_file():
            plan = read_plan(path)
            groups.append({"plan": kind, "criterion": "(oracle)", "ratio": None,
                           "jobs": list(dict.fromkeys(j["id"] for j in plan["jobs"]))})
    path = run.path / "sweep.plan.json"
    if path.is_file():
        plan = read_plan(path)
        groups.append({"plan": "sweep", "criterion": "(unpruned)", "ratio": 0.0, "jobs": [plan["baseline"]]})
        by_key: dict = {}
        for row in plan["rows"]:
            by_key.setdefault((row["criterion"], row["ratio"]), []).append(row["id"])
        groups += [{"plan": "sweep", "criterion": c, "ratio": r, "jobs": list(dict.fromkeys(ids))}
                   for (c, r), ids in by_key.items()]
        if plan.get("waiting_for_oracle"):
            groups.append({"plan": "sweep", "criterion": "sensitivity", "ratio": None, "jobs": [],
                           "note": "queued once the oracle is done (run the same sweep again)"})
    return groups


def run_status(run: RunDir, retries: int = 1, stale_after: float = 300.0) -> dict:
    """The whole folder's status: every job's state, counts, the plans' groups, the time left, and the
    queued jobs whose job.json cannot be read (`unreadable`, by id: no worker can run them)."""
    unreadable: dict[str, str] = {}
    ids = [s["id"] for s in read_specs(run.jobs, unreadable)]
    groups = plan_groups(run)
    ids = list(dict.fromkeys(ids + [i for g in groups for i in g["jobs"]]))
    jobs = {i: job_state(run.jobs / i, retries, stale_after) for i in ids}
    counts = {s: sum(1 for j in jobs.values() if j["state"] == s) for s in STATES}
    for group in groups:
        group["counts"] = {s: sum(1 for i in group["jobs"] if jobs[i]["state"] == s) for s in STATES}
    return {"run": str(run.path), "jobs": jobs, "counts": counts, "groups": groups, "unreadable": unreadable,
            **estimate(jobs), "retries": retries, "stale_after": stale_after}


def estimate(jobs: dict[str, dict]) -> dict:
    """Time left: the jobs not done (a running one counts half) times the mean wall time of the done
    ones, spread over the workers running now (at least one). None until a job is done."""
    seconds = [j["seconds"] for j in jobs.values() if j["state"] == "done" and j.get("seconds")]
    running = sum(1 for j in jobs.values() if j["state"] == "running")
    left = sum(1 for j in jobs.values() if j["state"] in ("pending", "stale")) + 0.5 * running
    if not seconds:
        return {"mean_job_seconds": None, "eta_seconds": None if left else 0.0}
    mean = statistics.fmean(seconds)
    return {"mean_job_seconds": round(mean, 1), "eta_seconds": round(mean * left / max(1, running), 1)}
