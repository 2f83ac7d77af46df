"""Masked pretraining: tube masks, the trivial answer's loss, a falling loss and an encoder that loads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import transformers as T
from conftest import run_cli as _cli

from gardener.train import DataOptions, read_losses
from gardener.train.evaluate import IMAGENET_MEAN, IMAGENET_STD
from gardener.train.pretrain import PretrainRecipe, preset_config, pretrain, trivial_loss, tube_mask


def test_tube_masks_hide_the_same_patches_in_every_time_slot():
    import torch

    config = T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2)
    mask = tube_mask(3, config, 0.9, torch.Generator().manual_seed(0))
    per_frame = mask.view(3, 4, 16)
    assert mask.shape == (3, 64) and (per_frame == per_frame[:, :1]).all() and (per_frame.sum(-1) == 14).all()


def _tiny_pretraining_model(norm_pix: bool):
    import torch

    config = T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                              decoder_intermediate_size=64, norm_pix_loss=norm_pix)
    torch.manual_seed(0)
    return T.VideoMAEForPreTraining(config).eval()


def _normalised(frames):
    import torch

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (frames - mean) / std


def test_trivial_loss_is_transformers_loss_of_a_decoder_that_answers_zero():
    """With per-patch normalised targets, zero is the answer that ignores the visible patches:
    transformers' own loss with a zeroed decoder head is exactly the trivial loss."""
    import torch

    model = _tiny_pretraining_model(norm_pix=True)
    with torch.no_grad():
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.zero_()
    frames = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    frames[:, :, :, :8, :8] = 0.3  # a flat patch: its normalised target is zero, predicted exactly
    mask = tube_mask(2, model.config, 0.75, torch.Generator().manual_seed(2))
    with torch.no_grad():
        hf = model(pixel_values=_normalised(frames), bool_masked_pos=mask).loss
    assert float(trivial_loss(frames, mask, model.config)) == pytest.approx(float(hf), rel=1e-5)
    # a trained decoder that answered anything else would score differently
    assert float(trivial_loss(frames, ~mask, model.config)) != pytest.approx(float(hf), rel=1e-3)


def test_trivial_loss_on_raw_pixels_is_the_error_of_the_visible_mean_colour():
    import torch

    model = _tiny_pretraining_model(norm_pix=False)
    frames = torch.zeros(1, 4, 3, 32, 32)
    frames[..., 0, :, :] = 0.5  # a red clip ...
    frames[..., 0, :16, :] = 0.9  # ... brighter in its top half
    config = model.config
    mask = torch.zeros(1, 2 * 16, dtype=torch.bool)
    mask[:, [0, 1, 16, 17]] = True  # two top patches hidden in both time slots
    # visible red: 6 top patches at 0.9 and 8 bottom at 0.5 -> 0.9 * 6/14 + 0.5 * 8/14; the hidden are 0.9
    visible_red = (0.9 * 6 + 0.5 * 8) / 14
    expected = (0.9 - visible_red) ** 2 / 3  # red only; green and blue are 0 everywhere
    assert float(trivial_loss(frames, mask, config)) == pytest.approx(expected, rel=1e-5)
    # and transformers' loss with the head answering that colour matches
    with torch.no_grad():
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.copy_(torch.tensor([visible_red, 0.0, 0.0]).repeat(2 * 8 * 8))
        hf = model(pixel_values=_normalised(frames), bool_masked_pos=mask).loss
    assert float(hf) == pytest.approx(expected, rel=1e-4)


def test_pretraining_loss_falls_and_the_encoder_loads(tmp_path):
    assert _cli("make-data", tmp_path / "data", "--classes", "move_up,move_down,grow,shrink", "--per-class", 6,
                "--frames", 8, "--size", 32) == 0
    small = {"image_size": 32, "patch_size": 8, "num_frames": 8, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "decoder_hidden_size": 32,
             "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64,
             "norm_pix_loss": False}  # pixel targets: learnt within seconds; the default is per-patch normalised
    recipe = PretrainRecipe(batch_size=6, max_steps=30, warmup_steps=3, base_lr=2e-3 * 256 / 6, save_every=10)
    info = pretrain(DataOptions(tmp_path / "data" / "videos", split_dir=tmp_path / "data" / "splits", workers=0),
                    tmp_path / "pre", config_overrides=small, recipe=recipe, sampling_rate=1)
    losses = list(read_losses(tmp_path / "pre").values())
    assert info["steps"] == 30 and np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10])
    # the log carries the trivial answer's loss per step; the summary compares the last 10 % of steps
    records = [json.loads(line) for line in (tmp_path / "pre" / "log.jsonl").read_text().splitlines()]
    assert len(records) == 30 and all(0 < r["trivial"] < 1 for r in records)
    summary = info["loss"]
    assert summary["steps_averaged"] == 3
    assert summary["final_loss"] == pytest.approx(np.mean([r["loss"] for r in records[-3:]]))
    assert summary["trivial_loss"] == pytest.approx(np.mean([r["trivial"] for r in records[-3:]]))
    assert summary["learned"] == (summary["final_loss"] < 0.9 * summary["trivial_loss"])
    assert info["config"]["norm_pix_loss"] is False and preset_config("tiny").norm_pix_loss is True
    encoder = T.VideoMAEModel.from_pretrained(tmp_path / "pre" / "encoder")
    assert encoder.config.num_hidden_layers == 2 and (tmp_path / "pre" / "encoder" / "preprocessor_config.json").exists()
    assert sorted(p.name for p in (tmp_path / "pre" / "checkpoints").iterdir()) == ["step-000020", "step-000030"]


def test_pretrain_command_warns_when_the_loss_is_no_better_than_the_trivial_answer(tmp_path, capsys):
    assert _cli("make-data", tmp_path / "data", "--classes", "move_up,grow", "--per-class", 4, "--frames", 8,
                "--size", 32) == 0
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"image_size": 32, "patch_size": 8, "num_frames": 8, "hidden_size": 32,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                                  "decoder_hidden_size": 32, "decoder_num_hidden_layers": 1,
                                  "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64}))
    capsys.readouterr()
    # three steps of per-patch normalised targets: the decoder still answers noise around zero
    assert _cli("pretrain", "--data", tmp_path / "data" / "videos", "--split-dir", tmp_path / "data" / "splits",
                "-o", tmp_path / "pre", "--config", config, "--max-steps", 3, "--batch-size", 4, "--workers", 0, "--sampling-rate", 1) == 0
    said = " ".join(capsys.readouterr().err.split())
    loss = json.loads((tmp_path / "pre" / "gardener.json").read_text())["loss"]
    assert loss["learned"] is False and loss["final_loss"] >= 0.9 * loss["trivial_loss"]
    assert f"final loss {loss['final_loss']:.4f}; the trivial answer" in said
    assert "warning: the loss is not 10 % below the trivial one" in said
