"""Costs: parameters and GFLOPs as the paper gives them, and a pruned model's GFLOPs from per-block counts."""
from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS

from gardener.cost import InputSpec, gflops


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
