"""Pruning: the plan (pure), the export (stock transformers loads it), costs, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import (CONFIGS, DEPTH, IN_MEMORY_STACK, build_hf, model_inputs, original_videomae_state, output_of,
                      save_hf, skip_layers, write_safetensors)
from safetensors.torch import load_file

import gardener
from gardener.pruning import write as export
from gardener.cost import InputSpec, gflops
from gardener.errors import GardenerError
from gardener.pruning import count_for_ratio, plan
from gardener.pruning import Cut, WriteOptions, prune_checkpoint
from gardener.scoring import ScoreSettings

PAPER_RATIOS = {0.083: 1, 0.25: 3, 0.417: 5, 0.583: 7, 0.75: 9, 0.917: 11}


@pytest.mark.parametrize("ratio,count", PAPER_RATIOS.items())
def test_paper_ratios_remove_paper_counts(ratio, count):
    assert count_for_ratio(ratio, 12) == count


def test_plan_takes_removal_order_and_skips_protected():
    order = [12, 10, 11, 9, 7, 8, 5, 3, 6, 4, 2, 1]
    p = plan(12, remove=3, removal_order=order, protect=[10])
    assert p.removed == [9, 11, 12] and p.kept == [1, 2, 3, 4, 5, 6, 7, 8, 10]


@pytest.mark.parametrize("kwargs,message", [
    ({"ratio": 0.0}, "strictly between 0 and 1"), ({"ratio": 1.0}, "strictly between 0 and 1"),
    ({"ratio": -0.5}, "strictly between"), ({"ratio": float("nan")}, "strictly between"),
    ({"ratio": 0.01}, "at least one block must go"), ({"remove": 0}, "expected 1..11"),
    ({"remove": 12}, "expected 1..11"), ({"ratio": 0.5, "remove": 2}, "exactly one"),
])
def test_plan_rejects_bad_choices(kwargs, message):
    with pytest.raises(GardenerError, match=message):
        plan(12, removal_order=list(range(12, 0, -1)), **kwargs)


@pytest.mark.parametrize("name", sorted(IN_MEMORY_STACK))
def test_pruned_hf_directory_loads_and_matches_skipped_layers(tmp_path, name):
    model = build_hf(name)
    src = save_hf(model, tmp_path / "src")
    info = prune_checkpoint(src, tmp_path / "out", Cut(blocks=(2, 3)))
    cls = CONFIGS[name][0]
    pruned = cls.from_pretrained(tmp_path / "out").eval()
    assert pruned.config.num_hidden_layers == DEPTH - 2 and info["kept_blocks"] == [1, 4]
    assert pruned.config.gardener["removed_blocks"] == [2, 3]
    # every kept tensor is bit-identical to its source under its new name
    before, after = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    stack = info["stack"]
    for key, tensor in after.items():
        old = key.replace(f"{stack}.1.", f"{stack}.3.") if key.startswith(f"{stack}.1.") else key
        assert torch.equal(before[old], tensor), key
    reference = skip_layers(model, IN_MEMORY_STACK[name], [1, 4])
    with torch.no_grad():
        got, want = pruned(**model_inputs(name)), reference(**model_inputs(name))
    torch.testing.assert_close(output_of(got), output_of(want), rtol=0, atol=0)


def test_pruning_decoder_changes_decoder_depth_only(tmp_path):
    src = save_hf(build_hf("videomae_pretrain"), tmp_path / "src")
    prune_checkpoint(src, tmp_path / "out", Cut(remove=1), ScoreSettings(stack="decoder", primary="l2"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["decoder_num_hidden_layers"] == 1 and config["num_hidden_layers"] == DEPTH


def test_sharded_output_and_side_files(tmp_path):
    src = save_hf(build_hf("bert"), tmp_path / "src")
    (src / "README.md").write_text("model card")
    prune_checkpoint(src, tmp_path / "out", Cut(ratio=0.5), write=WriteOptions(max_shard_size="20KB"))
    out = tmp_path / "out"
    assert (out / "model.safetensors.index.json").is_file() and (out / "README.md").read_text() == "model card"
    model = CONFIGS["bert"][0].from_pretrained(out)
    assert model.config.num_hidden_layers == 2


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_raw_state_dict_same_format_out(tmp_path, suffix):
    state = original_videomae_state(build_hf("videomae"))
    src = tmp_path / f"orig{suffix}"
    torch.save({"model": state}, src) if suffix == ".pth" else write_safetensors(state, src)
    info = prune_checkpoint(src, tmp_path / "out", Cut(ratio=0.25), ScoreSettings(primary="entropy"))
    out_file = tmp_path / "out" / src.name
    result = gardener.score(out_file, ["l1"])
    assert result.depth == DEPTH - 1 and info["removed_blocks"] == [info["removed_blocks"][0]]
    if suffix == ".pth":
        assert list(torch.load(out_file, weights_only=True)) == ["model"]
    manifest = json.loads((tmp_path / "out" / "gardener.json").read_text())
    assert manifest["inputs"][0]["sha256"] and manifest["params_after"] < manifest["params_before"]


def test_ranking_file_and_protect(tmp_path):
    src = save_hf(build_hf("vit"), tmp_path / "src")
    scores = gardener.score(src, ["l2"], primary="l2")
    (tmp_path / "s.json").write_text(json.dumps(scores.to_dict()))
    order = scores.removal_order("l2")
    info = prune_checkpoint(src, tmp_path / "out", Cut(remove=1, ranking=tmp_path / "s.json", protect=(order[0],)))
    assert info["removed_blocks"] == [order[1]] and info["criterion"] == "l2"


def test_existing_output_and_crash_leave_nothing_behind(tmp_path, monkeypatch):
    src = save_hf(build_hf("bert"), tmp_path / "src")
    with pytest.raises(GardenerError, match="is inside the checkpoint"):
        prune_checkpoint(src, src / "pruned", Cut(remove=1))
    (tmp_path / "exists").mkdir()
    with pytest.raises(GardenerError, match="already exists; pass --force"):
        prune_checkpoint(src, tmp_path / "exists", Cut(remove=1))

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("gardener.pruning.disk.write_hf_weights", boom)
    with pytest.raises(OSError):
        prune_checkpoint(src, tmp_path / "crash", Cut(remove=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "src"]


def test_videomae_base_costs_match_paper():
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    config = VideoMAEConfig(num_labels=101).to_dict()
    assert gflops(config, InputSpec(16, 224)) == pytest.approx(180, rel=0.03)
    assert gflops({**config, "num_hidden_layers": 11}, InputSpec(16, 224)) == pytest.approx(166, rel=0.03)
    with torch.device("meta"):
        full = VideoMAEForVideoClassification(VideoMAEConfig(num_labels=101))
        short = VideoMAEForVideoClassification(VideoMAEConfig(num_labels=101, num_hidden_layers=11))
    assert sum(p.numel() for p in full.parameters()) / 1e6 == pytest.approx(86.3, abs=0.05)
    assert sum(p.numel() for p in short.parameters()) / 1e6 == pytest.approx(79.2, abs=0.05)


def test_streamed_safetensors_writer_round_trips_bfloat16(tmp_path):
    t = torch.randn(5, 7).to(torch.bfloat16)
    raw = t.view(torch.int16).numpy().view(np.uint16)
    export.write_safetensors(tmp_path / "b.safetensors", [("w", "BF16", (5, 7), lambda: raw)])
    assert torch.equal(load_file(str(tmp_path / "b.safetensors"))["w"], t)


@pytest.mark.parametrize("name", ["videomae", "vit", "dinov2", "bert", "llama"])
def test_pruned_gflops_from_per_block_counts_equal_a_recount(name):
    from gardener.families import kind_of, shorten_config
    from gardener.cost import gflops_pair as _gflops_pair

    config = CONFIGS[name][1]().to_dict()
    short = shorten_config(config, kind_of("model.layers" if name == "llama" else "encoder.layer"), "encoder.layer",
                           [1, 4])
    spec = InputSpec(frames=4, size=32, seq_len=16)
    pair = _gflops_pair(config, short, spec, [2, 3], "num_hidden_layers")
    assert pair["gflops_before"] == pytest.approx(gflops(config, spec), rel=1e-12)
    assert pair["gflops_after"] == pytest.approx(gflops(short, spec), rel=1e-9)
    assert pair["gflops_after"] < pair["gflops_before"]
