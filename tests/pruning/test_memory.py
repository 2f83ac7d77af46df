"""In-memory pruning: `gardener.prune_model` on instantiated transformers models."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers as T
from conftest import CONFIGS, DEPTH, IN_MEMORY_STACK, build_hf, model_inputs, output_of, skip_layers

import gardener
from gardener.errors import GardenerError


@pytest.mark.parametrize("name", sorted(IN_MEMORY_STACK))
def test_prune_model_equals_skipping_layers_and_survives_a_round_trip(tmp_path, name):
    model = build_hf(name)
    reference = copy.deepcopy(model)
    skip_layers(reference, IN_MEMORY_STACK[name], [1, 4])
    pruned, record = gardener.prune_model(model, remove=[2, 3])
    assert pruned is model and record["removed_blocks"] == [2, 3] and record["kept_blocks"] == [1, 4]
    assert pruned.config.num_hidden_layers == DEPTH - 2 and len(pruned.get_submodule(IN_MEMORY_STACK[name])) == 2
    assert record["params_after"] < record["params_before"]
    with torch.no_grad():
        got, want = output_of(pruned(**model_inputs(name))), output_of(reference(**model_inputs(name)))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    pruned.save_pretrained(tmp_path / "out")
    loaded = CONFIGS[name][0].from_pretrained(tmp_path / "out").eval()
    assert loaded.config.gardener["removed_blocks"] == [2, 3]
    with torch.no_grad():
        torch.testing.assert_close(output_of(loaded(**model_inputs(name))), got, rtol=0, atol=0)


def _greedy(model, ids, use_cache):
    return model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=use_cache, pad_token_id=0)


def test_llama_cached_generation_after_pruning(tmp_path):
    model = build_hf("llama")
    pruned, _ = gardener.prune_model(model, remove=[2, 3])
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    ids = model_inputs("llama")["input_ids"]
    cached = _greedy(pruned, ids, use_cache=True)
    assert torch.equal(cached, _greedy(pruned, ids, use_cache=False))
    pruned.save_pretrained(tmp_path / "out")
    fresh = T.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert torch.equal(_greedy(fresh, ids, use_cache=True), cached)


def test_per_layer_config_lists_follow_the_kept_blocks(tmp_path):
    types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    torch.manual_seed(0)
    config = T.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=50, use_sliding_window=True, sliding_window=3,
                           layer_types=types)
    model = T.Qwen2ForCausalLM(config).eval()
    pruned, _ = gardener.prune_model(model, remove=[1])
    assert pruned.config.layer_types == types[1:]
    ids = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(1))
    cached = _greedy(pruned, ids, use_cache=True)
    assert torch.equal(cached, _greedy(pruned, ids, use_cache=False))
    pruned.save_pretrained(tmp_path / "out")
    fresh = T.Qwen2ForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert fresh.config.layer_types == types[1:]
    assert torch.equal(_greedy(fresh, ids, use_cache=True), cached)


def test_decoder_stack_changes_decoder_depth_only():
    model = build_hf("vitmae")
    _, record = gardener.prune_model(model, remove=[1], stack="decoder")
    assert record["stack"] == "decoder.decoder_layers"
    assert model.config.decoder_num_hidden_layers == 1 and model.config.num_hidden_layers == DEPTH
    with torch.no_grad():
        assert model(**model_inputs("vitmae")).logits.shape[-1] == 16 * 16 * 3


def test_dinov2_backbone_stages_follow_depth():
    model = build_hf("dinov2")
    gardener.prune_model(model, remove=[4], zero_based=False)
    assert model.config.stage_names == ["stem", "stage1", "stage2", "stage3"]


def test_pruning_twice_keeps_the_history():
    model = build_hf("bert")
    gardener.prune_model(model, remove=[1])
    _, record = gardener.prune_model(model, remove=[0], zero_based=True)
    assert record["previous"]["removed_blocks"] == [1] and model.config.num_hidden_layers == DEPTH - 2


@pytest.mark.parametrize("remove,message", [
    ([5], "out of range 1..4"), ([2, 2], "twice"), ([1, 2, 3, 4], "at least one must remain"),
])
def test_prune_model_rejects_bad_blocks(remove, message):
    model = build_hf("bert")
    with pytest.raises(GardenerError, match=message):
        gardener.prune_model(model, remove=remove)
    assert model.config.num_hidden_layers == DEPTH and len(model.encoder.layer) == DEPTH


def test_prune_model_rejects_what_is_not_a_model():
    with pytest.raises(GardenerError, match="expected a torch.nn.Module"):
        gardener.prune_model({"a": 1}, remove=[1])
    with pytest.raises(GardenerError, match="no transformer block stack"):
        gardener.prune_model(torch.nn.Linear(3, 3), remove=[1])
    with pytest.raises(GardenerError, match="stack 'nope' not found"):
        gardener.prune_model(build_hf("vit"), remove=[1], stack="nope")
