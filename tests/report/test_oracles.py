"""Both oracles in one run folder, from made-up job results: the agreement between them with its interval,
"not separable" where either is noise, what each cost, and every oracle table naming its oracle."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import job_result, markdown_records, markdown_table

from gardener.experiments.oracle import healing, oracle_plan, sensitivity_jobs
from gardener.experiments.plans import rebuild_tables, write_plan
from gardener.experiments.protocol import Experiment
from gardener.experiments.results import HEALING, ORACLE
from gardener.experiments.runs import Settings, open_run
from gardener.report.experiment import write_report
from gardener.stats import pack_correct
from gardener.train import Recipe

DEPTH, VIDEOS, STEPS, HEAL = 5, 400, 100, 3


def _experiment(tmp_path) -> Experiment:
    run = open_run(tmp_path / "run", tmp_path / "model", "0" * 64)
    settings = Settings("model", "0" * 64, {"data": "videos"}, Recipe(max_steps=STEPS).to_dict(), {}, 0)
    return Experiment(tmp_path / "model", run, settings, None, Recipe(max_steps=STEPS), {}, DEPTH, 1.0, [0.1] * DEPTH)


def _oracle(exp: Experiment, kind: str, accuracy_of, seconds: float) -> None:
    """An oracle's plan and a result per job: the first `accuracy_of(removed)` of the videos right."""
    jobs = sensitivity_jobs(exp)
    write_plan(exp.run, kind, oracle_plan(exp, kind, jobs))
    for job in jobs:
        p = accuracy_of(job.removed)
        flags = (np.arange(VIDEOS) < round(p * VIDEOS)).astype(np.uint8)
        folder = exp.run.jobs / job.id
        folder.mkdir(parents=True, exist_ok=True)
        result = job_result(job, top1=float(flags.mean()), top5=1.0, uar=float(flags.mean()), params=1000,
                            videos=VIDEOS, classes=4, gflops=exp.gflops_without(job.removed),
                            correct=pack_correct(flags), steps=exp.recipe.max_steps, seconds=seconds)
        (folder / "result.json").write_text(json.dumps(result))


def _run(tmp_path, full_accuracy, healing_accuracy) -> tuple[dict, str]:
    """Both oracles of one checkpoint, their tables rebuilt from the files, and the report."""
    exp = _experiment(tmp_path)
    _oracle(exp, ORACLE, full_accuracy, seconds=60.0)
    _oracle(healing(exp, HEAL), HEALING, healing_accuracy, seconds=2.5)
    assert set(rebuild_tables(exp.run)) == {ORACLE, HEALING}
    text = write_report(exp.run.path).read_text()
    return json.loads((exp.run.path / "agreement.json").read_text())["between_oracles"], text


def test_two_oracles_that_rank_alike_agree_beyond_random_with_an_interval_and_their_costs(tmp_path):
    between, text = _run(tmp_path, lambda removed: 0.9 - 0.08 * sum(removed),
                         lambda removed: 0.85 - 0.07 * sum(removed))
    assert between["separable"] is True and between["spearman"] == pytest.approx(1.0)
    low, high = between["spearman_interval"]
    assert low > between["random_orders"]["interval"][1] and high == pytest.approx(1.0)
    assert between["beats_random"] is True and between["spearman_p"] < 0.05
    assert between["oracles"]["healing"]["heal_steps"] == HEAL and between["oracles"]["full"]["kind"] == "full"
    jobs = DEPTH + 1
    assert between["cost"] == {"full": {"jobs": jobs, "steps": jobs * STEPS, "seconds": 60.0 * jobs},
                               "healing": {"jobs": jobs, "steps": jobs * HEAL, "seconds": 2.5 * jobs}}
    stats = markdown_records(text, "Spearman rho")[0]
    assert stats["95 % interval"] == f"[{low:.2f}, {high:.2f}]" and stats["beats random"] == "yes"
    assert stats["p (rho)"] == f"{between['spearman_p']:.3g}"  # beside a 'yes', the p-values are given
    cost = {r["oracle"]: r for r in markdown_records(text, "oracle")}
    assert cost[f"healing oracle, {HEAL} steps"]["finetuning steps (all jobs)"] == str((DEPTH + 1) * HEAL)
    assert cost["full oracle"]["wall time (s, summed over jobs)"] == f"{60.0 * (DEPTH + 1):,.1f}"
    ranks = {r[0]: r[1:] for r in markdown_table(text, "block")}
    assert ranks["full oracle"] == ranks[f"healing oracle, {HEAL} steps"] == ["5", "4", "3", "2", "1"]


def test_a_flat_healing_oracle_makes_the_agreement_not_separable_and_without_p_values(tmp_path):
    between, text = _run(tmp_path, lambda removed: 0.9 - 0.08 * sum(removed), lambda removed: 0.8)
    assert between["separable"] is False and between["spread"] == {"full": True, "healing": False}
    assert between["spearman_p"] is None and between["kendall_p"] is None
    assert "**Not separable**: the healing oracle has no spread beyond noise" in text
    assert "p (rho)" not in text and "beats random" not in markdown_records(text, "Spearman rho")[0]


def test_every_oracle_table_of_the_report_names_its_oracle(tmp_path):
    _, text = _run(tmp_path, lambda removed: 0.9 - 0.08 * sum(removed), lambda removed: 0.8)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Single-block removal (oracle, Table 1)",  # the agreement after what it compares
                            f"## Single-block removal (healing oracle, {HEAL} steps; Table 1)",
                            "## Agreement between the oracles"]
    assert "## Single-block removal (oracle, Table 1)" in text
    assert f"## Single-block removal (healing oracle, {HEAL} steps; Table 1)" in text
    assert f"Oracle: **full finetuning**: each job finetunes the pruned model with the whole recipe ({STEPS} steps" \
        in text
    assert f"finetunes only {HEAL} optimizer steps with a warmup of 0" in text  # Recipe(max_steps): no warmup steps
    assert (tmp_path / "run" / "figures" / "single_block_removal_healing.png").stat().st_size > 5000


def test_a_run_folder_with_the_healing_oracle_alone_judges_criteria_against_it_and_says_so(tmp_path):
    from gardener.experiments.results import known_oracle

    exp = _experiment(tmp_path)
    _oracle(healing(exp, HEAL), HEALING, lambda removed: 0.9 - 0.08 * sum(removed), seconds=1.0)
    assert set(rebuild_tables(exp.run)) == {HEALING}
    assert known_oracle(exp.run, {})["oracle"]["kind"] == "healing"  # what a sweep's agreement.json would use
    text = write_report(exp.run.path).read_text()
    assert f"Oracle: **healing, {HEAL} steps**" in text and "Oracle: **full finetuning**" not in text
    assert "Agreement between the oracles" not in text and not (exp.run.path / "agreement.json").exists()


def test_a_removal_against_the_unpruned_model_says_better_or_worse_where_lower_is_better():
    from gardener import tasks
    from gardener.report.oracles import sensitivity_rows

    def table(metric, name):
        row = {name: 9.0, "interval": [8.5, 9.5], "params": 1e6, "gflops": 1.0, "rank": 1}
        return {"metric": metric, "baseline": {**row, name: 8.0, "interval": [7.8, 8.2]},
                "blocks": [{**row, "block": 1, "vs_unpruned": "higher", "separable_from": []},
                           {**row, "block": 2, "vs_unpruned": "lower", "separable_from": []},
                           {**row, "block": 3, "vs_unpruned": "not separable", "separable_from": []}]}
    perplexity = tasks.get("causal-lm").metric.to_dict()
    headers, rows = sensitivity_rows(table(perplexity, "perplexity"))
    column = headers.index("vs unpruned")
    assert [r[column] for r in rows[1:]] == ["higher (worse)", "lower (better)", "not separable"]
    top1 = tasks.get("video-classification").metric.to_dict()
    headers, rows = sensitivity_rows(table(top1, "top1"))  # an accuracy's table reads as it always did
    assert [r[headers.index("vs unpruned")] for r in rows[1:]] == ["higher", "lower", "not separable"]
