"""Text models' calibration criteria as their authors compute them, on a tiny LLaMA whose norms are trained-like
(not all ones), with sequences of different lengths, left and right padding, and raw text.

The references are written here from the published definitions, one sequence at a time with no batching:
ShortGPT's block influence over `output_hidden_states`, Gromov et al.'s angular distance at the last real
token, and the skip loss as the loss of the model with the block deleted.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers as T
from conftest import build_hf, llama_with_trained_norms, run_cli, save_hf, save_word_tokenizer, skip_layers

import gardener
from gardener.scoring import CalibOptions
from gardener.scoring.calibration import contiguous_span
from gardener.errors import GardenerError

DEPTH = 4
CALIB = "block_influence,angular_distance,skip_loss"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny LLaMA with norm weights far from one (a trained model's final norm rescales each feature)."""
    return save_hf(llama_with_trained_norms(), tmp_path_factory.mktemp("llama") / "llama")


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    """Sequences of 4 to 9 real tokens; some right-padded, some left-padded, some bare."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(9):
        ids = rng.integers(2, 50, int(rng.integers(4, 10))).tolist()
        pad = int(rng.integers(0, 4))
        if i % 3 == 0:
            lines.append({"input_ids": ids})
        elif i % 3 == 1:
            lines.append({"input_ids": ids + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad})
        else:
            lines.append({"input_ids": [0] * pad + ids, "attention_mask": [0] * pad + [1] * len(ids)})
    path = tmp_path_factory.mktemp("tokens") / "padded.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, lines


def _sequences(lines):
    """Each sequence as it is without its padding (the reference never sees a pad), and an all-ones mask."""
    for line in lines:
        mask = line.get("attention_mask", [1] * len(line["input_ids"]))
        real = [t for t, m in zip(line["input_ids"], mask) if m]
        yield torch.tensor([real]), torch.ones(1, len(real), dtype=torch.long)


def _reference(path, lines, span=1):
    """Per unpadded sequence: every entry of output_hidden_states at every token, and at its last token."""
    model = T.LlamaForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    influence, angles = np.zeros(DEPTH), np.zeros(DEPTH)
    real = 0
    for ids, mask in _sequences(lines):
        with torch.no_grad():
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        keep = mask[0].bool()
        last = int(mask[0].nonzero().max())
        for i in range(DEPTH):
            cos = torch.nn.functional.cosine_similarity(states[i][0, keep], states[i + 1][0, keep], dim=-1)
            influence[i] += float((1 - cos).sum())
            far = states[min(i + span, DEPTH)][0, last]
            angles[i] += math.acos(max(-1.0, min(1.0, float(torch.nn.functional.cosine_similarity(
                states[i][0, last], far, dim=0))))) / math.pi
        real += int(keep.sum())
    return influence / real, angles / len(lines)


def _loss_over_tokens(model, lines) -> float:
    """Mean next-token loss over every predicted real token of every sequence."""
    total, count = 0.0, 0
    for ids, mask in _sequences(lines):
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        n = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * n, count + n
    return total / count


def test_llama_criteria_follow_shortgpt_gromov_and_block_deletion(llama, padded):
    data, lines = padded
    result = gardener.score(llama, CALIB, primary="skip_loss", calib=CalibOptions(data, calib_clips=9, calib_batch=2))
    influence, angles = _reference(llama, lines)
    assert result.scores["block_influence"] == pytest.approx(influence.tolist(), rel=1e-4)
    assert result.scores["angular_distance"] == pytest.approx(angles.tolist(), rel=1e-4)
    full = _loss_over_tokens(T.LlamaForCausalLM.from_pretrained(llama, attn_implementation="sdpa").eval(), lines)
    deleted = []
    for block in range(1, DEPTH + 1):
        model = T.LlamaForCausalLM.from_pretrained(llama, attn_implementation="sdpa").eval()
        deleted.append(_loss_over_tokens(skip_layers(model, "model.layers",
                                                     [b for b in range(1, DEPTH + 1) if b != block]), lines) - full)
    assert result.scores["skip_loss"] == pytest.approx(deleted, abs=1e-5)
    record = result.meta["calibration"]
    real = sum(sum(line.get("attention_mask", [1] * len(line["input_ids"]))) for line in lines)
    assert record["convention"] == {"last_block_output": "hidden_states",
                                    "block_influence": {"tokens": "mean", "tokens_used": real},
                                    "angular_distance": {"tokens": "last", "tokens_used": 9}}
    assert record["sequences"] == 9 and record["clips"] == 9


def test_the_last_block_read_before_the_final_norm_is_another_number(llama, padded):
    """`--last-output block`: the block's own output; LLaMA's final norm makes the two conventions differ."""
    data, lines = padded
    reported = gardener.score(llama, "block_influence", primary="block_influence", calib=CalibOptions(data))
    raw = gardener.score(llama, "block_influence", primary="block_influence",
                         calib=CalibOptions(data, last_output="block"))
    assert raw.scores["block_influence"][:-1] == pytest.approx(reported.scores["block_influence"][:-1], rel=1e-6)
    assert abs(raw.scores["block_influence"][-1] - reported.scores["block_influence"][-1]) > 0.05
    assert raw.meta["calibration"]["convention"]["last_block_output"] == "block"


def test_tokens_override_the_familys_choice(llama, padded):
    data, lines = padded
    mean = gardener.score(llama, "angular_distance", primary="angular_distance",
                          calib=CalibOptions(data, tokens="mean"))
    model = T.LlamaForCausalLM.from_pretrained(llama, attn_implementation="sdpa").eval()
    angle, real = np.zeros(DEPTH), 0
    for ids, mask in _sequences(lines):
        with torch.no_grad():
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        keep = mask[0].bool()
        for i in range(DEPTH):
            cos = torch.nn.functional.cosine_similarity(states[i][0, keep], states[i + 1][0, keep], dim=-1)
            angle[i] += float((torch.arccos(cos.clamp(-1, 1)) / math.pi).sum())
        real += int(keep.sum())
    assert mean.scores["angular_distance"] == pytest.approx((angle / real).tolist(), rel=1e-4)
    assert mean.meta["calibration"]["convention"]["angular_distance"]["tokens"] == "mean"
    assert gardener.families.get("llama").calib_tokens == "last" and gardener.families.get("hf").calib_tokens is None


def test_contiguous_prune_of_a_causal_lm_removes_gromovs_span(llama, padded, tmp_path):
    data, lines = padded
    assert run_cli("prune", llama, "-o", tmp_path / "small", "--contiguous", "--criterion", "angular_distance",
                   "--calib-data", data, "--span", 2, "--remove", 2) == 0
    info = json.loads((tmp_path / "small" / "gardener.json").read_text())
    _, two = _reference(llama, lines, span=2)
    start = int(np.argmin(two[:DEPTH - 1]))  # spans that end inside the stack
    assert info["removed_blocks"] == [start + 1, start + 2] == contiguous_span(info["angles"], 2)
    assert T.LlamaForCausalLM.from_pretrained(tmp_path / "small").config.num_hidden_layers == 2


def test_raw_text_is_tokenised_with_the_checkpoints_ownsave_word_tokenizer(tmp_path):
    path = save_hf(build_hf("llama"), tmp_path / "llama")
    save_word_tokenizer(path)
    text = " ".join(f"w{i % 37}" for i in range(50))
    (tmp_path / "book.txt").write_text(text)
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": text}) + "\n")
    ids = T.AutoTokenizer.from_pretrained(path)(text)["input_ids"]
    assert ids[0] == 1 and len(ids) == 51
    chunks = [ids[i:i + 16] for i in range(0, 51, 16)]  # 16, 16, 16 and a remainder of 3
    written = tmp_path / "ids.jsonl"
    written.write_text("".join(json.dumps({"input_ids": c}) + "\n" for c in chunks))
    by_ids = gardener.score(path, "block_influence,angular_distance", primary="block_influence",
                            calib=CalibOptions(written, calib_clips=4))
    for source in ("book.txt", "docs.jsonl"):
        options = CalibOptions(tmp_path / source, calib_clips=4, calib_seq_len=16)
        by_text = gardener.score(path, "block_influence,angular_distance", primary="block_influence", calib=options)
        for name, values in by_ids.scores.items():
            assert by_text.scores[name] == pytest.approx(values, rel=1e-6)
        assert by_text.meta["calibration"]["sequences"] == 4 and by_text.meta["calibration"]["seq_len"] == 16


def test_more_clips_than_sequences_reads_each_once_and_says_so(llama, padded, tmp_path, capsys):
    data, lines = padded
    result = gardener.score(llama, "block_influence", primary="block_influence", calib=CalibOptions(data, calib_clips=48))
    record = result.meta["calibration"]
    assert record["clips"] == 9 and record["requested"] == 48 and record["sequences"] == 9
    assert any("--calib-clips 48" in w and "all 9 are read" in w for w in result.meta["warnings"])
    assert record["convention"]["block_influence"]["tokens_used"] == sum(
        sum(line.get("attention_mask", [1] * len(line["input_ids"]))) for line in lines)
    capsys.readouterr()
    assert run_cli("score", llama, "--criteria", "block_influence", "--criterion", "block_influence",
                   "--calib-data", data, "--calib-clips", 48, "--json", tmp_path / "s.json") == 0
    assert "warning: --calib-clips 48" in " ".join(capsys.readouterr().err.split())
    assert json.loads((tmp_path / "s.json").read_text())["meta"]["calibration"]["clips"] == 9


BAD = {
    "short mask": ({"input_ids": [3, 4, 5], "attention_mask": [1, 1]}, "attention_mask must be a list of 0s and 1s "
                                                                         "as long as input_ids"),
    "not 0/1": ({"input_ids": [3, 4, 5], "attention_mask": [1, 2, 1]}, "attention_mask must be a list of 0s and 1s"),
    "one real token": ({"input_ids": [3, 4, 5], "attention_mask": [0, 0, 1]},
                       r"attention_mask marks 1 real token\(s\)"),
    "beyond the vocabulary": ({"input_ids": [3, 400]}, r"input_ids must lie in 0\.\.49"),
    "neither": ({"ids": [3, 4]}, "expected an object with \"text\""),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_token_lines_are_one_line_errors_naming_the_line(llama, tmp_path, capsys, case):
    line, said = BAD[case]
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"input_ids": [1, 2, 3]}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(GardenerError, match=f"bad.jsonl line 2: {said}"):
        gardener.score(llama, "block_influence", primary="block_influence", calib=CalibOptions(data))
    capsys.readouterr()
    assert run_cli("score", llama, "--criteria", "block_influence", "--criterion", "block_influence",
                   "--calib-data", data) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "line 2" in err, err


def test_text_for_a_checkpoint_without_a_tokenizer_is_a_one_line_error(llama, tmp_path, capsys):
    (tmp_path / "book.txt").write_text("w1 w2 w3 w4")
    capsys.readouterr()
    assert run_cli("score", llama, "--criteria", "angular_distance", "--criterion", "angular_distance",
                   "--calib-data", tmp_path / "book.txt") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and "has no tokenizer" in err and "input_ids" in err, err
    for bad, said in (("--tokens", "first"), ("--last-output", "norm")):
        assert run_cli("score", llama, "--criteria", "angular_distance", "--criterion", "angular_distance",
                       "--calib-data", tmp_path / "book.txt", bad, said) == 2
        assert f"{bad} '{said}': expected one of" in capsys.readouterr().err


def _gpt2(path):
    """A tiny GPT-2: learnt absolute positions (64 of them) and 50 token ids."""
    torch.manual_seed(0)
    config = T.GPT2Config(n_embd=32, n_layer=DEPTH, n_head=2, vocab_size=50, n_positions=64,
                           bos_token_id=1, eos_token_id=1)
    return save_hf(T.GPT2LMHeadModel(config).eval(), path)


def _unpadded(lines):
    return [{"input_ids": [t for t, m in zip(line["input_ids"], line.get("attention_mask", [1] * 99)) if m]}
            for line in lines]


def test_padding_changes_nothing_for_a_model_of_absolute_positions(padded, tmp_path):
    """GPT-2 learns a position per index: left-padded tokens keep the positions they hold unpadded, and no
    prediction is scored from a pad."""
    path = _gpt2(tmp_path / "gpt2")
    data, lines = padded
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(line) + "\n" for line in _unpadded(lines)))
    scores = [gardener.score(path, CALIB, primary="skip_loss", calib=CalibOptions(d, calib_batch=3)).scores
              for d in (data, bare)]
    for name in CALIB.split(","):
        assert scores[0][name] == pytest.approx(scores[1][name], rel=1e-4, abs=1e-6), name


def test_sequences_the_model_cannot_take_are_one_line_errors(tmp_path):
    path = _gpt2(tmp_path / "gpt2")
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"input_ids": [3] * 65}) + "\n")
    with pytest.raises(GardenerError, match="a sequence of 65 tokens is longer than the model's 64 positions"):
        gardener.score(path, "block_influence", primary="block_influence", calib=CalibOptions(long))
    fits = save_hf(build_hf("llama"), tmp_path / "fits")
    save_word_tokenizer(fits)  # 42 words, a vocabulary of 50
    (tmp_path / "book.txt").write_text("w1 w2 w3")
    gardener.score(fits, "block_influence", primary="block_influence", calib=CalibOptions(tmp_path / "book.txt"))
    small = tmp_path / "small"
    T.LlamaForCausalLM(T.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                     intermediate_size=64, vocab_size=30)).save_pretrained(small)
    save_word_tokenizer(small)
    (tmp_path / "far.txt").write_text("w1 w39")  # w39 is id 41
    with pytest.raises(GardenerError, match=r"its tokenizer gives token ids beyond the model's vocabulary \(0\.\.29\)"):
        gardener.score(small, "block_influence", primary="block_influence", calib=CalibOptions(tmp_path / "far.txt"))


def test_skip_loss_on_a_model_without_a_task_loss_is_said_before_any_work(padded, tmp_path, capsys, monkeypatch):
    """A bare encoder (BertModel) has no task loss: `--criteria skip_loss` is a one-line error before any model
    loads; `--criteria calibration` leaves skip_loss out, says so, and computes the other two."""
    from conftest import cli, one_line_error

    import gardener.scoring.calibration as calibration

    bert = save_hf(build_hf("bert"), tmp_path / "bert")
    data, _ = padded
    loads = []
    real_load = calibration.load_model
    monkeypatch.setattr(calibration, "load_model", lambda path, *rest: loads.append(path) or real_load(path, *rest))
    for named in (["--criteria", "skip_loss"], ["--criteria", "calibration", "--criterion", "skip_loss"]):
        code, _, err = cli(["score", bert, *named, "--calib-data", data], capsys)
        assert code == 2 and "a BertModel has no task loss; it needs a classifier" in one_line_error(err)
        assert "--criteria block_influence,angular_distance" in err and loads == []
    out = tmp_path / "s.json"
    code, _, err = cli(["score", bert, "--criteria", "calibration", "--criterion", "block_influence",
                        "--calib-data", data, "--json", out], capsys)
    assert code == 0, err
    scores = json.loads(out.read_text())
    assert list(scores["criteria"]) == ["block_influence", "angular_distance"]  # skip_loss left out
    assert any("a BertModel has no task loss" in w and "left out of 'calibration'" in w
               for w in scores["meta"]["warnings"])
    assert "left out of 'calibration'" in err and len(loads) == 1
