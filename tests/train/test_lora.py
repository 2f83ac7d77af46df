"""Healing a video classifier with LoRA: only the adapters and the head train, the adapters are merged into a
plain checkpoint (the final model and best/), which stock transformers loads and which reproduces the evaluation."""
from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from safetensors import safe_open

from gardener.errors import GardenerError
from gardener.train import DataOptions, Recipe, evaluate_model, finetune
from gardener.train.lora import Lora

CLIPS = dict(sampling_rate=2, test_clips=2, test_crops=1, min_crop_scale=0.3)


def test_lora_heals_a_video_classifier_into_a_plain_checkpoint(tmp_path, video_root, tiny_model_dir):
    data = DataOptions(video_root, val_fraction=0.3, workers=0)
    recipe = Recipe(batch_size=8, max_steps=12, warmup_steps=2, base_lr=0.5, layer_decay=1.0, drop_path=0.1,
                    classifier_dropout=0.0, eval_every=6, save_every=1000)
    info = finetune(tiny_model_dir, tmp_path / "run", data, recipe, seed=0, lora=Lora(rank=4), **CLIPS)
    assert info["lora"]["trainable"] < info["lora"]["total"] / 2 and info["lora"]["merged"]
    for folder in ("model", "best"):
        with safe_open(str(tmp_path / "run" / folder / "model.safetensors"), "pt") as saved, \
                safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as original:
            assert set(saved.keys()) == set(original.keys()), folder  # no adapter left
            moved = {name for name in original.keys()
                     if not torch.equal(saved.get_tensor(name).float(), original.get_tensor(name).float())}
        assert "videomae.embeddings.patch_embeddings.projection.weight" not in moved  # frozen
        assert "videomae.encoder.layer.0.intermediate.dense.weight" in moved  # adapted, merged
        assert "classifier.weight" in moved  # the fresh head trains whole
        for layer in range(2):  # query: adapted, or said to be unused (transformers 4 bypasses its forward)
            query = f"videomae.encoder.layer.{layer}.attention.attention.query"
            assert (f"{query}.weight" in moved) != (query in info["lora"]["unused_adapters"])
        T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "run" / folder)
    again = evaluate_model(tmp_path / "run" / "model", data, **{k: v for k, v in CLIPS.items() if k != "min_crop_scale"})
    assert again["top1"] == pytest.approx(info["final"]["top1"])
    assert json.loads((tmp_path / "run" / "gardener.json").read_text())["lora"]["rank"] == 4


def test_bad_lora_settings_are_refused_before_the_run(tmp_path, video_root, tiny_model_dir):
    data = DataOptions(video_root, workers=0)
    for bad, flag in ((Lora(rank=0), "--lora-rank"), (Lora(alpha=0), "--lora-alpha"), (Lora(dropout=1), "--lora-dropout")):
        with pytest.raises(GardenerError, match=flag):
            finetune(tiny_model_dir, tmp_path / "bad", data, Recipe(max_steps=2), seed=0, lora=bad, **CLIPS)
    assert not (tmp_path / "bad").exists()
