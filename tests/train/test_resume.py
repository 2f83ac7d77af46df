"""Resuming finetuning: another run is refused, a finished one left unchanged; finetuning needs two classes."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import QUICK_CLIPS as CLIPS
from conftest import build_hf, cli, one_line_error, tiny_videomae, write_safetensors
from conftest import quick_recipe as _recipe

from gardener.errors import GardenerError
from gardener.train import DataOptions, finetune


def snapshot(folder) -> dict:
    """Every file under a folder with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupted_run(folder, video_root, model) -> DataOptions:
    options = DataOptions(video_root, workers=0)

    def crash(step, loss):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune(model, folder, options, _recipe(), seed=1, callbacks=[crash], **CLIPS)
    return options


def test_resume_refuses_another_recipe_data_or_model_and_records_a_longer_run(tmp_path, video_root, tiny_model_dir):
    run = tmp_path / "run"
    options = _interrupted_run(run, video_root, tiny_model_dir)
    before = snapshot(run)
    for changed, kwargs in (("batch_size", {"recipe": _recipe(batch_size=8)}),
                            ("base_lr", {"recipe": _recipe(base_lr=0.2)}),
                            ("seed", {"seed": 2}),
                            ("data.test", {"options": DataOptions(video_root, workers=0, val_fraction=0.4)}),
                            ("model.files", {"model": tiny_videomae(tmp_path / "other", seed=5)})):
        args = {"model": tiny_model_dir, "options": options, "recipe": _recipe(), "seed": 1, **kwargs}
        with pytest.raises(GardenerError, match=rf"--resume: .* was started as another run \(.*{changed}"):
            finetune(args["model"], run, args["options"], args["recipe"], seed=args["seed"], resume=True, **CLIPS)
    assert snapshot(run) == before  # a refused resume touches nothing
    with pytest.raises(GardenerError, match="is at step 2, but --max-steps/--epochs now give 1 steps"):
        finetune(tiny_model_dir, run, options, _recipe(max_steps=1), seed=1, resume=True, **CLIPS)
    assert snapshot(run) == before
    info = finetune(tiny_model_dir, run, options, _recipe(max_steps=6, save_every=3), seed=1, resume=True, **CLIPS)
    assert info["steps"] == 6 and info["recipe"]["max_steps"] == 6
    assert info["resumes"] == [{"step": 2, "changed": {"recipe.max_steps": [4, 6], "recipe.save_every": [2, 3]}}]
    assert json.loads((run / "gardener.json").read_text())["resumes"] == info["resumes"]
    # a finished run is not extended or changed either: it says what differs
    finished = snapshot(run)
    with pytest.raises(GardenerError, match=r"finished \(6 steps\) with other options \(recipe.max_steps: 6 -> 8"):
        finetune(tiny_model_dir, run, options, _recipe(max_steps=8, save_every=3), seed=1, resume=True, **CLIPS)
    assert snapshot(run) == finished


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, video_root, tiny_model_dir, capsys):
    run = tmp_path / "run"
    args = ["finetune", tiny_model_dir, "--data", video_root, "-o", run, "--max-steps", 2, "--batch-size", 4,
            "--warmup-steps", 1, "--sampling-rate", 2, "--test-clips", 1, "--test-crops", 1, "--workers", 0]
    assert cli(args, capsys)[0] == 0
    before = snapshot(run)
    code, out, err = cli(args + ["--resume"], capsys)
    assert code == 0 and "this run finished (2 steps); nothing was changed" in err and "top-1" in out
    assert snapshot(run) == before
    # a folder another command wrote is not a finished run
    source = write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    assert cli(["prune", source, "-o", tmp_path / "pruned", "--remove", "1", "--criterion", "l2"], capsys)[0] == 0
    code, _, err = cli(args[:5] + [tmp_path / "pruned", "--resume"] + args[6:], capsys)
    assert code == 2 and "is not a `gardener finetune` run folder" in one_line_error(err)


def _link_class(src, dst):
    dst.mkdir(parents=True)
    for video in sorted(src.glob("*.mp4")):
        if video.name != "broken.mp4":
            os.symlink(video, dst / video.name)


def test_finetuning_needs_two_classes_each_with_a_training_video(tmp_path, video_root, tiny_model_dir):
    single = tmp_path / "single"
    _link_class(video_root / "red_to_blue", single / "red_to_blue")
    with pytest.raises(GardenerError, match="one class \\(red_to_blue\\); finetuning a classifier needs at least two"):
        finetune(tiny_model_dir, tmp_path / "run", DataOptions(single, workers=0), _recipe(), **CLIPS)
    unreadable = tmp_path / "unreadable"
    _link_class(video_root / "red_to_blue", unreadable / "red_to_blue")
    (unreadable / "silent").mkdir()
    for k in range(2):  # one goes to the test split, the other (unreadable) leaves no training video
        shutil.copy(video_root / "blue_to_red" / "broken.mp4", unreadable / "silent" / f"broken{k}.mp4")
    with pytest.raises(GardenerError, match="class 'silent' has no training video"):
        finetune(tiny_model_dir, tmp_path / "run", DataOptions(unreadable, workers=0), _recipe(), **CLIPS)
    assert not (tmp_path / "run").exists()
