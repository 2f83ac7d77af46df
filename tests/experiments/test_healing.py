"""The healing oracle: each block removed from a task-finetuned classifier, K steps of finetuning with its
own head, evaluated; its files beside the full oracle's, the report naming each, and their agreement."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import markdown_records, run_cli, tiny_videomae
from safetensors.torch import load_file

from gardener.errors import GardenerError
from gardener.experiments.oracle import run_sensitivity
from gardener.experiments.protocol import prepare
from gardener.train import DataOptions, Recipe, finetune

K = 2
CLIP = {"frames": None, "size": None, "sampling_rate": 2, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.3}
CLIP_FLAGS = ["--sampling-rate", 2, "--test-clips", 1, "--test-crops", 1, "--workers", 0]
RECIPE = dict(batch_size=8, max_steps=2, warmup_steps=1, base_lr=0.06, layer_decay=1.0, drop_path=0.0,
              classifier_dropout=0.0)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, video_root) -> Path:
    """A 4-block classifier finetuned on the test videos: the checkpoint a healing oracle starts from."""
    root = tmp_path_factory.mktemp("healing")
    finetune(tiny_videomae(root / "pretrained", depth=4), root / "finetuned", DataOptions(video_root, workers=0),
             Recipe(**{**RECIPE, "max_steps": 4}), sampling_rate=2, test_clips=1, test_crops=1)
    return root / "finetuned" / "model"


@pytest.fixture(scope="module")
def both(tmp_path_factory, finetuned, video_root) -> Path:
    """One run folder: the healing oracle from the command line (K steps at learning rate 0, every job's
    models kept), then the full oracle of the same checkpoint, then the report."""
    run = tmp_path_factory.mktemp("healing") / "run"
    assert run_cli("sensitivity", finetuned, "--data", video_root, "-o", run, "--heal-steps", K, "--lr", 0,
                   "--warmup-steps", 5, "--batch-size", 8, "--layer-decay", 1.0, "--drop-path", 0,
                   "--classifier-dropout", 0, "--keep-models", *CLIP_FLAGS) == 0
    exp = prepare(finetuned, run, DataOptions(video_root, workers=0), Recipe(**RECIPE), CLIP)
    assert run_sensitivity(exp)["counts"]["run"] == 5
    assert run_cli("report", run) == 0
    return run


def _json(path: Path):
    return json.loads(path.read_text())


def _healing_jobs(run: Path) -> list[dict]:
    return _json(run / "healing.plan.json")["jobs"]


def test_the_plan_records_the_healing_oracle_and_its_recipe(both):
    plan = _json(both / "healing.plan.json")
    # the given warmup (5 steps) is cut to K; the run length is K steps, not epochs
    assert plan["oracle"] == {"kind": "healing", "heal_steps": K, "warmup_steps": K, "head": "kept"}
    recipe = plan["settings"]["recipe"]
    assert recipe["max_steps"] == K and recipe["epochs"] is None and recipe["warmup_steps"] == K
    assert plan["settings"]["keep_head"] is True
    assert _json(both / "sensitivity.plan.json")["oracle"] == {"kind": "full", "head": "fresh"}
    assert len(plan["jobs"]) == 5 and sorted(len(j["removed"]) for j in plan["jobs"]) == [0, 1, 1, 1, 1]


def test_each_healing_job_trains_exactly_k_steps_from_the_checkpoint_and_its_head(both, finetuned):
    source = load_file(str(finetuned / "model.safetensors"))
    labels = _json(finetuned / "config.json")["id2label"]
    for job in _healing_jobs(both):
        folder = both / "jobs" / job["id"]
        result = _json(folder / "result.json")
        steps = [r for r in map(json.loads, (folder / "train" / "log.jsonl").read_text().splitlines()) if "loss" in r]
        assert result["steps"] == K and [r["step"] for r in steps] == list(range(1, K + 1))
        assert all(r["lr"] == 0 for r in steps) and result["warmup_steps"] == K and result["seconds"] > 0
        trained = load_file(str(folder / "train" / "model" / "model.safetensors"))
        # learning rate 0: the head (and every kept weight) is the checkpoint's own, not a fresh one
        for name in ("classifier.weight", "classifier.bias", "fc_norm.weight"):
            assert torch.equal(trained[name], source[name]), name
        assert _json(folder / "train" / "model" / "config.json")["id2label"] == labels


def test_at_learning_rate_zero_the_unpruned_job_scores_what_evaluate_gives_the_checkpoint(both, finetuned, video_root,
                                                                                          tmp_path):
    baseline = next(j for j in _healing_jobs(both) if not j["removed"])
    result = _json(both / "jobs" / baseline["id"] / "result.json")
    assert run_cli("evaluate", finetuned, "--data", video_root, "-o", tmp_path / "eval", *CLIP_FLAGS) == 0
    evaluated = _json(tmp_path / "eval" / "eval.json")
    assert result["top1"] == evaluated["top1"] and result["videos"] == evaluated["videos"]
    healed = (both / "jobs" / baseline["id"] / "train" / "predictions.csv").read_text()
    assert healed == (tmp_path / "eval" / "predictions.csv").read_text()  # the same prediction for every video


def test_healing_jobs_and_files_are_their_own(both):
    full = {j["id"] for j in _json(both / "sensitivity.plan.json")["jobs"]}
    assert full.isdisjoint(j["id"] for j in _healing_jobs(both))
    healing, ranking = _json(both / "healing.json"), _json(both / "healing_oracle.json")
    assert healing["oracle"]["kind"] == "healing" and _json(both / "sensitivity.json")["oracle"]["kind"] == "full"
    assert ranking["criteria"]["sensitivity"]["scores"] == healing["scores"]
    assert ranking["meta"]["oracle"]["oracle"]["heal_steps"] == K and "2 steps of healing" in ranking["meta"]["note"]
    assert _json(both / "oracle.json")["meta"]["oracle"]["oracle"]["kind"] == "full"


def test_the_ids_of_jobs_that_do_not_keep_the_head_are_unchanged():
    """The run folders made before the healing oracle keep their cached results."""
    from gardener.experiments.runs import Settings

    settings = Settings("m", "0" * 64, {"data": "v"}, Recipe(max_steps=3).to_dict(), {"frames": None}, 0)
    key = {"source": "0" * 64, "removed": [2], "recipe": settings.recipe, "data": {"data": "v"},
           "clip": {"frames": None}, "seed": 0}
    assert settings.job([2]).id == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    healing = Settings(**{**settings.__dict__, "keep_head": True})
    assert healing.job([2]).id != settings.job([2]).id


def test_agree_and_prune_read_the_healing_ranking(both, finetuned, tmp_path, capsys):
    assert run_cli("score", finetuned, "--criteria", "entropy,l2", "--json", tmp_path / "scores.json") == 0
    capsys.readouterr()
    assert run_cli("agree", tmp_path / "scores.json", both / "healing_oracle.json", "--json", tmp_path / "a.json") == 0
    assert "healing, 2 steps" in " ".join(capsys.readouterr().out.split())
    agreement = _json(tmp_path / "a.json")
    assert agreement["oracle"]["kind"] == "healing" and set(agreement["criteria"]) >= {"entropy", "l2"}
    assert run_cli("prune", finetuned, "-o", tmp_path / "pruned", "--ranking", both / "healing_oracle.json",
                   "--remove", 1) == 0
    order = _json(both / "healing_oracle.json")["criteria"]["sensitivity"]["removal_order"]
    assert _json(tmp_path / "pruned" / "gardener.json")["removed_blocks"] == order[:1]


def test_the_report_names_each_oracle_and_gives_their_agreement_and_cost(both):
    text = (both / "report.md").read_text()
    assert "Oracle: **full finetuning**" in text and f"Oracle: **healing, {K} steps**" in text
    assert f"## Single-block removal (healing oracle, {K} steps; Table 1)" in text
    between = _json(both / "agreement.json")["between_oracles"]
    assert len(between["spearman_interval"]) == 2 and between["bootstrap"]["resamples"] == 1000
    assert "## Agreement between the oracles" in text
    cost = {r["oracle"]: r for r in markdown_records(text, "oracle")}
    healing, full = cost[f"healing oracle, {K} steps"], cost["full oracle"]
    assert healing["jobs"] == full["jobs"] == "5"
    assert healing["finetuning steps (all jobs)"] == str(5 * K) == full["finetuning steps (all jobs)"]
    assert between["cost"]["healing"]["seconds"] > 0 and between["cost"]["full"]["seconds"] > 0
    if between["separable"] is False:  # the tiny oracles are noise: said so, without p-values
        assert "**Not separable**" in text and "p (rho)" not in text
    else:  # p-values only beside a 'beats random: yes'
        assert ("p (rho)" in text) is bool(between["beats_random"])


def test_heal_steps_below_one_is_a_one_line_error_before_the_run_folder(finetuned, video_root, tmp_path, capsys):
    capsys.readouterr()
    assert run_cli("sensitivity", finetuned, "--data", video_root, "-o", tmp_path / "run", "--heal-steps", 0) == 2
    err = capsys.readouterr().err.strip()
    assert "--heal-steps 0: expected at least 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_healing_needs_a_classifier_of_the_datas_classes(tmp_path, video_root):
    """A checkpoint whose head classifies other classes cannot be healed: no job trains a re-initialised head."""
    model = tiny_videomae(tmp_path / "two_labels", depth=2)  # LABEL_0, LABEL_1; the videos have 4 classes
    exp = prepare(model, tmp_path / "run", DataOptions(video_root, workers=0), Recipe(**RECIPE), CLIP)
    with pytest.raises(GardenerError, match="its head classifies 2 classes"):
        run_sensitivity(exp, heal_steps=K)


def test_a_kept_head_saved_in_another_class_order_scores_each_class_with_its_own_row(tmp_path):
    import transformers as T

    from gardener.train.finetune import load_classifier

    config = T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=32,
                              num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              id2label={0: "c", 1: "a", 2: "b"}, label2id={"c": 0, "a": 1, "b": 2})
    model = tmp_path / "cab"
    T.VideoMAEForVideoClassification(config).save_pretrained(model)
    saved = T.VideoMAEForVideoClassification.from_pretrained(model).classifier
    kept = load_classifier(model, ["a", "b", "c"], Recipe(), keep_head=True).classifier
    assert torch.equal(kept.weight, saved.weight[[1, 2, 0]]) and torch.equal(kept.bias, saved.bias[[1, 2, 0]])
    fresh = load_classifier(model, ["a", "b", "c"], Recipe()).classifier
    assert fresh.weight.abs().max() < 0.001 and not fresh.bias.any()  # without keep_head: VideoMAE's fresh head
