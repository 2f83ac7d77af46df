"""Finetuning and evaluation on generated videos: it learns, resumes exactly, and round-trips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as T
from conftest import run_cli as _cli
from conftest import tiny_videomae

from gardener.errors import GardenerError
from gardener.report.figures import draw_eval_figures
from gardener.train import DataOptions, Recipe, evaluate_model, finetune, read_losses
from gardener.train.evaluate import read_predictions
from gardener.train.pretrain import PretrainRecipe, pretrain
from gardener.pruning import Cut, prune_checkpoint

CLIPS = dict(sampling_rate=2, test_clips=2, test_crops=1, min_crop_scale=0.3)


def _recipe(**overrides) -> Recipe:
    """A few dozen CPU steps: a high lr (per 256 clips), no layer decay from random init."""
    base = dict(batch_size=8, max_steps=40, warmup_steps=3, base_lr=2e-3 * 256 / 8, drop_path=0.1,
                classifier_dropout=0.0, layer_decay=1.0, save_every=1000)
    return Recipe(**{**base, **overrides})


@pytest.mark.parametrize("seed", [0, 1])
def test_a_tiny_model_learns_the_synthetic_task(tmp_path, video_root, tiny_model_dir, seed):
    info = finetune(tiny_model_dir, tmp_path / "run", DataOptions(video_root, val_fraction=0.3), _recipe(),
                    seed=seed, **CLIPS)
    losses = read_losses(tmp_path / "run")
    assert len(losses) == 40 and np.mean(list(losses.values())[-5:]) < np.mean(list(losses.values())[:5]) - 0.2
    assert info["data"]["test_videos"] == 12 and info["final"]["top1"] >= 0.75  # chance: 0.25
    assert info["data"]["skipped"][0]["path"].endswith("broken.mp4")
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["top1"] == info["final"]["top1"]


def test_resume_continues_on_the_same_trajectory(tmp_path, video_root, tiny_model_dir):
    recipe = _recipe(batch_size=4, grad_accum=2, max_steps=8, save_every=2, drop_path=0.2, classifier_dropout=0.5,
                     mix=True)
    options = DataOptions(video_root, workers=2)
    finetune(tiny_model_dir, tmp_path / "whole", options, recipe, seed=3, **CLIPS)

    def crash(step, loss):
        if step == 5:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune(tiny_model_dir, tmp_path / "cut", options, recipe, seed=3, callbacks=[crash], **CLIPS)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    finetune(tiny_model_dir, tmp_path / "cut", options, recipe, seed=3, resume=True, **CLIPS)
    whole, cut = read_losses(tmp_path / "whole"), read_losses(tmp_path / "cut")
    assert list(cut) == list(range(1, 9))
    assert [cut[s] for s in range(5, 9)] == [whole[s] for s in range(5, 9)]


def test_a_pruned_model_finetunes_and_its_saved_model_reproduces_the_evaluation(tmp_path, video_root):
    source = tiny_videomae(tmp_path / "src", depth=4)
    prune_checkpoint(source, tmp_path / "pruned", Cut(blocks=(2, 3)))
    finetune(tmp_path / "pruned", tmp_path / "run", DataOptions(video_root), _recipe(max_steps=6), **CLIPS)
    saved = T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "run" / "model")
    assert saved.config.num_hidden_layers == 2 and saved.config.id2label[0] == "blue_to_red"
    for layer in saved.videomae.encoder.layer:
        attention = layer.attention.attention
        biases = [getattr(attention, "q_bias", None), getattr(attention, "v_bias", None)]
        biases = [b if b is not None else getattr(attention, n).bias for b, n in zip(biases, ("query", "value"))]
        assert all(b.abs().sum() > 0 for b in biases)
    evaluate_model(tmp_path / "run" / "model", DataOptions(video_root), test_clips=2, test_crops=1,
                           sampling_rate=2, out=tmp_path / "eval", figures=draw_eval_figures)
    logged = read_predictions(tmp_path / "run" / "predictions.csv")
    recomputed = read_predictions(tmp_path / "eval" / "predictions.csv")
    assert logged.keys() == recomputed.keys()
    for path, probs in logged.items():
        np.testing.assert_allclose(recomputed[path], probs, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000


def test_a_pretraining_checkpoint_is_accepted(tmp_path, video_root):
    config = T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=32,
                              num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              decoder_num_hidden_layers=1, decoder_hidden_size=32, decoder_num_attention_heads=2,
                              decoder_intermediate_size=64, use_mean_pooling=False)
    torch.manual_seed(0)
    pretrained = T.VideoMAEForPreTraining(config)
    pretrained.save_pretrained(tmp_path / "pre")
    finetune(tmp_path / "pre", tmp_path / "run", DataOptions(video_root), _recipe(max_steps=2), **CLIPS)
    model = T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "run" / "model")
    assert model.config.use_mean_pooling and model.config.num_labels == 4
    # the encoder was taken over from the pretraining checkpoint, not re-initialised
    start = pretrained.videomae.embeddings.patch_embeddings.projection.weight
    moved = (model.videomae.embeddings.patch_embeddings.projection.weight - start).abs().max()
    assert 0 < moved < 0.1


def test_cli_finetune_then_evaluate(tmp_path, video_root, tiny_model_dir, capsys):
    code = _cli("finetune", tiny_model_dir, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 3,
                "--batch-size", 4, "--warmup-steps", 1, "--sampling-rate", 2, "--test-clips", 1, "--test-crops", 1,
                "--workers", 0)
    assert code == 0
    manifest = json.loads((tmp_path / "run" / "gardener.json").read_text())
    assert manifest["steps"] == 3 and manifest["recipe"]["layer_decay"] == 0.7 and manifest["inputs"][0]["sha256"]
    assert manifest["total_batch"] == 4 and manifest["peak_lr"] == pytest.approx(5e-4 * 4 / 256)
    assert _cli("evaluate", tmp_path / "run" / "model", "--data", video_root, "--sampling-rate", 2,
                "-o", tmp_path / "eval") == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert "top-1 accuracy (WAR)" in printed and f"{result['top1']:.4f}" in printed
    assert result["views"] == 15 * result["videos"] and len(result["confusion"]) == 4  # 5 clips x 3 crops
    assert _cli("finetune", tiny_model_dir, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 3) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err


@pytest.mark.parametrize("case,message", [
    ("frames", "--frames 16: the model is built for 8-frame clips"),
    ("size", "--size 36: not a multiple of the model's patch size 8"),
    ("no_data", "no such file or folder"),
    ("missing_listed", "missing under"),
    ("no_steps", "exactly one of --epochs or --max-steps"),
])
def test_bad_input_fails_before_training(tmp_path, video_root, tiny_model_dir, capsys, case, message):
    args = ["finetune", tiny_model_dir, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 1]
    if case == "frames":
        args += ["--frames", 16]
    elif case == "size":
        args += ["--size", 36]
    elif case == "no_data":
        args[3] = tmp_path / "nowhere"
    elif case == "missing_listed":
        from gardener.data.synthetic import write_ucf101_splits

        files = {p.name: sorted(p.glob("*_00*.mp4")) for p in video_root.iterdir() if p.is_dir()}
        split_dir = write_ucf101_splits(tmp_path / "splits", files, video_root)
        (split_dir / "testlist01.txt").write_text("red_to_blue/gone.mp4\n")
        args += ["--split-dir", split_dir]
    elif case == "no_steps":
        args = args[:-2]
    capsys.readouterr()
    assert _cli(*args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()



def test_two_processes_under_torchrun_follow_the_single_process_run(tmp_path, video_root, tiny_model_dir):
    """Two CPU processes with 4 clips each take the same steps as one process with 8 (gloo, DDP)."""
    import os
    import subprocess
    import sys

    common = ["--data", str(video_root), "--max-steps", "3", "--warmup-steps", "1", "--sampling-rate", "2",
              "--test-clips", "1", "--test-crops", "1", "--workers", "0", "--drop-path", "0",
              "--classifier-dropout", "0", "--min-crop-scale", "0.3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if torch.cuda.device_count() < 2:  # two processes need two GPUs; otherwise both runs are on the CPU (gloo)
        env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gardener",
                    "finetune", str(tiny_model_dir), "-o", str(tmp_path / "two"), "--batch-size", "4", *common],
                   check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, "-m", "gardener", "finetune", str(tiny_model_dir), "-o", str(tmp_path / "one"),
                    "--batch-size", "8", *common], check=True, capture_output=True, env=env)
    two, one = json.loads((tmp_path / "two" / "gardener.json").read_text()), read_losses(tmp_path / "one")
    assert two["world_size"] == 2 and two["total_batch"] == 8 and two["final"]["videos"] == 8
    np.testing.assert_allclose(list(read_losses(tmp_path / "two").values()), list(one.values()), rtol=1e-4)


def test_a_float16_checkpoint_finetunes_and_evaluates_in_float32(tmp_path, video_root):
    """Released VideoMAEs are stored in float16, and transformers 5 loads them so; training float16
    weights with AdamW would round every small update away, so the master weights are float32."""
    from gardener.train.finetune import load_classifier

    source = tiny_videomae(tmp_path / "src", depth=2)
    T.VideoMAEForVideoClassification.from_pretrained(source).half().save_pretrained(tmp_path / "half")
    if int(T.__version__.split(".")[0]) >= 5:  # transformers 4 loads float32 unless asked
        assert T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "half").dtype == torch.float16
    model = load_classifier(tmp_path / "half", ["a", "b", "c"], _recipe())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    info = finetune(tmp_path / "half", tmp_path / "run", DataOptions(video_root), _recipe(max_steps=2), **CLIPS)
    assert np.isfinite(info["final"]["top1"])
    finetuned = T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "run" / "model")
    assert finetuned.dtype == torch.float32
    finetuned.half().save_pretrained(tmp_path / "run-half")
    again = evaluate_model(tmp_path / "run-half", DataOptions(video_root), sampling_rate=2, test_clips=2, test_crops=1)
    assert again["videos"] == info["final"]["videos"] and abs(again["top1"] - info["final"]["top1"]) <= 1 / 12


def test_finetune_then_evaluate_share_a_process_whatever_precision_its_accelerate_state_had(
        tmp_path, video_root, tiny_model_dir):
    """One process, several jobs: an Accelerate state left at bf16 (by other code, or by a job on a
    GPU) must not stop a float32 finetuning and evaluation, which then reproduce each other."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from gardener.train.evaluate import read_predictions

    AcceleratorState._reset_state()
    Accelerator(cpu=True, mixed_precision="bf16")
    try:
        finetune(tiny_model_dir, tmp_path / "run", DataOptions(video_root, workers=0),
                 _recipe(max_steps=2, bf16=False), **CLIPS)
        evaluate_model(tmp_path / "run" / "model", DataOptions(video_root, workers=0), test_clips=2, test_crops=1,
                       sampling_rate=2, out=tmp_path / "eval")
    finally:
        AcceleratorState._reset_state()
    logged = read_predictions(tmp_path / "run" / "predictions.csv")
    again = read_predictions(tmp_path / "eval" / "predictions.csv")
    assert logged.keys() == again.keys()
    for path, probs in logged.items():
        np.testing.assert_allclose(again[path], probs, rtol=1e-5, atol=1e-6)


def test_a_compiled_model_takes_the_same_steps_and_saves_a_stock_checkpoint(tmp_path, video_root, tiny_model_dir):
    """--compile (torch.compile, inductor on the CPU here) changes the speed, not the run."""
    options = DataOptions(video_root, workers=0)
    runs = {c: finetune(tiny_model_dir, tmp_path / f"run-{c}", options, _recipe(max_steps=3, compile=c), seed=2,
                        **CLIPS) for c in (False, True)}
    eager, compiled = read_losses(tmp_path / "run-False"), read_losses(tmp_path / "run-True")
    np.testing.assert_allclose(list(compiled.values()), list(eager.values()), rtol=1e-4)
    assert runs[True]["recipe"]["compile"] is True
    saved = T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "run-True" / "model")
    assert not any("_orig_mod" in k for k in saved.state_dict())


def test_repeated_augmentation_trains_on_twice_the_clips_per_step(tmp_path, video_root, tiny_model_dir):
    info = finetune(tiny_model_dir, tmp_path / "run", DataOptions(video_root, workers=0),
                    _recipe(max_steps=2, batch_size=4, num_sample=2), **CLIPS)
    assert info["recipe"]["num_sample"] == 2 and info["clips_per_step"] == 8 and info["total_batch"] == 4
    assert len(read_losses(tmp_path / "run")) == 2 and np.isfinite(info["final"]["top1"])


def test_finetune_and_pretrain_keep_one_kind_of_run_folder_and_resume_alike(tmp_path, video_root, tiny_model_dir):
    """One skeleton (gardener/train/run.py) runs both: the same start.json, log.jsonl, checkpoints and
    gardener.json; a pretraining run cut short resumes onto the very same losses, a finished one is left
    as it is, and training writes data only (the confusion matrix is drawn from eval.json afterwards)."""
    options = DataOptions(video_root, workers=0)
    finetune(tiny_model_dir, tmp_path / "ft", options, _recipe(max_steps=4, save_every=2), **CLIPS)
    small = {"image_size": 32, "patch_size": 8, "num_frames": 8, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "decoder_hidden_size": 32,
             "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64}
    recipe = PretrainRecipe(batch_size=4, max_steps=4, warmup_steps=1, base_lr=2e-3 * 256 / 4, save_every=2)

    def pre(folder, **kwargs):
        return pretrain(options, tmp_path / folder, config_overrides=small, sampling_rate=2, seed=1,
                        **{"recipe": recipe, **kwargs})

    def crash(step, loss):
        if step == 3:
            raise RuntimeError("killed")
    pre("whole")
    with pytest.raises(RuntimeError, match="killed"):
        pre("cut", callbacks=[crash])
    resumed = pre("cut", resume=True)
    assert resumed["resumes"] == [{"step": 2, "changed": {}}]
    assert read_losses(tmp_path / "cut") == read_losses(tmp_path / "whole")  # bit for bit
    for run in ("ft", "whole", "cut"):
        names = {p.name for p in (tmp_path / run).iterdir()}
        assert {"start.json", "log.jsonl", "checkpoints", "gardener.json", "model"} <= names, run
        assert sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
        identity = json.loads((tmp_path / run / "start.json").read_text())["identity"]
        assert list(identity)[-4:] == ["recipe", "clip", "seed", "world_size"], run
        assert json.loads((tmp_path / run / "gardener.json").read_text())["steps"] == 4
    assert pre("cut", resume=True)["already_finished"]
    with pytest.raises(GardenerError, match="finished .* with other options"):
        pre("cut", resume=True, recipe=PretrainRecipe(**{**recipe.to_dict(), "mask_ratio": 0.75}))
    assert not (tmp_path / "ft" / "confusion.png").exists() and (tmp_path / "ft" / "eval.json").is_file()
    assert draw_eval_figures(tmp_path / "ft") == [tmp_path / "ft" / "confusion.png"]
    assert (tmp_path / "ft" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_finetune_command_draws_the_confusion_matrix_of_its_run(tmp_path, video_root, tiny_model_dir):
    assert _cli("finetune", tiny_model_dir, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 1,
                "--batch-size", 4, "--warmup-steps", 1, "--sampling-rate", 2, "--test-clips", 1, "--test-crops", 1,
                "--workers", 0) == 0
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 1000


def test_a_zero_learning_rate_runs_its_whole_schedule_at_zero():
    from gardener.train.recipe import lr_factor

    assert all(lr_factor(step, 0, 4, 0.0, 0.0) * 0.0 == 0.0 for step in range(4))  # no division by the peak lr
    assert lr_factor(0, 0, 4, 1.0, 0.0) == 1.0 and lr_factor(4, 0, 4, 1.0, 0.0) == 0.0
