"""The study on image and language models: the oracle and the sweep run through workers on a ViT and on a LLaMA,
their tables name the task's metric and honour its direction (a perplexity: lower is better), the plain
remove-one-block perplexity (`--heal-steps 0`) is the pruned model's own, and results are checked per task."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers as T
from conftest import cli, job_result, one_line_error, tiny_llama_with_text

from gardener.experiments.agreement import agreement
from gardener.experiments.identity import Settings
from gardener.experiments.validation import result_problem
from gardener.pruning import Cut, prune_checkpoint
from gardener.scoring import ScoreResult
from gardener.tasks.causal_lm import evaluate_causal_lm
from gardener.threads import per_worker

SEQ_LEN = 24
TEXT_FAST = ["--max-steps", "2", "--batch-size", "8", "--lr", "0.01", "--warmup-steps", "1", "--seq-len", str(SEQ_LEN)]
IMAGE_FAST = ["--max-steps", "2", "--batch-size", "8", "--lr", "0.01", "--warmup-steps", "1", "--layer-decay", "1",
              "--workers", "0"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny LLaMA over the formal language's words, its tokenizer beside it, and the language's text."""
    return tiny_llama_with_text(tmp_path_factory.mktemp("lm"), documents=30, test_documents=6)


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A tiny ViT encoder of 3 blocks (a head is added per job) and three classes of textures as PNG files."""
    from gardener.data.synthetic_images import write_images

    root = tmp_path_factory.mktemp("vit")
    write_images(root / "images", classes=("horizontal", "vertical", "dots"), per_class=8, test_per_class=5, size=32,
                 seed=0)
    torch.manual_seed(0)
    T.ViTModel(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                           intermediate_size=64)).save_pretrained(root / "vit")
    return root / "vit", root / "images"


def test_the_plain_remove_one_block_perplexity_is_the_pruned_models_own_and_ranks_the_lowest_first(lm, tmp_path,
                                                                                                   capsys):
    model, corpus = lm
    run = tmp_path / "run"
    code, _, err = cli(["sensitivity", model, "-o", run, "--heal-steps", "0", "--data", corpus / "train.jsonl",
                        "--eval-data", corpus / "test.jsonl", "--seq-len", str(SEQ_LEN)], capsys)
    assert code == 0, err
    table = json.loads((run / "healing.json").read_text())
    assert table["task"] == "causal-lm" and table["metric"]["better"] == "lower" and table["removes"] == "lowest"
    pruned = tmp_path / "without-2"
    prune_checkpoint(model, pruned, Cut(blocks=(2,)))
    by_hand = evaluate_causal_lm(pruned, corpus / "test.jsonl", seq_len=SEQ_LEN)
    row = table["blocks"][1]
    assert row["perplexity"] == pytest.approx(by_hand["perplexity"], rel=1e-5)
    assert row["interval"][0] < row["perplexity"] < row["interval"][1]
    assert table["baseline"]["perplexity"] == pytest.approx(evaluate_causal_lm(model, corpus / "test.jsonl",
                                                                               seq_len=SEQ_LEN)["perplexity"], rel=1e-5)
    # the block whose removal raises the perplexity least is the least important: ranked last
    ranks = table["ranks"]
    assert ranks[int(np.argmin(table["scores"]))] == 3 and ranks[int(np.argmax(table["scores"]))] == 1
    oracle = ScoreResult.load(run / "healing_oracle.json")
    assert oracle.removes["sensitivity"] == "lowest" and oracle.removal_order("sensitivity")[0] == \
        1 + int(np.argmin(table["scores"]))
    assert "perplexity" in oracle.meta["note"]


def test_a_criterion_that_ranks_as_the_perplexity_does_agrees_with_the_oracle(lm, tmp_path, capsys):
    model, corpus = lm
    run = tmp_path / "run"
    assert cli(["sensitivity", model, "-o", run, "--heal-steps", "0", "--data", corpus / "train.jsonl",
                "--seq-len", str(SEQ_LEN)], capsys)[0] == 0
    table = json.loads((run / "healing.json").read_text())
    scores = ScoreResult.load(run / "healing_oracle.json")
    # a criterion equal to the oracle's perplexities (removing the lowest first) is the oracle: rho 1
    same = agreement(scores.__class__(**{**scores.__dict__, "scores": {"made_up": table["scores"]},
                                         "removes": {"made_up": "lowest"}, "primary": "made_up"}), table)
    assert same["criteria"]["made_up"]["spearman"] == pytest.approx(1.0)
    backwards = agreement(scores.__class__(**{**scores.__dict__, "scores": {"made_up": table["scores"]},
                                              "removes": {"made_up": "highest"}, "primary": "made_up"}), table)
    assert backwards["criteria"]["made_up"]["spearman"] == pytest.approx(-1.0)
    assert same["bootstrap"]["resamples"] > 0 and same["criteria"]["made_up"]["spearman_interval"] is not None


def test_the_text_oracle_and_sweep_run_through_two_local_workers(lm, tmp_path, capsys):
    model, corpus = lm
    run = tmp_path / "run"
    code, _, err = cli(["sweep", model, "-o", run, "--data", corpus / "train.jsonl", "--criteria",
                        "sensitivity,entropy,random", "--ratios", "34,67", "--random-seeds", "2", *TEXT_FAST,
                        "--launcher", "local", "--local-workers", "2"], capsys)
    assert code == 0, err
    sweep = json.loads((run / "sweep.json").read_text())
    assert sweep["task"] == "causal-lm" and sweep["metric"]["name"] == "perplexity"
    base = sweep["baseline"]["perplexity"]
    for row in sweep["rows"]:
        assert row["drop"] == pytest.approx(row["perplexity"] - base)  # worse = a higher perplexity
        assert row["interval"][0] <= row["perplexity"] <= row["interval"][1]
    results = [json.loads(p.read_text()) for p in run.glob("jobs/*/result.json")]
    assert results and all(r["steps"] == 2 and r["settings"]["task"] == "causal-lm" for r in results)
    oracle = json.loads((run / "sensitivity.json").read_text())
    agreement_file = json.loads((run / "agreement.json").read_text())
    assert agreement_file["oracle_ranks"] == oracle["ranks"] and agreement_file["metric"]["unit"] == "sequences"
    # the oracle's rows remove first the blocks whose removal left the lowest perplexity
    least = sorted(range(3), key=lambda k: oracle["scores"][k])
    by_ratio = {r["ratio"]: r["removed"] for r in sweep["rows"] if r["criterion"] == "sensitivity"}
    assert by_ratio[34.0] == [least[0] + 1] and by_ratio[67.0] == sorted([least[0] + 1, least[1] + 1])
    assert "perplexity" in out_of(run, capsys)


def out_of(run, capsys) -> str:
    code, out, err = cli(["report", run], capsys)
    assert code == 0, err
    return (run / "report.md").read_text()


def test_the_image_oracle_and_sweep_run_through_workers_and_report_top1_over_test_images(vit, tmp_path, capsys):
    model, images = vit
    run = tmp_path / "run"
    code, _, err = cli(["sweep", model, "-o", run, "--data", images, "--criteria", "sensitivity,entropy,random",
                        "--ratios", "34,67", "--random-seeds", "2", *IMAGE_FAST, "--launcher", "local",
                        "--local-workers", "2"], capsys)
    assert code == 0, err
    table = json.loads((run / "sensitivity.json").read_text())
    assert table["task"] == "image-classification" and table["removes"] == "highest"
    assert table["samples"] == 15 and "videos" not in table
    for row in table["blocks"]:
        assert len(row["correct"][0]) == 15 and 0 <= row["interval"][0] <= row["top1"] <= row["interval"][1]
    results = [json.loads(p.read_text()) for p in run.glob("jobs/*/result.json")]
    assert len(results) >= 4 and all(r["settings"]["task"] == "image-classification" for r in results)
    assert all(r["steps"] == 2 for r in results)
    sweep = json.loads((run / "sweep.json").read_text())
    assert sweep["metric"]["name"] == "top1" and sweep["metric"]["unit"] == "images"
    base = sweep["baseline"]["top1"]
    for row in sweep["rows"]:
        assert row["drop"] == pytest.approx(base - row["top1"])  # worse = a lower top-1
        assert row["interval"][0] <= row["top1"] <= row["interval"][1]
        removals = row["removed"] if row["criterion"] == "random" else [row["removed"]]  # random: one per order
        assert {len(r) for r in removals} == {{34.0: 1, 67.0: 2}[row["ratio"]]}
    # the oracle's rows remove first the blocks whose removal left the highest top-1
    kept_best = max(table["scores"])
    first = [r["removed"] for r in sweep["rows"] if r["criterion"] == "sensitivity" and r["ratio"] == 34.0][0]
    assert table["scores"][first[0] - 1] == kept_best
    assert "images" in out_of(run, capsys)
    # the two workers shared this machine's cores
    assert f": {per_worker(2)} thread(s) for torch" in (run / "workers" / "worker-1.log").read_text()


def test_a_job_of_another_task_has_another_id():
    video = Settings("m", "h", {}, {}, {}, 0)
    assert video.job([1]).id != Settings("m", "h", {}, {}, {}, 0, task="causal-lm").job([1]).id


@pytest.mark.parametrize("change,why", [
    (lambda r: {**r, "perplexity": 0.5}, "is not a perplexity"),
    (lambda r: {**r, "nll": r["nll"][:1]}, "per-sequence losses"),
    (lambda r: {**r, "perplexity": r["perplexity"] * 2}, "disagrees with its per-sequence losses"),
    (lambda r: {**r, "next_token_accuracy": 1.5}, "is not an accuracy"),
])
def test_a_text_result_that_is_not_its_jobs_measurement_is_refused(change, why):
    job = Settings("m", "h", {}, {}, {"seq_len": 8}, 0, task="causal-lm").job([1])
    nll, tokens = [3.0, 5.0], [7, 7]
    result = job_result(job, perplexity=math.exp(8 / 14), next_token_accuracy=0.4, samples=2, nll=nll, tokens=tokens)
    del result["top1"]
    assert result_problem(result, job.id) is None
    assert why in result_problem(change(result), job.id)


def test_bad_task_inputs_are_one_line_errors_before_the_run_folder(lm, vit, tmp_path, capsys):
    model, corpus = lm
    code, _, err = cli(["sensitivity", model, "-o", tmp_path / "a", "--data", corpus / "train.jsonl", "--frames",
                        "8"], capsys)
    assert code != 0 and "--frames: does not apply to text experiments" in one_line_error(err)
    code, _, err = cli(["sensitivity", vit[0], "-o", tmp_path / "b", "--data", vit[1], "--heal-steps", "0"], capsys)
    assert code != 0 and "--heal-steps 0: expected at least 1" in one_line_error(err)
    code, _, err = cli(["sensitivity", vit[0], "-o", tmp_path / "c", "--data", vit[1], "--heal-steps", "2"], capsys)
    assert code != 0 and "is not a model with its task's head" in one_line_error(err)
    code, _, err = cli(["sensitivity", model, "-o", tmp_path / "d", "--data", corpus / "train.jsonl", "--task",
                        "image-classification"], capsys)
    assert code != 0 and "does not fit" in one_line_error(err)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_pooled_text_sweeps_count_a_lower_perplexity_than_random_as_better():
    from gardener.experiments.pooled import pool_sweep

    def sweep(entropy: float, random: float) -> dict:
        rows = [{"criterion": "entropy", "ratio": 50.0, "perplexity": entropy, "interval": [entropy - 1, entropy + 1]},
                {"criterion": "random", "ratio": 50.0, "perplexity": random, "interval": [random - 1, random + 1]}]
        return {"task": "causal-lm", "ratios": [50.0], "criteria": ["entropy", "random"], "rows": rows}
    pooled = pool_sweep([sweep(10.0, 20.0), sweep(11.0, 21.0), sweep(12.0, 20.0)])
    cell = pooled["criteria"]["entropy"]["50.0"]
    assert cell["vs_random"] == [10.0, 10.0, 8.0] and cell["above_random"] and cell["above_random_in"] == 3
