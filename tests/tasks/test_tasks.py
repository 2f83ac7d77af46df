"""Tasks are registered like criteria and families: each checkpoint's task is inferred where one fits, named
with --task otherwise; the causal-lm task's perplexity is the model's own loss on the same packed sequences."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import WORDS, build_hf, save_hf, save_word_tokenizer

from gardener import tasks
from gardener.errors import GardenerError
from gardener.stats import ratio_interval
from gardener.tasks.causal_lm import evaluate_causal_lm, sequences_for

SEQ_LEN = 12


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny LLaMA with a word-level tokenizer beside it, and a text of 200 random words in three documents."""
    root = tmp_path_factory.mktemp("lm")
    model = build_hf("llama")
    path = save_hf(model, root / "llama")
    save_word_tokenizer(path)
    rng = np.random.default_rng(0)
    text = root / "book.jsonl"
    text.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS[2:], n))}) + "\n" for n in (90, 70, 40)))
    return path, model, text


def test_the_task_of_a_checkpoint_is_the_one_that_fits_its_model_class(llama, tmp_path):
    path, _, _ = llama
    assert tasks.infer(path).name == "causal-lm" and tasks.infer(path).metric.better == "lower"
    video = save_hf(build_hf("videomae"), tmp_path / "videomae")
    assert tasks.infer(video).name == "video-classification" and tasks.infer(video).metric.better == "higher"
    bert = save_hf(build_hf("bert"), tmp_path / "bert")
    with pytest.raises(GardenerError, match=r"a BertModel fits no registered task; name one with --task \(known: "
                                            r"video-classification, image-classification, causal-lm"):
        tasks.infer(bert)
    with pytest.raises(GardenerError, match="--task causal-lm: does not fit .* tasks that fit it: "
                                            "video-classification"):
        tasks.infer(video, "causal-lm")
    with pytest.raises(GardenerError, match="unknown task 'image'; known: video-classification, "
                                            "image-classification, causal-lm"):
        tasks.infer(video, "image")


def test_a_task_name_that_is_taken_is_refused_unless_replaced():
    task = tasks.get("causal-lm")
    with pytest.raises(GardenerError, match="task 'causal-lm' is already registered"):
        tasks.register(task)
    assert tasks.register(task, replace=True) is task and tasks.names().count("causal-lm") == 1


def test_text_is_packed_into_whole_sequences_of_the_documents_joined_tokens(llama):
    path, model, text = llama
    rows = sequences_for(path, text, SEQ_LEN, model.config)
    tokens = 3 + 90 + 70 + 40  # each document starts with <s>
    assert len(rows) == tokens // SEQ_LEN and all(len(r.ids) == SEQ_LEN and sum(r.mask) == SEQ_LEN for r in rows)
    assert rows[0].ids[0] == 1 and sum(r.ids.count(1) for r in rows) == 3  # three documents, joined


def test_perplexity_is_the_models_own_loss_per_predicted_token_over_the_same_sequences(llama):
    path, model, text = llama
    result = evaluate_causal_lm(path, text, seq_len=SEQ_LEN, batch_size=4, seed=0)
    rows = sequences_for(path, text, SEQ_LEN, model.config)
    with torch.no_grad():  # by hand, one sequence at a time, as transformers computes a causal LM's loss
        losses = [float(model(input_ids=torch.tensor([r.ids]), labels=torch.tensor([r.ids])).loss) for r in rows]
    by_hand = math.exp(sum(loss * (SEQ_LEN - 1) for loss in losses) / (len(rows) * (SEQ_LEN - 1)))
    assert result["perplexity"] == pytest.approx(by_hand, rel=1e-5)
    assert result["tokens_predicted"] == len(rows) * (SEQ_LEN - 1) and result["sequences"] == len(rows)
    low, high = result["perplexity_interval"]
    assert low < result["perplexity"] < high  # over sequences, not tokens
    assert 0 <= result["next_token_accuracy_interval"][0] <= result["next_token_accuracy"]
    assert result["perplexity"] > 10  # an untrained model over 40 words is near the uniform 40-50


def test_the_interval_resamples_sequences_and_narrows_with_more_of_them():
    rng = np.random.default_rng(1)
    few, many = rng.normal(3, 0.5, 10) * 11, rng.normal(3, 0.5, 1000) * 11
    narrow, wide = ratio_interval(many, [11] * 1000), ratio_interval(few, [11] * 10)
    assert wide[0] < 3 < wide[1] and narrow[0] < 3 < narrow[1] and narrow[1] - narrow[0] < (wide[1] - wide[0]) / 4
    assert ratio_interval(few, [11] * 10, seed=5) == ratio_interval(few, [11] * 10, seed=5)


def test_text_shorter_than_one_sequence_and_a_checkpoint_without_a_tokenizer_are_one_line_errors(llama, tmp_path):
    path, model, _ = llama
    short = tmp_path / "short.txt"
    short.write_text("w1 w2 w3")
    with pytest.raises(GardenerError, match=rf"--data {short}: 4 tokens, shorter than one sequence of {SEQ_LEN} "
                                            r"\(--seq-len\)"):
        evaluate_causal_lm(path, short, seq_len=SEQ_LEN)
    bare = save_hf(build_hf("llama"), tmp_path / "bare")
    with pytest.raises(GardenerError, match=r"has no tokenizer beside config.json .* pass --data as a \.jsonl of "
                                            r"\{\"input_ids\": \[...\]\} lines instead"):
        evaluate_causal_lm(bare, short, seq_len=SEQ_LEN)
    with pytest.raises(GardenerError, match="--seq-len 1: a sequence needs at least 2 tokens"):
        evaluate_causal_lm(path, short, seq_len=1)


def test_given_token_ids_with_padding_are_evaluated_on_their_real_tokens_only(llama, tmp_path):
    path, model, _ = llama
    ids = tmp_path / "ids.jsonl"
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    ids.write_text(json.dumps({"input_ids": rows[0]}) + "\n"
                   + json.dumps({"input_ids": [0, 0] + rows[1], "attention_mask": [0, 0] + [1] * 6}) + "\n")
    result = evaluate_causal_lm(path, ids, seq_len=SEQ_LEN)
    with torch.no_grad():
        losses = [float(model(input_ids=torch.tensor([r]), labels=torch.tensor([r])).loss) for r in rows]
    assert result["tokens_predicted"] == 10
    assert result["perplexity"] == pytest.approx(math.exp(sum(losses) / 2), rel=1e-5)


def test_evaluate_on_a_causal_lm_reports_perplexity_with_its_interval_and_writes_eval_json(llama, tmp_path, capsys):
    from conftest import cli, one_line_error

    path, _, text = llama
    code, shown, err = cli(["evaluate", path, "--data", text, "--seq-len", SEQ_LEN, "-o", tmp_path / "ev"], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert written["perplexity"] == pytest.approx(evaluate_causal_lm(path, text, seq_len=SEQ_LEN)["perplexity"])
    assert written["manifest"]["arguments"]["seq_len"] == SEQ_LEN and written["manifest"]["inputs"]
    assert "perplexity (lower is better)" in shown and f"{written['perplexity']:.3f}" in shown
    code, _, err = cli(["evaluate", path, "--data", text, "--split-dir", tmp_path], capsys)
    assert code == 2 and one_line_error(err) == "error: --split-dir: does not apply to the causal-lm task"
    code, _, err = cli(["evaluate", path, "--data", text, "--task", "video-classification"], capsys)
    assert code == 2 and "--task video-classification: does not fit" in one_line_error(err)
    before = (tmp_path / "ev" / "eval.json").read_bytes()
    code, _, err = cli(["evaluate", path, "--data", text, "-o", tmp_path / "ev"], capsys)
    assert code == 2 and "exists" in one_line_error(err) and (tmp_path / "ev" / "eval.json").read_bytes() == before


def test_token_ids_longer_than_a_sequence_are_refused_and_a_config_without_a_class_takes_the_named_task(llama,
                                                                                                       tmp_path):
    path, _, _ = llama
    ids = tmp_path / "ids.jsonl"
    ids.write_text(json.dumps({"input_ids": [5] * 4}) + "\n" + json.dumps({"input_ids": [5] * (SEQ_LEN + 1)}) + "\n")
    with pytest.raises(GardenerError, match=rf"line 2: longer than --seq-len {SEQ_LEN}"):
        evaluate_causal_lm(path, ids, seq_len=SEQ_LEN)
    bare = tmp_path / "bare"
    bare.mkdir()
    config = json.loads((path / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "architectures"}))
    assert tasks.infer(bare, "causal-lm").name == "causal-lm"
    with pytest.raises(GardenerError, match="a model of no named class fits no registered task"):
        tasks.infer(bare)
