"""`--report-to`: TensorBoard gets log.jsonl's numbers at log.jsonl's steps, resumes in place, and a
missing or unknown tracker is a one-line error before the run folder exists."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli as _cli

from gardener.errors import GardenerError
from gardener.train import DataOptions, Recipe, finetune, read_losses, tracking
from gardener.train.pretrain import PretrainRecipe, pretrain

pytest.importorskip("tensorboard")

CLIPS = {"sampling_rate": 2, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.3}
CLI_RUN = ["--max-steps", 4, "--batch-size", 4, "--warmup-steps", 1, "--sampling-rate", 2, "--test-clips", 1,
           "--test-crops", 1, "--workers", 0]


def _tensorboard(folder) -> dict[str, dict[int, float]]:
    """Every scalar series of a TensorBoard folder as {tag: {step: value}}; a step logged twice fails."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    series = {}
    for tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        steps = [p.step for p in points]
        assert len(steps) == len(set(steps)), f"{tag}: steps logged twice: {steps}"
        series[tag] = {p.step: p.value for p in points}
    return series


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line]


def _per_step(folder, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in _records(folder) if key in r}


def _approx(series: dict[int, float]):
    return pytest.approx(series, rel=1e-6, abs=1e-12)  # TensorBoard keeps float32


def test_finetune_reports_log_jsonl_steps_and_evaluations_to_tensorboard(tmp_path, video_root, tiny_model_dir):
    run = tmp_path / "run"
    assert _cli("finetune", tiny_model_dir, "--data", video_root, "-o", run, *CLI_RUN, "--eval-every", 2,
                "--report-to", "tensorboard") == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    logged = _tensorboard(run / "tensorboard")
    assert list(logged["train/loss"]) == [1, 2, 3, 4]
    assert logged["train/loss"] == _approx(read_losses(run))
    assert logged["train/lr"] == _approx(_per_step(run, "lr"))
    assert logged["train/epoch"] == _approx(_per_step(run, "epoch"))
    # the evaluation at step 2 (log.jsonl's) and the final one at step 4 (eval.json's)
    middle = next(r["eval"] for r in _records(run) if "eval" in r)
    final = json.loads((run / "eval.json").read_text())
    for metric in ("top1", "top5", "uar"):
        assert logged[f"eval/{metric}"] == _approx({2: middle[metric], 4: final[metric]}), metric
    # log.jsonl is what it is without a tracker: one record per step and per evaluation, nothing else
    assert [sorted(r) for r in _records(run)] == [["clips_per_s", "epoch", "loss", "lr", "step"]] * 2 + [
        ["eval", "step"]] + [["clips_per_s", "epoch", "loss", "lr", "step"]] * 2


def test_a_resumed_run_continues_the_same_tensorboard_folder_after_its_checkpoint(
        tmp_path, video_root, tiny_model_dir):
    """Cut at step 5 with checkpoints at 2 and 4: the resumed run logs steps 5-8 into the same folder,
    and step 5 of the interrupted run is purged, as log.jsonl drops it."""
    recipe = Recipe(batch_size=4, max_steps=8, warmup_steps=1, base_lr=2e-3 * 256 / 4, save_every=2, layer_decay=1.0)
    options = DataOptions(video_root, workers=0)

    def crash(step, loss):
        if step == 5:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune(tiny_model_dir, tmp_path / "cut", options, recipe, seed=3, callbacks=[crash], report_to="tensorboard",
                 **CLIPS)
    interrupted = _tensorboard(tmp_path / "cut" / "tensorboard")["train/loss"]
    assert list(interrupted) == [1, 2, 3, 4, 5]
    finetune(tiny_model_dir, tmp_path / "cut", options, recipe, seed=3, resume=True, report_to="tensorboard", **CLIPS)
    assert len(list((tmp_path / "cut" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    losses = _tensorboard(tmp_path / "cut" / "tensorboard")["train/loss"]
    assert list(losses) == list(range(1, 9))
    assert losses == _approx(read_losses(tmp_path / "cut"))
    assert {s: losses[s] for s in range(1, 5)} == {s: interrupted[s] for s in range(1, 5)}


def test_pretrain_reports_its_loss_and_the_trivial_loss(tmp_path, video_root):
    small = {"image_size": 32, "patch_size": 8, "num_frames": 8, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "decoder_hidden_size": 32,
             "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64}
    recipe = PretrainRecipe(batch_size=4, max_steps=3, warmup_steps=1, base_lr=2e-3 * 256 / 4)
    pretrain(DataOptions(video_root, workers=0), tmp_path / "pre", config_overrides=small, recipe=recipe,
             sampling_rate=2, report_to="tensorboard")
    logged = _tensorboard(tmp_path / "pre" / "tensorboard")
    assert list(logged["train/loss"]) == [1, 2, 3]
    assert logged["train/loss"] == _approx(read_losses(tmp_path / "pre"))
    assert logged["train/trivial"] == _approx(_per_step(tmp_path / "pre", "trivial"))
    assert not any(tag.startswith("eval/") for tag in logged)


def test_no_tracker_by_default(tmp_path, video_root, tiny_model_dir):
    run = tmp_path / "run"
    assert _cli("finetune", tiny_model_dir, "--data", video_root, "-o", run, *CLI_RUN) == 0
    assert (run / "gardener.json").is_file() and len(read_losses(run)) == 4
    assert not (run / "tensorboard").exists() and not (run / "wandb").exists()
    assert json.loads((run / "gardener.json").read_text())["arguments"]["report_to"] == "none"


def _one_line_error(capsys, *args) -> str:
    capsys.readouterr()
    assert _cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_an_unknown_tracker_is_a_one_line_error_before_the_run_folder(tmp_path, video_root, tiny_model_dir, capsys,
                                                                      command):
    model = [tiny_model_dir] if command == "finetune" else []
    err = _one_line_error(capsys, command, *model, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 1,
                          "--report-to", "mlflow")
    assert "--report-to 'mlflow'" in err and "none, tensorboard, wandb" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_a_missing_tracker_package_names_the_pip_extra(tmp_path, video_root, tiny_model_dir, capsys, monkeypatch,
                                                       command, tracker):
    monkeypatch.setattr(tracking, "installed", lambda package: package != tracker)
    model = [tiny_model_dir] if command == "finetune" else []
    err = _one_line_error(capsys, command, *model, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 1,
                          "--report-to", tracker)
    assert f"--report-to {tracker}: {tracker} is not installed" in err
    assert f'pip install "vit-gardener[{tracker}]"' in err
    assert not (tmp_path / "run").exists()


def test_the_tracker_check_comes_before_a_finished_run_is_returned(tmp_path):
    """A library caller gets the same error, whatever the run folder holds."""
    with pytest.raises(GardenerError, match="expected one of none, tensorboard, wandb"):
        finetune(tmp_path / "model", tmp_path / "run", DataOptions(tmp_path), resume=True, report_to="TensorBoard")


def test_a_run_config_is_flattened_to_the_scalars_trackers_take():
    config = tracking.flat_config({"kind": "finetune", "seed": 0, **Recipe(max_steps=3).to_dict()})
    assert config["betas.0"] == 0.9 and config["max_steps"] == 3 and config["kind"] == "finetune"
    assert "epochs" not in config  # unset
    assert all(isinstance(v, (bool, int, float, str)) for v in config.values())
    assert tracking.scalars({"step": 3, "loss": 0.5, "lr": 1e-3, "eval": {"top1": 0.25, "uar": None}}) == {
        "train/loss": 0.5, "train/lr": 1e-3, "eval/top1": 0.25}
