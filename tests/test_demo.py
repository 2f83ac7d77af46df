"""The embedded default: synthetic videos, masked pretraining, and `gardener demo --quick` end to end."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import transformers as T

from conftest import markdown_table

from gardener.cli import main
from gardener.data import read_split
from gardener.train import DataOptions, read_losses
from gardener.train.evaluate import IMAGENET_MEAN, IMAGENET_STD
from gardener.train.pretrain import PretrainRecipe, preset_config, pretrain, trivial_loss, tube_mask


def _cli(*args) -> int:
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    return stop.value.code


def test_make_data_is_deterministic_and_ucf101_shaped(tmp_path):
    for name in ("a", "b"):
        assert _cli("make-data", tmp_path / name, "--classes", "move_up,grow,bounce", "--per-class", 4,
                    "--frames", 8, "--size", 32, "--seed", 3) == 0
    first, second = sorted((tmp_path / "a" / "videos").rglob("*.mp4")), sorted((tmp_path / "b" / "videos").rglob("*.mp4"))
    assert len(first) == 12 and [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    train = read_split(tmp_path / "a" / "videos", "train", split_dir=tmp_path / "a" / "splits")
    test = read_split(tmp_path / "a" / "videos", "test", split_dir=tmp_path / "a" / "splits")
    assert train.classes == ["bounce", "grow", "move_up"] and (len(train), len(test)) == (9, 3)
    assert _cli("make-data", tmp_path / "a") == 2  # exists: refused without --force


def test_make_data_writes_a_target_task_with_a_small_train_and_a_large_test_split(tmp_path):
    """The same actions in another scene, with N training and M test videos per class."""
    args = ["--classes", "move_up,grow", "--frames", 8, "--size", 32, "--per-class", 3, "--test-per-class", 5]
    assert _cli("make-data", tmp_path / "t", *args, "--domain", "target") == 0
    assert _cli("make-data", tmp_path / "s", *args) == 0
    train = read_split(tmp_path / "t" / "videos", "train", split_dir=tmp_path / "t" / "splits")
    test = read_split(tmp_path / "t" / "videos", "test", split_dir=tmp_path / "t" / "splits")
    assert (len(train), len(test)) == (6, 10) and not set(train.paths) & set(test.paths)
    from gardener.data import probe, read_frames

    path = train.paths[0]
    target = read_frames(path, np.arange(8), probe(path))
    source = read_frames(tmp_path / "s" / path.relative_to(tmp_path / "t"), np.arange(8), probe(path))
    assert target.shape == source.shape == (8, 32, 32, 3) and not np.array_equal(target, source)
    def top_minus_bottom(frame):  # the median colour of the top row against the bottom row
        return np.abs(np.median(frame[0], axis=0) - np.median(frame[-1], axis=0)).max()
    assert top_minus_bottom(source[0].astype(float)) <= 2  # a flat background
    assert top_minus_bottom(target[0].astype(float)) > 2  # a vertical gradient
    assert _cli("make-data", tmp_path / "x", "--domain", "mars") == 2


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


@pytest.fixture(scope="module")
def quick_demos(tmp_path_factory):
    """`gardener demo --quick` run twice with one seed, in two folders."""
    root = tmp_path_factory.mktemp("demo")
    for name in ("a", "b"):
        assert _cli("demo", root / name, "--quick") == 0
    return root / "a", root / "b"


def _results(out):
    run = out / "run"
    return {"hash": json.loads((run / "run.json").read_text())["source_hash"],
            **{name: json.loads((run / f"{name}.json").read_text()) for name in ("sensitivity", "sweep", "agreement")}}


def test_one_seed_gives_the_same_videos_encoder_and_tables(quick_demos):
    a, b = quick_demos
    videos = sorted(p.relative_to(a) for p in (a / "data").rglob("*.mp4"))
    assert len(videos) == 8 * (24 + 6 + 25)
    assert all((a / v).read_bytes() == (b / v).read_bytes() for v in videos)
    assert _results(a) == _results(b)


def test_quick_demo_runs_the_papers_pipeline_in_miniature(quick_demos):
    from gardener.checkpoint import open_checkpoint

    out = quick_demos[0]
    text = (out / "report.md").read_text()
    released = out / "source" / "model-float16"
    ckpt = open_checkpoint(released)  # scored and pruned as released VideoMAEs are stored: float16
    assert {ckpt.info(name).dtype for name in ckpt.names()} == {"F16"}
    assert T.VideoMAEForVideoClassification.from_pretrained(released).config.num_hidden_layers == 12
    source = json.loads((out / "source" / "gardener.json").read_text())["final"]
    loss = json.loads((out / "pretrain" / "gardener.json").read_text())["loss"]
    assert (f"reconstruction loss {loss['final_loss']:.3f} at the end, against {loss['trivial_loss']:.3f} for the "
            "trivial answer") in text
    assert f"source test top-1 **{100 * source['top1']:.1f} %**" in text
    assert "Float16: meaningful" in text and "Float32: not meaningful" in text  # both views, block by block
    sensitivity = json.loads((out / "run" / "sensitivity.json").read_text())
    assert sensitivity["videos"] == 8 * 25 and sensitivity["classes"] == 8
    assert sensitivity["baseline"]["top1"] >= 2 / 8  # at least twice chance
    assert "on **200 test videos** of 8 classes, chance 12.5 %" in text
    for link in re.findall(r"\]\((run/figures/[\w.]+\.png)\)", text):
        assert (out / link).stat().st_size > 5000
    assert len(re.findall(r"\]\((run/figures/[\w.]+\.png)\)", text)) == 6
    sweep = json.loads((out / "run" / "sweep.json").read_text())
    table = {r[0]: r[1:] for r in markdown_table(text, "ratio (%)")}
    for row in sweep["rows"]:
        assert table[row["criterion"]][sweep["ratios"].index(row["ratio"])].split(" ")[0] == \
            f"{100 * row['top1']:.2f}"
    spectral = {"spectral_entropy", "effective_rank", "stable_rank", "alpha", "alpha_weighted", "log_spectral_norm"}
    assert set(sweep["criteria"]) == {"entropy", "l1", "l2", "mean", "variance", "std", "kurtosis",
                                      "mutual_information", "random", "sensitivity"} | spectral
    # the all-criteria agreement table: every data-free criterion and random, best Spearman rho first
    agreement = json.loads((out / "run" / "agreement.json").read_text())["criteria"]
    rows = markdown_table(text, "#")
    assert {r[1] for r in rows} == set(sweep["criteria"]) - {"sensitivity"} == set(agreement)
    assert [float(r[3]) for r in rows] == sorted((float(r[3]) for r in rows), reverse=True)
    assert all(r[3] == f"{agreement[r[1]]['spearman']:.3f}" for r in rows)


def test_the_demo_scores_its_checkpoint_once_and_writes_one_score_file(quick_demos, monkeypatch):
    from pathlib import Path

    from gardener.experiments import protocol

    out, calls, real = quick_demos[1], [], protocol.score

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(protocol, "score", counting)
    assert _cli("demo", out, "--quick") == 0  # every job cached: the pipeline still scores, once
    assert calls == [out / "source" / "model-float16"]
    assert [p.relative_to(out) for p in out.rglob("scores.json")] == [Path("run/scores.json")]


def test_a_second_run_reuses_every_stage_and_other_settings_are_refused(quick_demos, capsys):
    out = quick_demos[0]
    capsys.readouterr()
    jobs_before = (out / "run" / "jobs.log").read_text()
    assert _cli("demo", out, "--quick") == 0  # every stage cached: no job runs again
    assert (out / "run" / "jobs.log").read_text() == jobs_before
    assert capsys.readouterr().err.count("done before") == 3
    assert _cli("demo", out) == 2  # other settings in the same folder: refused
