"""Healing a causal LM: finetuning on packed text lowers its perplexity on held-out text, the healed model and its
tokenizer load in stock transformers and measure what eval.json says, and an interrupted run resumes on the same
trajectory."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_llama_with_text
import torch
import transformers as T

from gardener.data.synthetic_text import VOCABULARY
from gardener.errors import GardenerError
from gardener.tasks.causal_lm import evaluate_causal_lm
from gardener.train.lm import LMRecipe, finetune_lm

SEQ_LEN = 24


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny LLaMA over the formal language's words, its tokenizer beside it, and the language's text."""
    return tiny_llama_with_text(tmp_path_factory.mktemp("lm"), documents=60, test_documents=10)


def recipe(**changes) -> LMRecipe:
    return LMRecipe(**{"batch_size": 8, "max_steps": 30, "base_lr": 0.3, "warmup_steps": 3, "save_every": 10,
                       **changes})


def test_healing_lowers_held_out_perplexity_and_the_model_reloads_in_stock_transformers(lm, tmp_path):
    model_dir, corpus = lm
    test = corpus / "test.jsonl"
    before = evaluate_causal_lm(model_dir, test, seq_len=SEQ_LEN)
    info = finetune_lm(model_dir, tmp_path / "run", corpus / "train.jsonl", recipe(), eval_data=test, seq_len=SEQ_LEN)
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert info["final"]["perplexity"] == pytest.approx(written["perplexity"])
    assert written["perplexity_interval"][1] < before["perplexity_interval"][0]  # lower beyond noise
    healed = T.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    tokenizer = T.AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    assert type(healed).__name__ == "LlamaForCausalLM" and len(tokenizer) == len(VOCABULARY)
    again = evaluate_causal_lm(tmp_path / "run" / "model", test, seq_len=SEQ_LEN)
    assert again["perplexity"] == pytest.approx(written["perplexity"], rel=1e-5)
    assert info["task"] == "causal-lm" and info["data"]["test_sequences"] == written["sequences"]
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == \
        list(range(1, 31))


def test_an_interrupted_run_resumes_on_the_same_trajectory(lm, tmp_path):
    model_dir, corpus = lm
    kwargs = dict(seq_len=SEQ_LEN, val_fraction=0.2, seed=3)
    whole: list[float] = []
    finetune_lm(model_dir, tmp_path / "a", corpus / "train.jsonl", recipe(max_steps=8, save_every=2),
                callbacks=[lambda step, loss: whole.append(loss)], **kwargs)

    def crash(step, loss):
        if step == 5:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune_lm(model_dir, tmp_path / "b", corpus / "train.jsonl", recipe(max_steps=8, save_every=2),
                    callbacks=[crash], **kwargs)
    resumed: list[float] = []
    finetune_lm(model_dir, tmp_path / "b", corpus / "train.jsonl", recipe(max_steps=8, save_every=2), resume=True,
                callbacks=[lambda step, loss: resumed.append(loss)], **kwargs)
    assert resumed == pytest.approx(whole[4:], abs=1e-6)  # steps 5-8 again from the step-4 checkpoint
    a, b = (json.loads((tmp_path / r / "eval.json").read_text()) for r in ("a", "b"))
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-6)


def test_inputs_that_cannot_make_a_run_are_one_line_errors_before_any_file(lm, tmp_path):
    model_dir, corpus = lm
    short = tmp_path / "short.txt"
    short.write_text("the n1 v1 .")
    with pytest.raises(GardenerError, match="shorter than one sequence of 24"):
        finetune_lm(model_dir, tmp_path / "r1", short, recipe(), seq_len=SEQ_LEN)
    video = tmp_path / "video"
    T.VideoMAEForVideoClassification(T.VideoMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                      intermediate_size=64)).save_pretrained(video)
    with pytest.raises(GardenerError, match="--task causal-lm: does not fit"):
        finetune_lm(video, tmp_path / "r2", corpus / "train.jsonl", recipe(), seq_len=SEQ_LEN)
    with pytest.raises(GardenerError, match=r"18 sequence\(s\), too few to hold 18 out for testing"):
        finetune_lm(model_dir, tmp_path / "r3", corpus / "test.jsonl", recipe(), seq_len=64 - 2,
                    val_fraction=0.99)
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3"))


def test_finetune_on_a_causal_lm_takes_the_recipe_options_given_over_its_own_defaults(lm, tmp_path, capsys):
    from conftest import cli, one_line_error

    model_dir, corpus = lm
    args = ["finetune", model_dir, "--data", corpus / "train.jsonl", "--eval-data", corpus / "test.jsonl",
            "--seq-len", SEQ_LEN]
    code, shown, err = cli([*args, "--max-steps", "6", "--lr", "0.3", "-o", tmp_path / "run"], capsys)
    assert code == 0, err
    recipe_used = json.loads((tmp_path / "run" / "gardener.json").read_text())["recipe"]
    assert recipe_used == {**LMRecipe().to_dict(), "max_steps": 6, "base_lr": 0.3, "betas": [0.9, 0.95]}
    assert "perplexity (lower is better)" in shown and (tmp_path / "run" / "model" / "tokenizer.json").is_file()
    for video_only in (["--drop-path", "0.1"], ["--frames", "8"], ["--split-dir", tmp_path]):
        code, _, err = cli([*args, "--max-steps", "6", *video_only, "-o", tmp_path / "no"], capsys)
        assert code == 2 and one_line_error(err) == f"error: {video_only[0]}: does not apply to the causal-lm task"
    assert not (tmp_path / "no").exists()


def test_distillation_from_the_unpruned_model_brings_the_student_closer_to_it_than_plain_finetuning(lm, tmp_path):
    """Seeded: the teacher is the tiny LLaMA trained on the language; the student is it without block 2. The
    same steps of plain finetuning and of distillation (KL only, T = 2); the student's mean KL to the teacher on
    held-out text is lower after distillation."""
    import gardener
    from gardener.scoring.calibration_data import load_model
    from gardener.tasks.causal_lm import mean_kl, sequences_for
    from gardener.train.distill import Distill

    model_dir, corpus = lm
    finetune_lm(model_dir, tmp_path / "teacher", corpus / "train.jsonl", recipe(), seq_len=SEQ_LEN)
    teacher = tmp_path / "teacher" / "model"
    gardener.prune_checkpoint(teacher, tmp_path / "student", gardener.Cut(blocks=[2]))
    student = tmp_path / "student"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(teacher / name, student / name)
    heal = recipe(max_steps=12, base_lr=0.1, warmup_steps=0)
    test = corpus / "test.jsonl"
    plain = finetune_lm(student, tmp_path / "plain", corpus / "train.jsonl", heal, eval_data=test, seq_len=SEQ_LEN)
    taught = finetune_lm(student, tmp_path / "taught", corpus / "train.jsonl", heal, eval_data=test, seq_len=SEQ_LEN,
                         distill=Distill(teacher, temperature=2.0, weight=1.0))
    rows = sequences_for(teacher, test, SEQ_LEN)
    kl = {name: mean_kl(load_model(tmp_path / name / "model"), load_model(teacher), rows) for name in ("plain", "taught")}
    assert kl["taught"] < kl["plain"]
    assert taught["final"]["kl_to_teacher"] == pytest.approx(kl["taught"], rel=1e-5) and plain["distill"] is None
    assert taught["distill"]["temperature"] == 2.0
    logged = [json.loads(line) for line in (tmp_path / "taught" / "log.jsonl").read_text().splitlines()]
    assert all("kl" in line for line in logged)


def test_finetune_distills_from_the_teacher_the_command_line_names(lm, tmp_path, capsys):
    from conftest import cli, one_line_error

    model_dir, corpus = lm
    args = ["finetune", model_dir, "--data", corpus / "train.jsonl", "--seq-len", SEQ_LEN, "--max-steps", "3"]
    code, _, err = cli([*args, "--distill-from", model_dir, "--distill-weight", "0.5", "-o", tmp_path / "run"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "gardener.json").read_text())["distill"]
    assert record == {"teacher": str(model_dir.resolve()), "temperature": 2.0, "weight": 0.5}
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["kl_to_teacher"] >= 0
    code, _, err = cli([*args, "--distill-weight", "0.5", "-o", tmp_path / "no"], capsys)
    assert code == 2 and one_line_error(err) == ("error: --distill-weight: does not apply to finetuning without "
                                                 "--distill-from")


def test_lora_trains_adapters_only_and_merges_them_into_a_plain_checkpoint(lm, tmp_path):
    from safetensors import safe_open

    from gardener.train.lora import Lora

    model_dir, corpus = lm
    test = corpus / "test.jsonl"
    before = evaluate_causal_lm(model_dir, test, seq_len=SEQ_LEN)
    info = finetune_lm(model_dir, tmp_path / "run", corpus / "train.jsonl", recipe(base_lr=1.0), eval_data=test,
                       seq_len=SEQ_LEN, lora=Lora(rank=4, alpha=8))
    assert info["lora"]["trainable"] < info["lora"]["total"] / 5 and info["lora"]["merged"]
    with safe_open(str(tmp_path / "run" / "model" / "model.safetensors"), "pt") as saved, \
            safe_open(str(model_dir / "model.safetensors"), "pt") as original:
        assert set(saved.keys()) == set(original.keys())  # no adapter left: a plain checkpoint
        for name in original.keys():
            same = torch.equal(saved.get_tensor(name), original.get_tensor(name))
            adapted = any(k in name for k in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"))
            assert same != adapted, name  # only the blocks' linear layers moved, by their merged adapters
    healed = T.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert type(healed).__name__ == "LlamaForCausalLM"
    again = evaluate_causal_lm(tmp_path / "run" / "model", test, seq_len=SEQ_LEN)
    assert again["perplexity"] == pytest.approx(info["final"]["perplexity"], rel=1e-4)
    assert again["perplexity"] < before["perplexity"]


def test_a_lora_run_resumes_on_the_same_trajectory(lm, tmp_path):
    from gardener.train.lora import Lora

    model_dir, corpus = lm
    kwargs = dict(seq_len=SEQ_LEN, val_fraction=0.2, seed=2, lora=Lora(rank=2))
    whole: list[float] = []
    finetune_lm(model_dir, tmp_path / "a", corpus / "train.jsonl", recipe(max_steps=6, save_every=2),
                callbacks=[lambda step, loss: whole.append(loss)], **kwargs)

    def crash(step, loss):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune_lm(model_dir, tmp_path / "b", corpus / "train.jsonl", recipe(max_steps=6, save_every=2),
                    callbacks=[crash], **kwargs)
    resumed: list[float] = []
    finetune_lm(model_dir, tmp_path / "b", corpus / "train.jsonl", recipe(max_steps=6, save_every=2), resume=True,
                callbacks=[lambda step, loss: resumed.append(loss)], **kwargs)
    assert resumed == pytest.approx(whole[2:], abs=1e-6)


def test_finetune_heals_with_lora_from_the_command_line(lm, tmp_path, capsys):
    from conftest import cli, one_line_error

    model_dir, corpus = lm
    args = ["finetune", model_dir, "--data", corpus / "train.jsonl", "--seq-len", SEQ_LEN, "--max-steps", "2"]
    code, _, err = cli([*args, "--lora-rank", "2", "--lora-alpha", "4", "-o", tmp_path / "run"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "gardener.json").read_text())["lora"]
    assert record["rank"] == 2 and record["alpha"] == 4 and record["merged"]
    code, _, err = cli([*args, "--lora-alpha", "4", "-o", tmp_path / "no"], capsys)
    assert code == 2 and one_line_error(err) == "error: --lora-alpha: does not apply to finetuning without --lora-rank"
