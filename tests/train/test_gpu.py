"""On a GPU: bf16 finetuning, evaluation and pretraining in one process, and reloads that agree.

Skipped where there is no CUDA (the CPU CI); run them on a GPU machine with `pytest -m gpu`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_videomae

from gardener.train import DataOptions, Recipe, evaluate_model, finetune
from gardener.train.evaluate import read_predictions

pytestmark = pytest.mark.gpu
CLIPS = dict(sampling_rate=2, test_clips=2, test_crops=1, min_crop_scale=0.3)


def _recipe(**overrides) -> Recipe:
    base = dict(batch_size=8, max_steps=6, warmup_steps=1, base_lr=2e-3 * 256 / 8, layer_decay=1.0, drop_path=0.0,
                classifier_dropout=0.0, save_every=1000)
    return Recipe(**{**base, **overrides})


def test_bf16_finetune_then_evaluate_then_reload_agree(tmp_path, video_root, tiny_model_dir):
    info = finetune(tiny_model_dir, tmp_path / "run", DataOptions(video_root, workers=2), _recipe(bf16=True), **CLIPS)
    assert info["steps"] == 6 and np.isfinite(info["final"]["top1"])
    result = evaluate_model(tmp_path / "run" / "model", DataOptions(video_root, workers=2), test_clips=2,
                            test_crops=1, sampling_rate=2, out=tmp_path / "eval")
    logged = read_predictions(tmp_path / "run" / "predictions.csv")  # bf16 autocast
    again = read_predictions(tmp_path / "eval" / "predictions.csv")  # float32
    assert logged.keys() == again.keys() and result["videos"] == len(logged)
    for path, probs in logged.items():
        np.testing.assert_allclose(again[path], probs, atol=3e-2)  # bf16 keeps about 3 significant digits


def test_jobs_of_different_precision_run_one_after_another_in_one_process(tmp_path, video_root):
    model = tiny_videomae(tmp_path / "m", depth=2)
    for k, bf16 in enumerate((True, False, True)):
        info = finetune(model, tmp_path / f"job{k}", DataOptions(video_root, workers=0), _recipe(max_steps=2, bf16=bf16),
                        seed=k, **CLIPS)
        assert info["steps"] == 2
    assert json.loads((tmp_path / "job1" / "gardener.json").read_text())["recipe"]["bf16"] is False


def test_pretraining_steps_on_the_gpu(tmp_path, video_root):
    from gardener.train.pretrain import PretrainRecipe, pretrain

    recipe = PretrainRecipe(batch_size=4, max_steps=3, warmup_steps=1, save_every=1000)
    info = pretrain(DataOptions(video_root, workers=0), tmp_path / "pre", preset="tiny",
                    config_overrides={"image_size": 32, "patch_size": 8, "num_frames": 8}, recipe=recipe,
                    sampling_rate=2)
    assert info["steps"] == 3 and torch.cuda.is_available()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "pre" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
