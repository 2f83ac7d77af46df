"""The report's statistics: intervals, chance level, test-set size, and no finding where the oracle is noise."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from conftest import job_result, markdown_table

from gardener.experiments.oracle import sensitivity_jobs
from gardener.experiments.plans import rebuild_tables, write_plan
from gardener.experiments.protocol import Experiment
from gardener.experiments.results import ORACLE
from gardener.experiments.runs import Settings, open_run
from gardener.experiments.sweep import sweep_rows
from gardener.report.experiment import write_report
from gardener.scoring import BlockInfo, ScoreResult
from gardener.stats import pack_correct, wilson
from gardener.train import Recipe

DEPTH, VIDEOS, CLASSES = 6, 400, 8


def _experiment(tmp_path, seeds: int) -> Experiment:
    run = open_run(tmp_path / "run", tmp_path / "model", "0" * 64)
    settings = Settings("model", "0" * 64, {"data": "videos"}, Recipe(max_steps=10).to_dict(), {}, 0)
    return Experiment(tmp_path / "model", run, settings, None, Recipe(max_steps=10), {}, DEPTH, 1.0,
                      [0.1] * DEPTH, oracle_seeds=seeds)


def _put(exp: Experiment, job, flags: np.ndarray) -> None:
    folder = exp.run.jobs / job.id
    folder.mkdir(parents=True, exist_ok=True)
    result = job_result(job, top1=float(flags.mean()), top5=1.0, uar=float(flags.mean()), params=1000,
                        videos=len(flags), classes=CLASSES, gflops=exp.gflops_without(job.removed),
                        correct=pack_correct(flags))
    (folder / "result.json").write_text(json.dumps(result))


def _run(tmp_path, accuracy_of, seeds: int = 2, entropy=None, **report) -> str:
    """A finished oracle and sweep whose job accuracies come from `accuracy_of(removed, seed)`; the report's
    text (`report`: write_report's keywords)."""
    exp = _experiment(tmp_path, seeds)
    jobs = sensitivity_jobs(exp)
    write_plan(exp.run, ORACLE, {"kind": ORACLE, "depth": DEPTH, "seeds": seeds,
                                 "jobs": [{"id": j.id, "removed": list(j.removed), "seed": j.finetune_seed}
                                          for j in jobs], "settings": asdict(exp.settings)})

    def flags(removed, seed):  # one accuracy, one set of right videos: equal accuracies are exactly equal
        p = accuracy_of(tuple(removed), seed)
        return (np.random.default_rng(round(p * 1e6)).random(VIDEOS) < p).astype(np.uint8)
    for job in jobs:
        _put(exp, job, flags(job.removed, job.finetune_seed))
    entropy = entropy or [9.5 - 0.01 * b for b in range(DEPTH)]
    scores = ScoreResult("model", "hf-dir", "videomae.encoder.layer", "hf-encoder", "float16", ["F16"], "2d",
                         "entropy", 2048, 0, [BlockInfo(b, 1000, 6, 0) for b in range(1, DEPTH + 1)],
                         {"entropy": entropy, "random": list(np.random.default_rng(1).random(DEPTH))},
                         {"entropy": "lowest", "random": "lowest"})
    (exp.run.path / "scores.json").write_text(json.dumps(scores.to_dict()))
    oracle = rebuild_tables(exp.run)[ORACLE]
    ratios = [(50.0, 3), (83.3, 5)]
    rows = sweep_rows(exp, ["sensitivity", "entropy"], ratios, scores, oracle, 0)
    for row in rows:
        job = exp.job(row["removed"])
        if exp.run.result(job) is None:
            _put(exp, job, flags(tuple(row["removed"]), 0))
    write_plan(exp.run, "sweep", {"kind": "sweep", "baseline": exp.job([]).id, "rows": rows,
                                  "settings": asdict(exp.settings)})
    rebuild_tables(exp.run)
    return write_report(exp.run.path, **report).read_text()


def test_a_flat_oracle_is_reported_as_not_separable_and_without_p_values(tmp_path):
    text = _run(tmp_path, lambda removed, seed: 0.8)  # every job gets the same videos right
    sensitivity = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    assert sensitivity["spread"] is False and sensitivity["separable_from_unpruned"] == []
    assert "**The oracle is not separable**" in text and "**Not separable**" in text
    headers = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert "p (rho)" not in headers and "p (tau)" not in headers and "beats random" not in headers
    agreement = json.loads((tmp_path / "run" / "agreement.json").read_text())
    assert agreement["oracle_spread"] is False and agreement["beats_random"] == []
    assert all(c["spearman_p"] is None for c in agreement["criteria"].values())
    # ties are ties: every block's oracle rank is the average rank
    table2 = {r[0]: r[1:] for r in markdown_table(text, "block")}
    ranks = [float(x) for x in table2["sensitivity (oracle)"]]
    assert len(set(ranks)) < DEPTH and sum(ranks) == pytest.approx(DEPTH * (DEPTH + 1) / 2)


def test_every_accuracy_carries_its_wilson_interval_the_test_size_and_chance(tmp_path):
    text = _run(tmp_path, lambda removed, seed: 0.8)
    assert f"on **{VIDEOS} test videos** of {CLASSES} classes, chance {100 / CLASSES:.1f} %" in text
    sensitivity = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    table1 = markdown_table(text, "model state")
    for row, data in zip(table1, [sensitivity["baseline"], *sensitivity["blocks"]]):
        low, high = wilson(data["top1"], VIDEOS)
        assert row[3] == f"{100 * data['top1']:.2f}" and row[4] == f"[{100 * low:.1f}, {100 * high:.1f}]"
    sweep = json.loads((tmp_path / "run" / "sweep.json").read_text())
    table3 = {r[0]: r[1:] for r in markdown_table(text, "ratio (%)")}
    for r in sweep["rows"]:
        low, high = wilson(r["top1"], VIDEOS)
        assert table3[r["criterion"]][sweep["ratios"].index(r["ratio"])] == \
            f"{100 * r['top1']:.2f} [{100 * low:.1f}, {100 * high:.1f}]"


def test_a_clear_oracle_gets_p_values_intervals_and_a_verdict_against_random(tmp_path):
    # removing a later block costs more; the seeds agree; entropy ranks the blocks the same way
    def accuracy(removed, seed):
        return 0.9 if not removed else (0.9 - 0.06 * max(removed) if len(removed) == 1 else 0.3)
    entropy = [9.0 + 0.1 * b for b in range(DEPTH)]  # lowest first removed: block 1, which costs least
    text = _run(tmp_path, accuracy, entropy=entropy)
    sensitivity = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    assert sensitivity["spread"] is True and 6 in sensitivity["separable_from_unpruned"]
    assert "The oracle is not separable" not in text
    agreement = json.loads((tmp_path / "run" / "agreement.json").read_text())
    entropy_row = agreement["criteria"]["entropy"]
    assert entropy_row["spearman"] == pytest.approx(1.0) and entropy_row["spearman_p"] < 0.01
    assert entropy_row["spearman_interval"][0] > agreement["random_orders"]["interval"][1]
    assert agreement["beats_random"] == ["entropy"] and "Criteria whose whole interval lies above" in text
    rows = {r[1]: r for r in markdown_table(text, "#")}
    assert rows["entropy"][8] == "yes" and rows["random"][8] == "reference"
    low = entropy_row["spearman_interval"][0]
    assert f"| 1 | entropy | information | 1.000 | [{low:.2f}, 1.00] | " in text


def test_the_sections_come_in_the_papers_order_with_parts_from_elsewhere_where_asked(tmp_path):
    text = _run(tmp_path, lambda removed, seed: 0.8, extra=[("p", "A note from elsewhere.")],
                after_oracles=[("h", 2, "Agreement between the oracles")],
                after_weights=[("h", 2, "The scored checkpoint's precision")])
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["Single-block removal (oracle, Table 1)", "Agreement between the oracles",
                        "Block ranks (1 = most important, Table 2)", "Agreement with the oracle, all criteria ranked",
                        "Accuracy by pruning ratio (Table 3)", "Weights", "The scored checkpoint's precision"]
    assert text.index("A note from elsewhere.") < text.index("## Single-block removal")  # `extra`: after the note


def test_oracle_seeds_repeat_every_oracle_job_and_share_the_first_with_the_sweep(tmp_path):
    exp = _experiment(tmp_path, seeds=3)
    jobs = sensitivity_jobs(exp)
    assert len(jobs) == 3 * (DEPTH + 1) and len({j.id for j in jobs}) == len(jobs)
    assert sorted({j.finetune_seed for j in jobs}) == [0, 1, 2]
    # the first seed's "remove block 2" is the sweep's one-block job: one job, one result
    assert exp.job([2]).id == next(j.id for j in jobs if j.removed == (2,) and j.finetune_seed == 0)


def test_the_report_names_the_versions_its_models_were_made_with_and_its_own_where_they_differ():
    from importlib.metadata import version

    from gardener.report.experiment import versions_line

    now = {name: version(name) for name in ("torch", "transformers", "accelerate")}
    same = versions_line(now)
    assert same.startswith(f"Made with torch {now['torch']}, transformers {now['transformers']}, accelerate "
                           f"{now['accelerate']};") and "this report was written with" not in same
    older = versions_line({**now, "transformers": "5.24.0"})
    assert "transformers 5.24.0" in older and f"(this report was written with torch {now['torch']}, transformers " \
                                              f"{now['transformers']}" in older
    assert versions_line({}).startswith("Made with versions not recorded (this report was written with torch")
