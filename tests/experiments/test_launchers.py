"""Launchers as objects: `--launcher` mapped to one in one place, the launch recorded in RUN/launch.json,
per-job logs, and the sbatch script written from the launch settings (no submitit needed to write it)."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest
from conftest import run_cli, tiny_videomae

from gardener.errors import GardenerError
from gardener.experiments.joblog import job_log
from gardener.experiments.launch import Launch
from gardener.experiments.launchers import LAUNCHERS, Here, LocalWorkers, Slurm, launcher_for
from gardener.experiments.protocol import prepare
from gardener.experiments.queue import QueueOptions
from gardener.experiments.runs import RunDir
from gardener.experiments.slurm import sbatch_script, write_sbatch
from gardener.train import DataOptions, Recipe

CLIP = {"frames": None, "size": None, "sampling_rate": 2, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.3}
OPTS = ["--max-steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--lr", "0.06", "--layer-decay", "1",
        "--drop-path", "0", "--workers", "0", "--sampling-rate", "2", "--test-clips", "1", "--test-crops", "1"]


def test_each_launcher_name_maps_to_its_launcher_and_an_unknown_one_is_a_one_line_error():
    assert set(LAUNCHERS) == {"none", "local", "slurm"}
    for name, kind in (("none", Here), ("local", LocalWorkers), ("slurm", Slurm)):
        launcher = launcher_for(Launch(launcher=name, local_workers=3))
        assert type(launcher) is kind and launcher.launch.local_workers == 3
    with pytest.raises(GardenerError) as error:
        launcher_for(Launch(launcher="cloud"))
    assert str(error.value) == "--launcher 'cloud': expected one of none, local, slurm"
    assert "\n" not in str(error.value)


def test_workers_that_share_out_the_jobs_refuse_a_shard_and_this_process_takes_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    launcher_for(Launch()).prepare(sharded=True)
    launcher_for(Launch(launcher="local")).prepare(sharded=False)
    with pytest.raises(GardenerError, match="--shard with --launcher local: .* give one or the other"):
        launcher_for(Launch(launcher="local")).prepare(sharded=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(GardenerError, match="--launcher local under torchrun"):
        launcher_for(Launch(launcher="local")).prepare(sharded=False)


def test_the_launch_is_recorded_in_the_run_folder_and_a_rerun_replaces_it(tmp_path, video_root):
    model = tiny_videomae(tmp_path / "m", depth=1)
    first = Launch(launcher="slurm", gpus_per_job=2, timeout_min=30, partition="gpu", sbatch=["account=vision"])
    queue = QueueOptions(retries=3, stale_after=60)
    exp = prepare(model, tmp_path / "run", DataOptions(video_root, workers=0), Recipe(max_steps=2), CLIP,
                  queue=queue, launch=first)
    record = json.loads((tmp_path / "run" / "launch.json").read_text())
    assert record["launch"] == json.loads(json.dumps(asdict(first))) and record["queue"] == asdict(queue)
    assert exp.launch == first
    prepare(model, tmp_path / "run", DataOptions(video_root, workers=0), Recipe(max_steps=2), CLIP)
    record = json.loads((tmp_path / "run" / "launch.json").read_text())
    assert record["launch"] == asdict(Launch()) and record["queue"] == asdict(QueueOptions())
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # written whole, no temporary


def test_what_a_job_prints_goes_to_its_log_appended_attempt_after_attempt(tmp_path, capsys):
    folder = tmp_path / "job"
    folder.mkdir()
    with job_log(folder, "abc123") as path:
        print("to stdout")
        print("to stderr", file=sys.stderr)
    print("after the job")
    with job_log(folder, "abc123"):
        print("second attempt")
    text = path.read_text()
    assert text.count("--- job abc123:") == 2 and "to stdout\n" in text and "to stderr\n" in text
    assert text.index("to stdout") < text.index("second attempt") and "after the job" not in text
    said = capsys.readouterr()
    assert "to stdout" in said.out and "to stderr" in said.err  # the worker's own output keeps every line


def test_a_job_log_that_cannot_be_written_does_not_stop_the_job(tmp_path, capsys):
    with job_log(tmp_path / "no such folder", "abc123"):
        print("still printed")
    assert "still printed" in capsys.readouterr().out


def test_the_sbatch_script_is_written_from_the_launch_settings_without_submitit(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails: the script does not need it
    run = RunDir(tmp_path / "run", "0" * 64)
    run.path.mkdir()
    launch = Launch(launcher="slurm", gpus_per_job=2, timeout_min=30, partition="gpu", array_parallelism=2,
                    sbatch=["account=vision", "mem=64G", "time=45"])
    options = QueueOptions(wait=False, max_jobs=1)
    script = write_sbatch(run, launch, options, 3)
    lines = script.read_text().splitlines()
    assert script == run.path / "slurm" / "submit.sbatch" and lines[0] == "#!/bin/bash"
    assert (run.path / "slurm" / "manual").is_dir()  # sbatch does not make its logs' folder
    logs = f"{(run.path / 'slurm' / 'manual').resolve()}/%A_%a_0_log.out"
    for line in ("#SBATCH --job-name=gardener-run", "#SBATCH --partition=gpu", "#SBATCH --time=45",
                 "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --array=0-2%2", f"#SBATCH --output={logs}", f"#SBATCH --error={logs}",
                 "#SBATCH --signal=USR2@90", "#SBATCH --account=vision", "#SBATCH --mem=64G"):
        assert line in lines, line
    assert "#SBATCH --time=30" not in lines  # --sbatch time=45 replaced it
    assert lines[-1].startswith("srun --unbuffered ") and lines[-1].endswith(
        f"-m gardener worker {run.path.resolve()} --retries 1 --stale-after 300 --no-wait --max-jobs 1")
    sbatch = [k for k, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert all(line.startswith("#") for line in lines[:sbatch[-1]])  # sbatch reads directives up to the command
    assert sbatch_script(run, Launch(gpus_per_job=0), options, 1).count("--gpus-per-node") == 0
    assert "#SBATCH --array=0-0%1" in sbatch_script(run, Launch(gpus_per_job=0), options, 1).splitlines()


def test_local_workers_write_a_log_per_job_and_the_launch_is_recorded(tmp_path, video_root, capsys):
    model = tiny_videomae(tmp_path / "m", depth=2)
    run = tmp_path / "run"
    assert run_cli("sensitivity", model, "-o", run, "--data", video_root, *OPTS, "--launcher", "local",
                   "--local-workers", "1", "--retries", "2") == 0
    ids = [j["id"] for j in json.loads((run / "sensitivity.plan.json").read_text())["jobs"]]
    assert len(ids) == 3 and (run / "sensitivity.json").is_file()
    assert (run / "workers" / "worker-1.log").is_file()  # the worker's own log is kept beside the jobs' logs
    for job_id in ids:
        log = (run / "jobs" / job_id / "log.txt").read_text()
        assert log.startswith(f"--- job {job_id}: ") and log.count("--- job ") == 1  # one attempt, its own job
    record = json.loads((run / "launch.json").read_text())
    assert record["launch"]["launcher"] == "local" and record["launch"]["local_workers"] == 1
    assert record["queue"]["retries"] == 2
