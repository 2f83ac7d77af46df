"""Workers draining one run folder: local worker processes, `gardener worker` on the same folder,
a killed worker's job taken over and resumed, and the SLURM launcher through submitit's local cluster."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli, tiny_videomae

from gardener.experiments.oracle import oracle_plan, sensitivity_jobs
from gardener.experiments.plans import write_plan
from gardener.experiments.protocol import prepare, queue_jobs
from gardener.train import DataOptions, Recipe
from gardener.threads import usable_cores

CLIP = {"frames": None, "size": None, "sampling_rate": 2, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.3}
FAST = dict(batch_size=8, max_steps=3, warmup_steps=1, base_lr=0.06, layer_decay=1.0, drop_path=0.0,
            classifier_dropout=0.0, save_every=2)
OPTS = ["--max-steps", "3", "--batch-size", "8", "--warmup-steps", "1", "--lr", "0.06", "--layer-decay", "1",
        "--drop-path", "0", "--workers", "0", "--sampling-rate", "2", "--test-clips", "1", "--test-crops", "1"]


def _gardener(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gardener", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def _queued(model: Path, run: Path, video_root: Path, baseline_only: bool = False, **recipe):
    """A sensitivity plan (or only its unpruned job) queued in `run` without running any job, as
    `--launcher slurm` leaves it."""
    exp = prepare(model, run, DataOptions(video_root, workers=0), Recipe(**{**FAST, **recipe}), CLIP)
    jobs = [exp.job([])] if baseline_only else sensitivity_jobs(exp)
    queue_jobs(exp, jobs)
    if not baseline_only:
        write_plan(exp.run, "sensitivity", oracle_plan(exp, "sensitivity", jobs))
    return exp, jobs


def _ran(run: Path) -> Counter:
    """How many times each job was run to its end (jobs.log gets one line per result written)."""
    return Counter(json.loads(line)["id"] for line in (run / "jobs.log").read_text().splitlines())


def _every_job_once(run: Path, ids: set[str]) -> Counter:
    ran = _ran(run)
    assert set(ran) == ids and set(ran.values()) == {1}
    assert all((run / "jobs" / i / "result.json").is_file() for i in ids)
    assert not list(run.glob("jobs/*/claim.json")) and not list(run.glob("jobs/*/failure.json"))
    return ran


def test_two_local_workers_finish_every_job_exactly_once(tmp_path, video_root, capsys):
    model = tiny_videomae(tmp_path / "m", depth=3)
    run = tmp_path / "run"
    assert run_cli("sensitivity", model, "-o", run, "--data", video_root, *OPTS,
                   "--launcher", "local", "--local-workers", "2") == 0
    plan = json.loads((run / "sensitivity.plan.json").read_text())
    _every_job_once(run, {j["id"] for j in plan["jobs"]})
    assert (run / "sensitivity.json").is_file()  # the command built the table once its workers were done
    assert len(list((run / "workers").glob("worker-*.log"))) == 2
    assert "4 run" in capsys.readouterr().err


def test_four_worker_commands_on_one_folder_finish_every_job_exactly_once(tmp_path, video_root):
    model = tiny_videomae(tmp_path / "m", depth=5)
    _, jobs = _queued(model, tmp_path / "run", video_root)
    logs = [open(tmp_path / f"worker{k}.log", "w") for k in range(4)]  # not pipes: a full one would stall a worker
    workers = [subprocess.Popen([sys.executable, "-m", "gardener", "worker", str(tmp_path / "run"), "--stale-after",
                                 "60"], stdout=log, stderr=subprocess.STDOUT) for log in logs]
    codes = [w.wait(timeout=600) for w in workers]
    assert codes == [0] * 4, [(tmp_path / f"worker{k}.log").read_text()[-2000:] for k in range(4)]
    ran = _every_job_once(tmp_path / "run", {j.id for j in jobs})
    assert sum(ran.values()) == 6
    finished_by = Counter(json.loads(line)["pid"] for line in (tmp_path / "run" / "jobs.log").read_text().splitlines())
    assert set(finished_by) <= {w.pid for w in workers}
    assert (tmp_path / "run" / "sensitivity.json").is_file()  # the last worker built the table,
    assert (tmp_path / "run" / "oracle.json").is_file()  # and the ranking for `prune --ranking`


def test_under_torchrun_the_ranks_run_each_job_together_and_rank_0_records_it(tmp_path, video_root):
    model = tiny_videomae(tmp_path / "m", depth=2)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # two CPU processes (gloo)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gardener",
                           "sensitivity", model, "-o", run, "--data", video_root, *OPTS],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads((run / "sensitivity.plan.json").read_text())
    ids = {j["id"] for j in plan["jobs"]}
    _every_job_once(run, ids)
    assert len({json.loads(line)["pid"] for line in (run / "jobs.log").read_text().splitlines()}) == 1  # rank 0
    assert {json.loads((run / "jobs" / i / "train" / "gardener.json").read_text())["world_size"] for i in ids} == {2}


def test_a_worker_started_elsewhere_finds_data_given_as_a_relative_path(tmp_path, video_root, monkeypatch):
    model = tiny_videomae(tmp_path / "m", depth=1)
    monkeypatch.chdir(video_root.parent)
    exp = prepare(model, tmp_path / "run", DataOptions(Path(video_root.name), workers=0), Recipe(**FAST), CLIP)
    queue_jobs(exp, [exp.job([])])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = subprocess.run([sys.executable, "-m", "gardener", "worker", str(tmp_path / "run")], cwd=elsewhere,
                            capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stderr[-2000:]
    assert (tmp_path / "run" / "jobs" / exp.job([]).id / "result.json").is_file()


def _wait_for_checkpoint(folder: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    """The step of the job's first checkpoint, once it is on disk (the job is then mid-way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = sorted((folder / "train" / "checkpoints").glob("step-*/state.json"))
        if states:
            return int(states[0].parent.name.split("-")[1])
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_a_killed_workers_job_is_taken_over_after_the_timeout_and_resumed(tmp_path, video_root):
    model = tiny_videomae(tmp_path / "m", depth=1)
    exp, jobs = _queued(model, tmp_path / "run", video_root, baseline_only=True, max_steps=40, save_every=2)
    first = jobs[0]
    folder = exp.run.jobs / first.id
    a = _gardener("worker", exp.run.path, "--stale-after", "3")
    step = _wait_for_checkpoint(folder, a)
    a.send_signal(signal.SIGKILL)
    a.wait()
    killed_at = time.time()
    claim = json.loads((folder / "claim.json").read_text())
    assert claim["pid"] == a.pid  # the stale claim it left

    b = _gardener("worker", exp.run.path, "--stale-after", "3")
    out = b.communicate(timeout=600)[0]
    assert b.returncode == 0, out
    assert f"took over the stale claim of {claim['host']} pid {a.pid}" in out
    log = [json.loads(line) for line in (exp.run.path / "jobs.log").read_text().splitlines()]
    took = next(entry for entry in log if entry["id"] == first.id)
    assert took["pid"] == b.pid and took["took_over"] and took["finished"] > killed_at
    started = json.loads((folder / "train" / "start.json").read_text())
    assert [r["step"] for r in started["resumes"]][:1] and started["resumes"][0]["step"] >= step
    result = json.loads((folder / "result.json").read_text())
    assert result["steps"] == 40
    _every_job_once(exp.run.path, {j.id for j in jobs})


def test_slurm_launcher_without_sbatch_is_a_one_line_error(tmp_path, video_root, tiny_model_dir, capsys):
    if os.environ.get("PATH") and any(Path(p, "sbatch").exists() for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("this machine has sbatch")
    code = run_cli("sweep", tiny_model_dir, "-o", tmp_path / "run", "--data", video_root, "--launcher", "slurm")
    assert code == 2 and "sbatch is not on this machine's PATH" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad, message", [
    (["--launcher", "cloud"], "--launcher 'cloud': expected one of none, local, slurm"),
    (["--launcher", "local", "--shard", "1/2"], "give one or the other"),
    (["--launcher", "slurm", "--submitit-cluster", "local", "--sbatch", "mem"], "--sbatch 'mem': expected KEY=VALUE"),
    (["--retries", "-1"], "--retries -1: expected 0 or more"),
])
def test_bad_launch_options_are_one_line_errors(tmp_path, video_root, tiny_model_dir, capsys, bad, message):
    assert run_cli("sweep", tiny_model_dir, "-o", tmp_path / "run", "--data", video_root, *bad) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_slurm_array_through_submitits_local_cluster_and_its_sbatch_script(tmp_path, video_root):
    model = tiny_videomae(tmp_path / "m", depth=2)
    run = tmp_path / "run"
    proc = _gardener("sensitivity", model, "-o", run, "--data", video_root, *OPTS, "--launcher", "slurm",
                     "--submitit-cluster", "local", "--gpus-per-job", "2", "--timeout-min", "30", "--partition",
                     "gpu", "--array-parallelism", "2", "--sbatch", "account=vision", "--sbatch", "mem=64G")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    plan = json.loads((run / "sensitivity.plan.json").read_text())
    _every_job_once(run, {j["id"] for j in plan["jobs"]})
    assert (run / "sensitivity.json").is_file() and "submitted 3 worker task(s) (local)" in out
    logs = [p.read_text() for p in (run / "slurm").rglob("*_log.out")]  # each task took its own CPUs' threads
    assert logs and all(f": {usable_cores()} thread(s) for torch" in log for log in logs)
    script = (run / "slurm" / "submit.sbatch").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --gpus-per-node=2", "#SBATCH --time=30",
                 "#SBATCH --partition=gpu", "#SBATCH --account=vision", "#SBATCH --mem=64G"):
        assert line in script.splitlines(), line
    assert f"-m gardener worker {run.resolve()} --retries 1 --stale-after 300 --no-wait --max-jobs 1" in script


def test_a_slurm_task_that_times_out_is_requeued_and_resumes_its_job(tmp_path, video_root):
    """submitit's local cluster delivers the scheduler's signal (USR2) to the array task mid-job: the
    task gives its claim back and is requeued, and the requeued task resumes the job's finetuning."""
    model = tiny_videomae(tmp_path / "m", depth=1)
    exp, jobs = _queued(model, tmp_path / "run", video_root, baseline_only=True, max_steps=40, save_every=2)
    folder = exp.run.jobs / jobs[0].id
    cli = [sys.executable, "-c", "import sys; from gardener.experiments.launch import Launch; "
           "from gardener.experiments.slurm import submit_slurm; "
           "from gardener.experiments.runs import open_existing; from gardener.experiments.queue import "
           "QueueOptions; print(submit_slurm(open_existing(sys.argv[1]), Launch(launcher='slurm', "
           "submitit_cluster='local', timeout_min=10), QueueOptions(stale_after=60)), flush=True)", exp.run.path]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    step = _wait_for_checkpoint(folder, proc)
    task_pid = json.loads((folder / "claim.json").read_text())["pid"]
    os.kill(task_pid, signal.SIGUSR2)  # what SLURM sends --signal seconds before the time limit
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    logs = "".join(p.read_text() for p in (exp.run.path / "slurm").rglob("*.out"))
    assert "requeued by the scheduler; 1 claim(s) given back" in logs
    assert "Requeued job" in "".join(p.read_text() for p in (exp.run.path / "slurm").rglob("*.err")) + logs
    log = [json.loads(line) for line in (exp.run.path / "jobs.log").read_text().splitlines()]
    assert next(e for e in log if e["id"] == jobs[0].id)["pid"] != task_pid  # finished by the requeued task
    resumes = json.loads((folder / "train" / "start.json").read_text())["resumes"]
    assert resumes and resumes[0]["step"] >= step
    _every_job_once(exp.run.path, {j.id for j in jobs})


def _sweep_step(tmp_path, video_root, launch):
    """A four-block sweep of the oracle alone (its row removes two blocks: a job no oracle job is) for `launch`."""
    from gardener.experiments.sweep import run_sweep

    exp = prepare(tiny_videomae(tmp_path / "m", depth=4), tmp_path / "run", DataOptions(video_root, workers=0),
                  Recipe(**FAST), CLIP, launch=launch)
    return exp, lambda: run_sweep(exp, ["sensitivity"], "50")


def test_a_step_whose_jobs_wait_in_a_cluster_queue_goes_on_when_made_again(tmp_path, video_root, monkeypatch):
    """On a cluster the array runs after the command: `run_to_end` says the jobs wait (None); once the array has
    drained the queue the same call goes on (the sweep's oracle rows, which waited for the oracle, are queued and
    submitted), and once they are done it returns the table. (No SLURM here: submission is recorded, and a
    `gardener worker` drains the queue as an array task would.)"""
    from gardener.experiments import launchers
    from gardener.experiments.launch import Launch
    from gardener.experiments.queue import QueueOptions
    from gardener.experiments.worker import work

    submitted = []
    monkeypatch.setattr(launchers, "submit_slurm", lambda run, *a, **k: submitted.append(run.path) or {})
    exp, step = _sweep_step(tmp_path, video_root, Launch(launcher="slurm"))
    assert launchers.run_to_end(exp, step, print) is None  # the oracle's jobs wait
    assert not (exp.run.path / "sweep.json").exists() and len(submitted) == 1
    work(exp.run.path, QueueOptions(wait=False))
    assert launchers.run_to_end(exp, step, print) is None  # the oracle's own rows now wait
    assert (exp.run.path / "sensitivity.json").is_file() and len(submitted) == 2
    work(exp.run.path, QueueOptions(wait=False))
    result = launchers.run_to_end(exp, step, print)
    assert [(r["criterion"], r["count"]) for r in result["table"]["rows"]] == [("sensitivity", 2)]
    assert (exp.run.path / "sweep.json").is_file() and len(submitted) == 3


def test_a_step_run_by_submitits_local_cluster_ends_in_one_call_with_the_oracle_rows(tmp_path, video_root):
    from gardener.experiments.launch import Launch
    from gardener.experiments.launchers import run_to_end
    from gardener.experiments.runs import plan_job_ids

    exp, step = _sweep_step(tmp_path, video_root, Launch(launcher="slurm", submitit_cluster="local"))
    result = run_to_end(exp, step, print)  # the array ran the oracle, then the rows that waited for it
    assert [(r["criterion"], r["count"]) for r in result["table"]["rows"]] == [("sensitivity", 2)]
    _every_job_once(exp.run.path, set(plan_job_ids(exp.run)))  # each once, in the two rounds of arrays


def test_the_demo_checks_its_launcher_before_it_writes_anything(tmp_path, capsys):
    if os.environ.get("PATH") and any(Path(p, "sbatch").exists() for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("this machine has sbatch")
    assert run_cli("demo", tmp_path / "d", "--quick", "--launcher", "slurm") == 2
    assert "sbatch is not on this machine's PATH" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert run_cli("demo", tmp_path / "d", "--quick", "--launcher", "local", "--local-workers", "0") == 2
    assert "--local-workers 0: expected a positive number" in capsys.readouterr().err and not (tmp_path / "d").exists()
