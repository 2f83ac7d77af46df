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


@pytest.mark.parametrize("model_type, shape", [
    (kind, shape) for kind in ("llama", "qwen2")
    for shape in (dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, seq_len=16),
                  dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=6, seq_len=37))
] + [("llama", dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=3, head_dim=12, seq_len=37))])
def test_a_decoder_counted_from_its_config_numbers_equals_the_counted_forward(model_type, shape):
    """LLaMA-style decoders are counted by arithmetic (no model built): the figures FlopCounterMode gives."""
    from gardener.cost import counted_breakdown, decoder_arithmetic, flop_breakdown

    shape = dict(shape)
    spec = InputSpec(seq_len=shape.pop("seq_len"))
    config = {"model_type": model_type, "intermediate_size": 96, "num_hidden_layers": 3, "vocab_size": 100, **shape}
    total, lists = decoder_arithmetic(config, spec)
    counted_total, counted_lists = counted_breakdown(config, spec)
    assert total == pytest.approx(counted_total, rel=1e-3)  # transformers 4.45 also counts the rotary product
    assert list(lists) == list(counted_lists) and lists == {k: pytest.approx(v, rel=1e-12) for k, v in
                                                            counted_lists.items()}
    assert flop_breakdown(config, spec) == (total, lists)


def test_other_models_and_incomplete_configs_are_counted_not_computed():
    from gardener.cost import decoder_arithmetic

    assert decoder_arithmetic({"model_type": "bert", "hidden_size": 64}, InputSpec()) is None
    assert decoder_arithmetic({"model_type": "llama", "hidden_size": 64}, InputSpec()) is None
