"""Jobs as a queue on the run folder: atomic claims, heartbeats, stale takeover, retries, and `status`."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import pytest
from conftest import job_result, run_cli

from gardener.errors import GardenerError
from gardener.experiments.claims import Heartbeat, read_claim, release, try_claim
from gardener.experiments.queue import QueueOptions, Task, drain, failures, write_spec
from gardener.experiments.runs import RunDir, Settings

SETTINGS = Settings("m", "h", {}, {}, {}, 0)  # the experiment every queued job here belongs to (run.json: hash h)
JOBS: dict = {}  # queued jobs by id


def _claim_in_child(folder: str, barrier, out) -> None:
    barrier.wait()
    claim = try_claim(Path(folder), stale_after=300)
    out.put(None if claim is None else claim.token)


def test_of_many_processes_claiming_one_job_exactly_one_gets_it(tmp_path):
    ctx = get_context("spawn")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_child, args=(str(tmp_path / "job"), barrier, out)) for _ in range(6)]
    for p in procs:
        p.start()
    tokens = [out.get(timeout=300) for _ in procs]  # six spawned interpreters importing gardener: slow under load
    for p in procs:
        p.join()
    winners = [t for t in tokens if t is not None]
    assert len(winners) == 1
    assert read_claim(tmp_path / "job")["token"] == winners[0]


def test_a_live_claim_is_not_taken_over_and_a_stale_one_is_taken_once(tmp_path):
    folder = tmp_path / "job"
    first = try_claim(folder, stale_after=3.0)
    with Heartbeat(first, interval=0.2):
        time.sleep(4)  # older than stale_after, but the heartbeat keeps it fresh
        assert try_claim(folder, stale_after=3.0) is None
    os.utime(first.path, (time.time() - 10, time.time() - 10))  # its worker died ten seconds ago
    takers: list = []
    threads = [threading.Thread(target=lambda: takers.append(try_claim(folder, stale_after=3.0))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [c for c in takers if c is not None]
    assert len(won) == 1 and read_claim(folder)["token"] == won[0].token
    # the winner took the stale claim over, or claimed the job in the instant after another taker moved it aside
    assert won[0].took_over is None or (won[0].took_over["pid"] == first.pid and won[0].took_over["age"] >= 9)
    assert not [p for p in folder.iterdir() if p.name != "claim.json"]  # nothing left beside it
    release(first)  # the dead worker's release, were it to come back, leaves the new claim alone
    assert read_claim(folder)["token"] == won[0].token


def test_workers_taking_over_one_stale_claim_in_the_same_instant_leave_exactly_one_holder(tmp_path):
    """8 threads released together at a stale claim, 200 times over: each time exactly one holds it and
    nothing is left beside it (before takeovers were marked, about 1 round in 10 had two holders)."""
    bad = 0
    for round_ in range(200):
        folder = tmp_path / f"job{round_}"
        dead = try_claim(folder, stale_after=3.0)
        os.utime(dead.path, (time.time() - 10, time.time() - 10))
        barrier, takers = threading.Barrier(8), []

        def take():
            barrier.wait()
            takers.append(try_claim(folder, stale_after=3.0))
        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [c for c in takers if c is not None]
        bad += not (len(won) == 1 and read_claim(folder)["token"] == won[0].token
                    and [p.name for p in folder.iterdir()] == ["claim.json"])
    assert bad == 0


def test_an_unreadable_claim_is_taken_over_once_stale(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "claim.json").write_text("")  # e.g. a disk that filled up under an older writer
    assert try_claim(folder, stale_after=60) is None
    os.utime(folder / "claim.json", (time.time() - 120, time.time() - 120))
    claim = try_claim(folder, stale_after=60)
    assert claim is not None and read_claim(folder)["token"] == claim.token
    assert sorted(p.name for p in folder.iterdir()) == ["claim.json"]  # nothing left beside it


def test_a_requeued_slurm_task_takes_back_its_own_claim_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "770")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    before = try_claim(tmp_path / "job", stale_after=300)  # the task's first run, SIGKILLed
    assert before.slurm_job == "770_7"
    again = try_claim(tmp_path / "job", stale_after=300)
    assert again is not None and again.took_over["slurm_job"] == "770_7"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "8")  # another task waits for the heartbeat like anyone
    assert try_claim(tmp_path / "job", stale_after=300) is None


def _queue(run: Path, n: int) -> list[str]:
    jobs = [SETTINGS.job([k + 1]) for k in range(n)]
    for order, job in enumerate(jobs):
        JOBS[job.id] = job
        write_spec(run / "jobs" / job.id, {"id": job.id, "removed": list(job.removed), "seed": None, "order": order,
                                           "experiment": {}})
    return [job.id for job in jobs]


def _task(job_id: str, fail_times: int, calls: dict, error=RuntimeError) -> Task:
    def run(folder: Path, guard=None) -> dict:
        calls[job_id] = calls.get(job_id, 0) + 1
        if calls[job_id] <= fail_times:
            raise error(f"attempt {calls[job_id]} of {job_id} broke")
        return job_result(JOBS[job_id], seconds=10.0)
    return Task(job_id, JOBS[job_id].removed, 0, run)


def test_a_failing_job_is_retried_up_to_retries_then_failed_in_status(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"source": "m", "source_hash": "h"}))
    ids = _queue(tmp_path, 3)
    calls: dict = {}
    tasks = [_task(ids[0], 0, calls), _task(ids[1], 2, calls), _task(ids[2], 99, calls)]
    counts = drain(tmp_path, lambda: tasks, QueueOptions(retries=2, poll=0.05))
    assert calls == {ids[0]: 1, ids[1]: 3, ids[2]: 3}  # 1 + retries attempts at most
    assert counts == {"run": 2, "cached": 0, "elsewhere": 0, "failed": 1, "held": 0}
    assert len(failures(tmp_path / "jobs" / ids[1])) == 2 and (tmp_path / "jobs" / ids[1] / "result.json").is_file()
    assert not (tmp_path / "jobs" / ids[2] / "result.json").exists()
    assert not list(tmp_path.glob("jobs/*/claim.json"))  # every claim was given back

    assert run_cli("status", tmp_path, "--json", "--retries", "2") == 0
    state = json.loads(capsys.readouterr().out)
    assert [state["jobs"][i]["state"] for i in ids] == ["done", "done", "failed"]
    assert state["jobs"][ids[2]]["reason"] == f"RuntimeError: attempt 3 of {ids[2]} broke"
    assert state["jobs"][ids[2]]["attempts"] == 3
    assert run_cli("status", tmp_path) == 0
    assert f"failed {ids[2]} after 3 attempt(s)" in capsys.readouterr().out

    again = drain(tmp_path, lambda: tasks, QueueOptions(retries=2, poll=0.05))  # failed for good: left alone
    assert again["failed"] == 1 and calls[ids[2]] == 3


def test_a_user_mistake_in_a_job_is_not_retried(tmp_path, capsys):
    ids = _queue(tmp_path, 1)
    calls: dict = {}
    tasks = [_task(ids[0], 99, calls, error=GardenerError)]
    assert drain(tmp_path, lambda: tasks, QueueOptions(retries=3))["failed"] == 1  # a worker records it, goes on
    assert calls[ids[0]] == 1 and len(failures(tmp_path / "jobs" / ids[0])) == 1
    (tmp_path / "run.json").write_text(json.dumps({"source": "m", "source_hash": "h"}))
    assert run_cli("status", tmp_path, "--json", "--retries", "3") == 0
    assert json.loads(capsys.readouterr().out)["jobs"][ids[0]] == {
        "state": "failed", "reason": f"GardenerError: attempt 1 of {ids[0]} broke", "attempts": 1, "host":
        socket.gethostname()}


def test_a_user_mistake_stops_a_command_run_here_with_its_one_line_error(tmp_path):
    ids = _queue(tmp_path, 2)
    calls: dict = {}
    tasks = [_task(ids[0], 99, calls, error=GardenerError), _task(ids[1], 0, calls)]
    with pytest.raises(GardenerError, match=f"attempt 1 of {ids[0]} broke"):
        drain(tmp_path, lambda: tasks, QueueOptions(retries=3, raise_errors=True))
    assert ids[1] not in calls and not list(tmp_path.glob("jobs/*/claim.json"))


def test_a_worker_that_does_not_wait_still_waits_for_a_claim_that_missed_its_heartbeats(tmp_path):
    ids = _queue(tmp_path, 1)
    dead = try_claim(tmp_path / "jobs" / ids[0], stale_after=3)  # heartbeat every 1 s
    os.utime(dead.path, (time.time() - 2.5, time.time() - 2.5))  # missed two: its worker died
    calls: dict = {}
    counts = drain(tmp_path, lambda: [_task(ids[0], 0, calls)], QueueOptions(stale_after=3, wait=False, poll=0.1))
    assert counts["run"] == 1 and calls == {ids[0]: 1}

    ids = _queue(tmp_path / "live", 1)
    live = try_claim(tmp_path / "live" / "jobs" / ids[0], stale_after=3)
    with Heartbeat(live, interval=0.2):  # a live claim: a worker that does not wait goes
        counts = drain(tmp_path / "live", lambda: [_task(ids[0], 0, calls)], QueueOptions(stale_after=3, wait=False))
    assert counts == {"run": 0, "cached": 0, "elsewhere": 0, "failed": 0, "held": 1}


def test_status_json_matches_the_folder(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"source": "m", "source_hash": "h"}))
    done, running, stale, failed, pending = _queue(tmp_path, 5)
    jobs = tmp_path / "jobs"
    (jobs / done / "result.json").write_text(json.dumps(job_result(JOBS[done], seconds=10.0)))
    live = try_claim(jobs / running, stale_after=300)
    dead = try_claim(jobs / stale, stale_after=300)
    os.utime(dead.path, (time.time() - 1000, time.time() - 1000))
    (jobs / failed / "failure.json").write_text(json.dumps({"attempts": [
        {"error": "RuntimeError: CUDA out of memory", "final": False, "host": "gpu7", "pid": 1, "time": 0.0}] * 2}))

    assert run_cli("status", tmp_path, "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert {i: j["state"] for i, j in state["jobs"].items()} == {
        done: "done", running: "running", stale: "stale", failed: "failed", pending: "pending"}
    assert state["counts"] == {"done": 1, "running": 1, "stale": 1, "failed": 1, "pending": 1}
    assert state["jobs"][running]["host"] == socket.gethostname() and state["jobs"][running]["pid"] == live.pid
    assert state["jobs"][stale]["heartbeat_age"] >= 999
    assert state["jobs"][failed] == {"state": "failed", "reason": "RuntimeError: CUDA out of memory",
                                     "attempts": 2, "host": "gpu7"}
    # left: pending and stale (1 + 1) and half of the running one, at the done job's 10 s, over 1 worker
    assert state["mean_job_seconds"] == 10.0 and state["eta_seconds"] == 25.0


def test_status_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert run_cli("status", tmp_path) == 2
    assert "not a gardener run folder (no run.json)" in capsys.readouterr().err


def test_a_run_dir_without_queue_has_an_empty_status(tmp_path, capsys):
    RunDir(tmp_path, "h")
    (tmp_path / "run.json").write_text(json.dumps({"source": "m", "source_hash": "h"}))
    assert run_cli("status", tmp_path, "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["jobs"] == {} and state["eta_seconds"] == 0.0


def test_an_error_while_the_scheduler_stops_the_worker_is_not_the_jobs_failure(tmp_path):
    """submitit raises from its signal handler when a task has no requeue left: the job goes back to
    the queue untouched (no failure counted) and the worker stops claiming."""
    from gardener.experiments.queue import STOPPING

    ids = _queue(tmp_path, 2)

    def stopped(folder: Path, guard=None) -> dict:
        STOPPING.set()  # what Worker.checkpoint does when the signal comes
        raise RuntimeError("UncompletedJobError: timed-out too many times")
    try:
        with pytest.raises(RuntimeError, match="too many times"):
            drain(tmp_path, lambda: [Task(ids[0], (1,), 0, stopped), _task(ids[1], 0, {})], QueueOptions())
    finally:
        STOPPING.clear()
    assert failures(tmp_path / "jobs" / ids[0]) == [] and not list(tmp_path.glob("jobs/*/claim.json"))
    assert not (tmp_path / "jobs" / ids[1] / "result.json").exists()
