"""Block discovery on tiny checkpoints of every layout: which stack, how many blocks, which weights."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import DEPTH, D, I, build_hf, original_pretrain_state, original_videomae_state, save_hf, \
    write_safetensors

import gardener
from gardener.errors import GardenerError

ATTN_MLP = 4 * D * D + 2 * D * I  # q, k, v, o + fc1, fc2
LLAMA = 2 * D * D + 2 * (D // 2) * D + 3 * D * I  # q, o + k, v (one kv head) + gate, up, down

# family -> (default stack, matrices per block, numbers per block). transformers 5 may save
# ViT-style models under either its new (`vit.layers`) or the legacy (`vit.encoder.layer`) names.
HF_CASES = {
    "videomae": (r"videomae\.encoder\.layer", 6, ATTN_MLP),
    "videomae_pretrain": (r"videomae\.encoder\.layer", 6, ATTN_MLP),
    "vitmae": (r"vit\.(encoder\.layer|layers)", 6, ATTN_MLP),
    "vit": (r"vit\.(encoder\.layer|layers)", 6, ATTN_MLP),
    "dinov2": (r"encoder\.layer", 6, ATTN_MLP),
    "bert": (r"encoder\.layer", 6, ATTN_MLP),
    "llama": (r"model\.layers", 7, LLAMA),
}


def saved_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("family", sorted(HF_CASES))
def test_hf_directory_blocks_and_weights(tmp_path, family):
    stack, matrices, numel = HF_CASES[family]
    model = build_hf(family)
    result = gardener.score(save_hf(model, tmp_path / family), ["entropy", "l1"])
    assert re.fullmatch(stack, result.stack), result.stack
    assert result.stack_kind in ("hf-encoder", "hf-vit", "llama")
    assert result.depth == DEPTH
    assert all(len(b.tensors) == matrices and b.n_params == numel for b in result.blocks)
    assert all(n.endswith("weight") for b in result.blocks for n in b.tensors)
    # scores equal a direct computation on the saved tensors
    state = saved_tensors(tmp_path / family)
    for block, l1 in zip(result.blocks, result.scores["l1"]):
        expected = sum(state[n].abs().double().sum().item() for n in block.tensors)
        assert l1 == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("family", ["videomae_pretrain", "vitmae"])
def test_encoder_by_default_decoder_on_request(tmp_path, family):
    path = save_hf(build_hf(family), tmp_path / family)
    assert "decoder" not in gardener.score(path, ["l1"]).stack
    result = gardener.score(path, ["l1"], stack="decoder")
    assert result.stack.startswith("decoder.decoder") and result.depth == 2


def test_sharded_safetensors_directory(tmp_path):
    model = build_hf("videomae")
    path = save_hf(model, tmp_path / "sharded", max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("model-*.safetensors"))) > 2
    sharded = gardener.score(path, ["entropy", "l2"])
    single = gardener.score(save_hf(model, tmp_path / "single"), ["entropy", "l2"])
    assert sharded.scores == single.scores


def test_pytorch_model_bin_directory(tmp_path):
    model = build_hf("bert")
    path = save_hf(model, tmp_path / "bin")
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    result = gardener.score(path, ["l2"])
    assert result.format == "hf-dir" and result.stack == "encoder.layer"
    assert result.scores == gardener.score(save_hf(model, tmp_path / "st"), ["l2"]).scores


@pytest.mark.parametrize("nest", [None, "model", "module", "state_dict", "model_state"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_original_videomae_state_dict_nested(tmp_path, nest, suffix):
    state = original_videomae_state(build_hf("videomae"))
    path = tmp_path / f"ckpt{suffix}"
    torch.save(state if nest is None else {nest: state, "epoch": 1}, path)
    result = gardener.score(path, ["l1"])
    assert result.stack == "blocks" and result.stack_kind == "timm" and result.depth == DEPTH
    assert [len(b.tensors) for b in result.blocks] == [4] * DEPTH  # qkv, proj, fc1, fc2
    assert {b.n_params for b in result.blocks} == {ATTN_MLP}


def test_ddp_module_prefix_is_stripped(tmp_path):
    state = {f"module.{k}": v for k, v in original_videomae_state(build_hf("videomae")).items()}
    torch.save(state, tmp_path / "ddp.pth")
    assert gardener.score(tmp_path / "ddp.pth", ["l1"]).stack == "blocks"


def test_fused_qkv_scores_like_separate_query_key_value(tmp_path):
    model = build_hf("videomae").half()
    hf = gardener.score(save_hf(model, tmp_path / "hf"), "all", seed=3)
    orig = gardener.score(write_safetensors(original_videomae_state(model), tmp_path / "orig.safetensors"),
                          "all", seed=3)
    assert orig.stack == "blocks" and hf.stack == "videomae.encoder.layer"
    for name, scores in hf.scores.items():
        np.testing.assert_allclose(orig.scores[name], scores, rtol=1e-12, err_msg=name)


def test_original_pretraining_checkpoint_has_two_stacks(tmp_path):
    path = tmp_path / "pretrain.pth"
    torch.save({"model": original_pretrain_state(build_hf("videomae_pretrain"))}, path)
    enc = gardener.score(path, ["l1"])
    dec = gardener.score(path, ["l1"], stack="decoder")
    assert (enc.stack, enc.depth) == ("encoder.blocks", DEPTH)
    assert (dec.stack, dec.depth, dec.stack_kind) == ("decoder.blocks", 2, "timm-decoder")
    assert gardener.score(path, ["l1"], stack="encoder.blocks").stack == "encoder.blocks"


def test_params_all_includes_biases_and_norms(tmp_path):
    model = build_hf("videomae")
    path = save_hf(model, tmp_path / "m")
    two_d = gardener.score(path, ["l1"])
    every = gardener.score(path, ["l1"], params="all")
    # every tensor of the block, whatever biases this transformers version gives attention (key bias or not)
    assert every.blocks[0].n_params == sum(p.numel() for p in model.videomae.encoder.layer[0].parameters())
    assert two_d.blocks[0].n_params == ATTN_MLP
    assert any(t.endswith("layernorm_before.bias") for t in every.blocks[0].tensors)


def test_unknown_layout_lists_prefixes(tmp_path):
    path = write_safetensors({"stem.conv.weight": torch.ones(4, 4), "head.fc.weight": torch.ones(2, 4)},
                             tmp_path / "cnn.safetensors")
    with pytest.raises(GardenerError, match=r"no transformer block stack found.*head, stem"):
        gardener.score(path)


def test_block_pattern_overrides_detection(tmp_path):
    state = {f"trunk.stage{i}.fc.weight": torch.randn(8, 8) for i in range(3)}
    path = write_safetensors(state, tmp_path / "odd.safetensors")
    result = gardener.score(path, ["l2"], block_pattern=r"trunk\.stage(\d+)\.")
    assert result.depth == 3 and result.stack == "custom"
    with pytest.raises(GardenerError, match="capture group"):
        gardener.score(path, ["l2"], block_pattern=r"trunk\.stage\d+")


def test_unknown_stack_lists_available(tmp_path):
    path = save_hf(build_hf("bert"), tmp_path / "bert")
    with pytest.raises(GardenerError, match=r"stack 'decoder' not found.*encoder\.layer"):
        gardener.score(path, stack="decoder")
