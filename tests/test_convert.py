"""Conversion of original VideoMAE checkpoints into transformers directories."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as T
from conftest import build_hf, original_pretrain_state, original_videomae_state, write_safetensors
from safetensors import safe_open

import gardener
from gardener.cli import main
from gardener.convert import convert_videomae

TINY = {"num_attention_heads": 2, "decoder_num_attention_heads": 2, "image_size": 32, "num_frames": 4}


def _with_biases(model):
    """Non-zero q/v biases, so that placing them wrongly changes the outputs."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("query.bias", "value.bias", "q_bias", "v_bias")):
                p.copy_(torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _run(*args) -> int:
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    return stop.value.code


def test_finetuned_checkpoint_converts_to_a_classifier_with_equal_outputs(tmp_path, tiny_config):
    source = _with_biases(build_hf("videomae"))
    torch.save({"model": original_videomae_state(source), "epoch": 9}, tmp_path / "orig.pth")
    assert _run("convert", tmp_path / "orig.pth", "-o", tmp_path / "hf", "--config", tiny_config) == 0
    converted = T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    assert converted.config.num_labels == 3 and converted.config.use_mean_pooling
    pixels = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(converted(pixels).logits, source(pixels).logits, rtol=0, atol=0)
    # the same per-block entropy from the original layout and from the converted directory
    before = gardener.score(tmp_path / "orig.pth", ["entropy", "l2"])
    after = gardener.score(tmp_path / "hf", ["entropy", "l2"])
    for name in ("entropy", "l2"):
        np.testing.assert_allclose(after.scores[name], before.scores[name], rtol=1e-12)
    manifest = json.loads((tmp_path / "hf" / "gardener.json").read_text())
    assert manifest["architecture"] == "VideoMAEForVideoClassification" and manifest["inputs"][0]["sha256"]
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["crop_size"]["height"] == 32


def test_a_class_with_a_key_bias_gets_zeros_and_no_tensor_is_left_at_random(tmp_path, tiny_config):
    """transformers versions differ: some give VideoMAE's key projection a bias (5.17), which the
    original checkpoints do not have, i.e. a zero one."""
    from gardener.checkpoint import open_checkpoint
    from gardener.convert import build_state

    source = _with_biases(build_hf("videomae"))
    write_safetensors(original_videomae_state(source), tmp_path / "orig.safetensors")
    target = build_hf("videomae", seed=1)
    for layer in target.videomae.encoder.layer:  # the layout of a version with a key bias
        attention = layer.attention.attention
        attention.key = torch.nn.Linear(attention.key.in_features, attention.key.out_features, bias=True)
    state, _ = build_state(open_checkpoint(tmp_path / "orig.safetensors"), target)
    key_biases = [n for n in state if n.endswith("key.bias")]
    assert len(key_biases) == len(target.videomae.encoder.layer) and all(not state[n].any() for n in key_biases)
    target.load_state_dict(state, strict=True)
    pixels = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(pixels).logits, source.eval()(pixels).logits, rtol=0, atol=0)
    with_norm = build_hf("videomae", seed=2)
    with_norm.videomae.layernorm = torch.nn.LayerNorm(32)  # a tensor the checkpoint cannot fill
    with pytest.raises(gardener.GardenerError, match="would lack 2 tensors, e.g. videomae.layernorm.bias"):
        build_state(open_checkpoint(tmp_path / "orig.safetensors"), with_norm)


def test_pretraining_checkpoint_converts_with_its_decoder(tmp_path, tiny_config):
    source = _with_biases(build_hf("videomae_pretrain"))
    write_safetensors(original_pretrain_state(source), tmp_path / "pretrain.safetensors")
    info = convert_videomae(tmp_path / "pretrain.safetensors", tmp_path / "hf", config=tiny_config)
    assert info["architecture"] == "VideoMAEForPreTraining"
    converted = T.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    assert converted.config.decoder_num_hidden_layers == 2
    pixels = torch.randn(1, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, ::2] = True
    with torch.no_grad():
        got, want = converted(pixels, bool_masked_pos=mask), source(pixels, bool_masked_pos=mask)
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=0)


def test_half_precision_stays_half_and_bit_identical(tmp_path, tiny_config):
    source = build_hf("videomae").half()
    torch.save(original_videomae_state(source), tmp_path / "orig.pth")
    convert_videomae(tmp_path / "orig.pth", tmp_path / "hf", config=tiny_config)
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        proj = f.get_tensor("videomae.embeddings.patch_embeddings.projection.weight")
        query = f.get_tensor("videomae.encoder.layer.2.attention.attention.query.weight")
    assert proj.dtype == torch.float16
    assert torch.equal(query, source.videomae.encoder.layer[2].attention.attention.query.weight)


def test_fixed_sinusoidal_table_is_dropped_but_a_learned_one_is_refused(tmp_path, tiny_config):
    source = build_hf("videomae")
    state = original_videomae_state(source)
    state["pos_embed"] = source.videomae.embeddings.position_embeddings.clone()
    torch.save(state, tmp_path / "fixed.pth")
    assert convert_videomae(tmp_path / "fixed.pth", tmp_path / "a", config=tiny_config)["dropped_fixed_tables"] \
        == ["pos_embed"]
    state["pos_embed"] = torch.randn_like(state["pos_embed"])
    torch.save(state, tmp_path / "learned.pth")
    assert _run("convert", tmp_path / "learned.pth", "-o", tmp_path / "b", "--config", tiny_config) == 2
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("case,message", [
    ("labels", "--num-labels 7: the checkpoint's head has 3 classes"),
    ("clash", "--config sets hidden_size=48, but the checkpoint's tensors give 32"),
    ("bert", "not an original VideoMAE checkpoint"),
    ("hfdir", "already a transformers directory"),
    ("exists", "already exists; pass --force"),
    ("badjson", "not valid JSON"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_config, capsys, case, message):
    orig = tmp_path / "orig.pth"
    torch.save(original_videomae_state(build_hf("videomae")), orig)
    args = ["convert", orig, "-o", tmp_path / "out", "--config", tiny_config]
    if case == "labels":
        args += ["--num-labels", "7"]
    elif case == "clash":
        (tmp_path / "clash.json").write_text(json.dumps({**TINY, "hidden_size": 48}))
        args[-1] = tmp_path / "clash.json"
    elif case == "bert":
        build_hf("bert").save_pretrained(tmp_path / "bert")
        args[1] = tmp_path / "bert" / "model.safetensors"
    elif case == "hfdir":
        build_hf("videomae").save_pretrained(tmp_path / "hf")
        args[1] = tmp_path / "hf"
    elif case == "exists":
        (tmp_path / "out").mkdir()
    elif case == "badjson":
        (tmp_path / "bad.json").write_text("{nope")
        args[-1] = tmp_path / "bad.json"
    capsys.readouterr()
    assert _run(*args) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or case == "exists"


@pytest.mark.parametrize("positions,width", [(8, 32), (1568, 768), (100, 33)])
def test_fast_position_table_equals_transformers_own(positions, width):
    from transformers.models.videomae import modeling_videomae

    from gardener.fixed_tables import fast_tables, sinusoid_table

    original = modeling_videomae.get_sinusoid_encoding_table
    assert torch.equal(sinusoid_table(positions, width), original(positions, width))
    with fast_tables():
        assert modeling_videomae.get_sinusoid_encoding_table is sinusoid_table
    assert modeling_videomae.get_sinusoid_encoding_table is original
