"""Calibration block by block (`--calib-sequential`): a model larger than memory is run one block at a time, with
the figures of the whole-model pass."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_hf, save_hf

import gardener
from gardener.errors import GardenerError
from gardener.scoring import CalibOptions

CRITERIA = ["block_influence", "angular_distance"]


@pytest.fixture(scope="module")
def llama(llama_and_tokens):
    return llama_and_tokens


def _scores(path, data, **options):
    calib = CalibOptions(calib_data=data, calib_clips=10, calib_batch=4, **options)
    return gardener.score(path, CRITERIA, primary=None, calib=calib)


@pytest.mark.parametrize("options", [{}, {"span": 2}, {"tokens": "mean", "span": 2}, {"last_output": "block"}],
                         ids=["defaults", "span-2", "every-token-span-2", "block-output"])
def test_block_by_block_gives_the_whole_model_figures(llama, options):
    path, data = llama
    whole, sequential = _scores(path, data, **options), _scores(path, data, sequential=True, **options)
    for name in CRITERIA:
        np.testing.assert_allclose(sequential.scores[name], whole.scores[name], rtol=1e-5, atol=1e-7)
    record = sequential.meta["calibration"]
    assert record["sequential"] is True and record["convention"] == whole.meta["calibration"]["convention"]


@pytest.mark.parametrize("family", ["videomae", "vit", "vitmae", "dinov2"])
def test_vision_models_block_by_block_give_the_whole_model_figures(family, video_root, tmp_path):
    """Their stored keys are not all the model's names under transformers 5 (VideoMAE's q_bias is its query.bias,
    ViT's encoder.layer its layers): each weight is read under the key it is stored as."""
    path = save_hf(build_hf(family), tmp_path / family)
    calib = dict(calib_data=video_root, calib_clips=4, calib_batch=2)
    whole = gardener.score(path, CRITERIA, primary=None, calib=CalibOptions(**calib))
    sequential = gardener.score(path, CRITERIA, primary=None, calib=CalibOptions(**calib, sequential=True))
    for name in CRITERIA:
        np.testing.assert_allclose(sequential.scores[name], whole.scores[name], rtol=1e-6)


@pytest.mark.parametrize("stored, named", [("LlamaModel", "LlamaForCausalLM"), ("LlamaForCausalLM", "LlamaModel")],
                         ids=["prefix-missing", "prefix-extra"])
def test_a_checkpoint_without_or_with_the_base_models_prefix_is_read_as_transformers_reads_it(
        llama_and_tokens, tmp_path, stored, named):
    """A base model's checkpoint whose config names the model with its head (or the reverse)."""
    import transformers as T

    _, data = llama_and_tokens
    torch.manual_seed(0)
    model = getattr(T, stored)(T.LlamaConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                             num_key_value_heads=1, intermediate_size=64, vocab_size=50))
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "architectures": [named]}))
    whole, sequential = _scores(tmp_path / "model", data), _scores(tmp_path / "model", data, sequential=True)
    for name in CRITERIA:
        np.testing.assert_allclose(sequential.scores[name], whole.scores[name], rtol=1e-6)


def test_experts_that_transformers_merges_as_it_loads_them_are_refused_before_any_pass(llama_and_tokens, tmp_path):
    """Transformers 5 fuses a mixture of experts' stored tensors into one parameter; transformers 4 keeps them."""
    import transformers as T

    _, data = llama_and_tokens
    torch.manual_seed(0)
    T.MixtralForCausalLM(T.MixtralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=64, vocab_size=50,
                                         num_local_experts=2)).save_pretrained(tmp_path / "moe")
    if int(T.__version__.split(".")[0]) < 5:
        whole, sequential = _scores(tmp_path / "moe", data), _scores(tmp_path / "moe", data, sequential=True)
        np.testing.assert_allclose(sequential.scores["block_influence"], whole.scores["block_influence"], rtol=1e-6)
        return
    with pytest.raises(GardenerError, match=r"experts\..* is stored as separate tensors that transformers merges as "
                                            r"it loads them; .* run the whole-model pass, or --calib-device-map"):
        _scores(tmp_path / "moe", data, sequential=True)


def test_only_one_block_is_in_memory_at_a_time(llama, monkeypatch):
    """Whenever a block runs on a batch, it is the only block holding real weights (the others are on meta)."""
    from gardener.scoring import sequential

    path, data = llama
    seen, original, passes = [], sequential.SequentialPass._through, []

    def watched(self, index, batch, hidden, as_tuple):
        passes.append(self)
        seen.append((index, [k for k, b in enumerate(self.blocks) if any(p.device.type != "meta"
                                                                          for p in b.parameters())]))
        return original(self, index, batch, hidden, as_tuple)

    monkeypatch.setattr(sequential.SequentialPass, "_through", watched)
    _scores(path, data, sequential=True)
    assert seen == [(k, [k]) for k in range(4) for _ in range(3)]  # 4 blocks, 3 batches each
    assert all(p.device.type == "meta" for b in passes[0].blocks for p in b.parameters())  # and none at the end


def test_skip_loss_block_by_block_equals_the_whole_model_pass(llama, monkeypatch):
    """SLEB's skip loss of a causal LM: one stream per skipped block, each block read once."""
    from gardener.scoring import sequential

    path, data = llama
    loads = []
    original = sequential.load_weights
    monkeypatch.setattr(sequential, "load_weights", lambda model, ckpt, names, *rest: (
        loads.extend(n for n in names if ".layers." in n), original(model, ckpt, names, *rest)))
    calib = dict(calib_data=data, calib_clips=10, calib_batch=4)
    whole = gardener.score(path, ["skip_loss"], primary=None, calib=CalibOptions(**calib))
    sequential_run = gardener.score(path, ["skip_loss"], primary=None, calib=CalibOptions(sequential=True, **calib))
    np.testing.assert_allclose(sequential_run.scores["skip_loss"], whole.scores["skip_loss"], rtol=1e-4, atol=1e-6)
    assert len(loads) == len(set(loads))  # each block's weights read once


def test_skip_loss_of_a_model_that_is_no_causal_lm_is_refused_before_any_pass(tmp_path, llama, monkeypatch):
    path, data = llama

    def no_pass(*args, **kwargs):
        raise AssertionError("a calibration pass began")

    mae = save_hf(build_hf("vitmae"), tmp_path / "mae")
    monkeypatch.setattr("gardener.scoring.calibration.CalibrationPass.__init__", no_pass)
    with pytest.raises(GardenerError, match=r"skip_loss on .*mae: the sequential calibration pass "
                                            r"\(--calib-sequential\) computes it for causal language models only"):
        gardener.score(mae, ["skip_loss"], primary=None,
                       calib=CalibOptions(calib_data=data, calib_clips=4, sequential=True))


def test_the_command_line_runs_it_and_the_json_says_so(llama, tmp_path, capsys):
    from conftest import cli

    path, data = llama
    code, _, err = cli(["score", path, "--criteria", "block_influence", "--criterion", "block_influence",
                        "--calib-data", data, "--calib-clips", 10, "--calib-sequential", "--json", tmp_path / "s.json"],
                       capsys)
    record = json.loads((tmp_path / "s.json").read_text())
    assert code == 0, err
    assert record["meta"]["calibration"]["sequential"] is True
    np.testing.assert_allclose(record["criteria"]["block_influence"]["scores"],
                               _scores(path, data).scores["block_influence"], rtol=1e-5)


def test_a_bfloat16_checkpoint_runs_in_float32_as_the_whole_model_does(llama, tmp_path):
    import transformers as T

    path, data = llama
    T.LlamaForCausalLM.from_pretrained(path).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    whole, sequential = _scores(tmp_path / "bf16", data), _scores(tmp_path / "bf16", data, sequential=True)
    for name in CRITERIA:
        np.testing.assert_allclose(sequential.scores[name], whole.scores[name], rtol=1e-5, atol=1e-7)


def test_a_contiguous_span_longer_than_the_angles_measured_asks_for_that_span(llama, tmp_path):
    path, data = llama
    calib = CalibOptions(calib_data=data, calib_clips=10, tokens="mean", sequential=True)
    with pytest.raises(GardenerError, match="measured no angles 2 blocks apart .* give --span 2"):
        gardener.prune_checkpoint(path, tmp_path / "out", gardener.Cut(remove=2, contiguous=True),
                                  gardener.ScoreSettings(primary="angular_distance", calib=calib))
    assert not (tmp_path / "out").exists()
    calib = CalibOptions(calib_data=data, calib_clips=10, tokens="mean", sequential=True, span=2)
    info = gardener.prune_checkpoint(path, tmp_path / "out", gardener.Cut(remove=2, contiguous=True),
                                     gardener.ScoreSettings(primary="angular_distance", calib=calib))
    assert len(info["removed_blocks"]) == 2


def test_no_key_value_cache_is_kept(llama, monkeypatch):
    """The blocks receive no cache to fill (a decoder's forward would keep one by default: nothing reads it)."""
    import transformers as T

    from gardener.scoring import sequential

    path, data = llama
    received, original = [], sequential.SequentialPass._entry

    def watched(self, index, batch, as_tuple):
        args, kwargs = original(self, index, batch, as_tuple)
        received.extend([*args, *kwargs.values()])
        return args, kwargs

    monkeypatch.setattr(sequential.SequentialPass, "_entry", watched)
    _scores(path, data, sequential=True)
    assert received and not any(isinstance(value, T.Cache) for value in received)
