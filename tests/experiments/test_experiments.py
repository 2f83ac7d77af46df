"""The paper's evaluation as commands: oracle, sweep, cache, shards, resume, agreement and report."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import job_result, markdown_records, markdown_table, tiny_videomae
from scipy import stats

import gardener
from gardener.cli import main
from gardener.experiments.oracle import run_sensitivity
from gardener.experiments.protocol import prepare
from gardener.experiments.sweep import run_sweep
from gardener.experiments.runs import open_run
from gardener.train import DataOptions, Recipe

CLIP = {"frames": None, "size": None, "sampling_rate": 2, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.3}
RECIPE = dict(batch_size=8, max_steps=4, warmup_steps=1, base_lr=0.06, layer_decay=1.0, drop_path=0.0,
              classifier_dropout=0.0, save_every=2)
SWEEP = (["entropy", "l2", "stable_rank", "random"], "25,50")


def _experiment(model: Path, run: Path, video_root: Path):
    return prepare(model, run, DataOptions(video_root, workers=0), Recipe(**RECIPE), CLIP, seed=0)


def _tables(run: Path) -> dict:
    return {name: json.loads((run / f"{name}.json").read_text()) for name in ("sensitivity", "sweep", "agreement")}


@pytest.fixture(scope="module")
def model4(tmp_path_factory) -> Path:
    return tiny_videomae(tmp_path_factory.mktemp("exp") / "tiny4", depth=4)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, model4, video_root) -> Path:
    """One uninterrupted, unsharded run: the oracle, then a 2-ratio sweep over 3 criteria, then the report."""
    run = tmp_path_factory.mktemp("exp") / "run"
    exp = _experiment(model4, run, video_root)
    first = run_sensitivity(exp)
    assert first["counts"] == {"run": 5, "cached": 0, "elsewhere": 0, "failed": 0, "held": 0, "other_shards": 0}
    sweep = run_sweep(exp, *SWEEP, random_seeds=2)
    assert sweep["table"] is not None and sweep["counts"]["run"] >= 1
    assert main_code("report", run) == 0
    return run


def main_code(*args) -> int:
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    return stop.value.code


def test_a_second_invocation_runs_no_job(full_run, model4, video_root):
    exp = _experiment(model4, full_run, video_root)
    assert run_sensitivity(exp)["counts"]["run"] == 0
    again = run_sweep(exp, *SWEEP, random_seeds=2)
    assert again["counts"]["run"] == 0 and again["counts"]["cached"] > 0
    oracle = json.loads((full_run / "sensitivity.json").read_text())
    assert sum(oracle["ranks"]) == 10 and len(oracle["blocks"]) == 4  # ties share their average rank
    # the sweep's 1-block jobs are the oracle's: 'remove block b' is one job whichever experiment asks
    sweep = json.loads((full_run / "sweep.json").read_text())
    for row in (r for r in sweep["rows"] if r["count"] == 1 and r["runs"] == 1):
        assert row["top1"] == oracle["blocks"][row["removed"][0] - 1]["top1"]


def test_two_shards_then_collect_give_the_same_tables(tmp_path, full_run, model4, video_root):
    for k in (1, 2):
        exp = _experiment(model4, tmp_path / f"shard{k}", video_root)
        result = run_sensitivity(exp, shard=(k - 1, 2))
        assert result["table"] is None and result["counts"]["other_shards"] > 0
        run_sweep(exp, *SWEEP, random_seeds=2, shard=(k - 1, 2))
    assert main_code("collect", tmp_path / "shard1", tmp_path / "shard2") == 0
    assert _tables(tmp_path / "shard1") == _tables(full_run)


def test_a_killed_run_resumes_without_rerunning_finished_jobs(tmp_path, full_run, model4, video_root):
    exp = _experiment(model4, tmp_path / "run", video_root)
    steps = []

    def kill_in_third_job(step, loss):
        steps.append(step)
        if len(steps) == 2 * RECIPE["max_steps"] + 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_sensitivity(exp, callbacks=[kill_in_third_job])
    finished = [json.loads(line)["id"] for line in (tmp_path / "run" / "jobs.log").read_text().splitlines()]
    assert len(finished) == 2
    run_sensitivity(exp)
    run_sweep(exp, *SWEEP, random_seeds=2)
    ran = [json.loads(line)["id"] for line in (tmp_path / "run" / "jobs.log").read_text().splitlines()]
    assert len(ran) == len(set(ran)) and ran[:2] == finished  # nothing ran twice
    assert _tables(tmp_path / "run") == _tables(full_run)


def test_report_numbers_equal_the_json(full_run):
    from gardener.report.text import rank_text

    text = (full_run / "report.md").read_text()
    tables = _tables(full_run)
    table1 = markdown_records(text, "model state")
    assert table1[0]["top-1 (%)"] == f"{100 * tables['sensitivity']['baseline']['top1']:.2f}"
    for row, block in zip(table1[1:], tables["sensitivity"]["blocks"]):
        assert row["top-1 (%)"] == f"{100 * block['top1']:.2f}" and row["rank"] == rank_text(block["rank"])
        assert row["95 % interval"] == f"[{100 * block['interval'][0]:.1f}, {100 * block['interval'][1]:.1f}]"
    sweep = tables["sweep"]
    table3 = {r[0]: r[1:] for r in markdown_table(text, "ratio (%)")}
    for r in sweep["rows"]:
        cell = table3[r["criterion"]][sweep["ratios"].index(r["ratio"])]
        assert cell.split(" ")[0] == f"{100 * r['top1']:.2f}"
    # the agreement table ranks every criterion of the scores by Spearman rho, best first
    agreement_table = markdown_records(text, "#")
    criteria = tables["agreement"]["criteria"]
    assert sorted(r["criterion"] for r in agreement_table) == sorted(criteria)
    assert [r["#"] for r in agreement_table] == [str(k) for k in range(1, len(criteria) + 1)]
    rhos = [criteria[r["criterion"]]["spearman"] for r in agreement_table]
    assert rhos == sorted(rhos, reverse=True)
    def shown(x):  # an undefined statistic (a constant ranking) is printed as "-"
        return "-" if x is None or x != x else f"{x:.3f}"
    for row in agreement_table:
        c = criteria[row["criterion"]]
        assert row["Spearman rho"] == shown(c["spearman"]) and row["Kendall tau"] == shown(c["kendall"])
        assert row["family"] == gardener.criteria.get(row["criterion"]).group
    for name in ("single_block_removal", "accuracy_vs_ratio", "entropy_vs_oracle_ranks", "weight_histograms",
                 "entropy_per_block", "agreement"):
        assert (full_run / "figures" / f"{name}.png").stat().st_size > 5000, name
    assert main_code("report", full_run, "--format", "html") == 0
    page = (full_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and f"{100 * sweep['baseline']['top1']:.2f}" in page


def test_agree_from_files_alone(tmp_path, full_run, capsys):
    assert main_code("agree", full_run / "scores.json", full_run / "oracle.json", "--json", tmp_path / "a.json") == 0
    result = json.loads((tmp_path / "a.json").read_text())
    assert result == json.loads((full_run / "agreement.json").read_text())
    assert "Spearman rho" in capsys.readouterr().out


# --- one scoring pass per checkpoint per experiment -------------------------------------------------

@pytest.fixture
def score_calls(monkeypatch) -> list[Path]:
    """The checkpoints the experiment pipeline scores, one entry per `score` call (each still scores)."""
    from gardener.experiments import protocol

    calls, real = [], protocol.score

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(protocol, "score", counting)
    return calls


def test_each_experiment_scores_its_checkpoint_once(tmp_path, full_run, model4, video_root, score_calls):
    from gardener.experiments.plans import rebuild_tables

    shutil.copytree(full_run, tmp_path / "run")
    exp = _experiment(model4, tmp_path / "run", video_root)
    # the oracle, three criteria and three random orders; at 25 % every job is an oracle job, cached
    sweep = run_sweep(exp, [*SWEEP[0], "sensitivity"], "25", random_seeds=3)
    assert sweep["counts"]["run"] == 0 and score_calls == [model4]
    assert {(r["criterion"], r["runs"]) for r in sweep["table"]["rows"]} == {
        ("entropy", 1), ("l2", 1), ("stable_rank", 1), ("random", 3), ("sensitivity", 1)}
    score_calls.clear()
    assert run_sensitivity(exp)["table"] is not None and score_calls == [model4]  # alone: a pass of its own
    score_calls.clear()
    assert set(rebuild_tables(exp.run)) == {"sensitivity", "sweep"} and score_calls == []  # from the files alone


def test_random_orders_are_those_of_a_scoring_pass_per_seed(model4):
    from gardener.experiments.sweep import random_orders
    from gardener.scoring import score

    orders = random_orders(score(model4, ["l1"], primary="l1"), 6)
    assert orders == {seed: score(model4, ["random"], seed=seed).removal_order("random") for seed in range(6)}
    assert len({tuple(order) for order in orders.values()}) > 1


def test_the_oracle_file_is_the_oracles_own_score_result(full_run, model4):
    """oracle.json names the blocks of a scoring pass (of any criteria and view) and scores them by the
    oracle's accuracies alone: what an l1 pass with its scores replaced by them gave before."""
    from gardener.experiments.results import ORACLE, oracle_meta, oracle_result
    from gardener.scoring import score

    table = json.loads((full_run / "sensitivity.json").read_text())
    before = score(model4, ["l1"], primary="l1")
    before.scores, before.removes, before.primary = {ORACLE: table["scores"]}, {ORACLE: "highest"}, ORACLE
    source = json.loads((full_run / "run.json").read_text())["source_hash"]  # what `prune --ranking` checks
    before.meta = {"note": "accuracy (top-1) after finetuning with the block removed", "oracle": oracle_meta(table),
                   "source_hash": source}
    expected = json.loads(json.dumps(before.to_dict()))
    assert json.loads((full_run / "oracle.json").read_text()) == expected
    sweep_pass = score(model4, ["entropy", "stable_rank"], dtype="float16", histograms=True, aggregate="max")
    assert json.loads(json.dumps(oracle_result(sweep_pass, table, source).to_dict())) == expected


@pytest.mark.parametrize("case,message", [
    ("ratio_zero", "removes 0 of 4 blocks"), ("ratio_all", "removes 4 of 4 blocks"),
    ("unknown_criterion", "unknown criterion"), ("other_checkpoint", "made for another checkpoint"),
    ("shard", "--shard '3/2'"),
])
def test_bad_input_is_refused_and_overwrites_nothing(tmp_path, full_run, model4, video_root, capsys, case, message):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    args = ["sweep", model4, "--data", video_root, "-o", run, "--max-steps", 2, "--criteria", "entropy",
            "--ratios", "50"]
    if case == "ratio_zero":
        args[-1] = "10"
    elif case == "ratio_all":
        args[-1] = "95"
    elif case == "unknown_criterion":
        args[-3] = "entropy,wisdom"
    elif case == "other_checkpoint":
        args[1] = tiny_videomae(tmp_path / "other", seed=1, depth=4)
    elif case == "shard":
        args += ["--shard", "3/2"]
    capsys.readouterr()
    assert main_code(*args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before


# --- the paper's own numbers as job results -------------------------------------------------------

PAPER_SINGLE = [46.73, 90.58, 86.14, 74.65, 88.32, 87.43, 88.51, 88.02, 90.79, 90.30, 91.09, 91.29]
PAPER_ENTROPY = [9.5484, 9.4170, 9.3856, 9.3946, 9.3830, 9.3894, 9.3775, 9.3787, 9.3612, 9.3514, 9.3539, 9.3487]
PAPER_TABLE2 = {"entropy": [1, 2, 5, 3, 6, 4, 8, 7, 9, 11, 10, 12], "sensitivity": [1, 9, 3, 2, 6, 4, 7, 5, 10, 8, 11, 12]}
PAPER_GFLOPS = [166, 139, 112, 84, 57, 30]
PAPER_TABLE3 = {"sensitivity": [91.29, 86.63, 84.26, 78.91, 76.44, 68.81],
                "entropy": [91.29, 85.54, 82.97, 79.90, 73.56, 68.81]}
PAPER_UNPRUNED = 91.78


def _paper_run(tmp_path) -> Path:
    """A run folder whose job results are the paper's accuracies, its tables rebuilt and reported."""
    from transformers import VideoMAEConfig

    from gardener.cost import InputSpec, flop_breakdown
    from gardener.experiments.oracle import sensitivity_jobs
    from gardener.experiments.plans import rebuild_tables, write_plan
    from gardener.experiments.protocol import Experiment
    from gardener.experiments.results import ORACLE
    from gardener.experiments.sweep import sweep_rows
    from gardener.experiments.runs import Settings
    from gardener.report.experiment import write_report
    from gardener.scoring import BlockInfo, ScoreResult

    run = open_run(tmp_path / "paper", tmp_path / "videomae-b", "0" * 64)
    total, stacks = flop_breakdown(VideoMAEConfig(num_labels=101).to_dict(), InputSpec(16, 224))
    settings = Settings("videomae-b", "0" * 64, {"data": "UCF101"}, Recipe(epochs=100).to_dict(), {}, 0)
    exp = Experiment(tmp_path / "videomae-b", run, settings, None, Recipe(epochs=100), {}, 12, total,
                     next(v for v in stacks.values() if len(v) == 12))

    def put(removed, war):
        job = exp.job(removed)
        (run.jobs / job.id).mkdir(parents=True, exist_ok=True)
        result = job_result(job, top1=war / 100, top5=None, uar=None, params=0, gflops=exp.gflops_without(removed))
        (run.jobs / job.id / "result.json").write_text(json.dumps(result))
        return job

    jobs = sensitivity_jobs(exp)
    write_plan(run, ORACLE, {"kind": ORACLE, "depth": 12, "jobs": [{"id": j.id, "removed": list(j.removed)}
                                                                    for j in jobs], "settings": asdict(settings)})
    for job, war in zip(jobs, [PAPER_UNPRUNED] + PAPER_SINGLE):
        put(job.removed, war)
    scores = ScoreResult("videomae-b", "hf-dir", "videomae.encoder.layer", "hf-encoder", "float16", ["F16"], "2d",
                         "entropy", 2048, 0, [BlockInfo(b, 7077888, 6, 0) for b in range(1, 13)],
                         {"entropy": PAPER_ENTROPY}, {"entropy": "lowest"})
    (run.path / "scores.json").write_text(json.dumps(scores.to_dict()))
    oracle = {"scores": [w / 100 for w in PAPER_SINGLE]}
    ratios = [(r, c) for r, c in zip([8.3, 25.0, 41.7, 58.3, 75.0, 91.7], [1, 3, 5, 7, 9, 11])]
    rows = sweep_rows(exp, ["sensitivity", "entropy"], ratios, scores, oracle, 0)
    for row in rows:
        put(row["removed"], PAPER_TABLE3[row["criterion"]][[r for r, _ in ratios].index(row["ratio"])])
    write_plan(run, "sweep", {"kind": "sweep", "baseline": exp.job([]).id, "rows": rows, "settings": asdict(settings)})
    rebuild_tables(run)
    write_report(run.path)
    return run.path


def test_report_reproduces_the_papers_tables_from_its_job_results(tmp_path):
    """Job results set to the paper's accuracies: the tables, GFLOPs and agreement come out as published."""
    text = (_paper_run(tmp_path) / "report.md").read_text()
    table3 = {r[0]: r[1:] for r in markdown_table(text, "ratio (%)")}
    for name, values in PAPER_TABLE3.items():
        assert table3[name] == [f"{v:.2f}" for v in values]
    # 180 and 166 are matched; the paper's later GFLOPs imply ~16 GFLOPs outside the blocks where the
    # model has ~2.7 (patch embedding and head), so from 5 removed blocks on our counts are lower
    for got, want in zip(table3["GFLOPs"][:2], PAPER_GFLOPS[:2]):
        assert float(got) == pytest.approx(want, rel=0.03)
    assert [float(g) for g in table3["GFLOPs"]] == sorted((float(g) for g in table3["GFLOPs"]), reverse=True)
    table2 = {r[0]: [int(x) for x in r[1:]] for r in markdown_table(text, "block")}
    assert table2["entropy"] == PAPER_TABLE2["entropy"] and table2["sensitivity (oracle)"] == PAPER_TABLE2["sensitivity"]
    rho = stats.spearmanr(PAPER_TABLE2["entropy"], PAPER_TABLE2["sensitivity"]).statistic
    tau = stats.kendalltau(PAPER_TABLE2["entropy"], PAPER_TABLE2["sensitivity"]).statistic
    agreement = {r["criterion"]: r for r in markdown_records(text, "#")}
    assert agreement["entropy"]["Spearman rho"] == f"{rho:.3f}" and agreement["entropy"]["Kendall tau"] == f"{tau:.3f}"
    # published accuracies carry no per-video results: no interval, and "beats random" is not tested
    assert agreement["entropy"]["95 % interval"] == "-" and agreement["entropy"]["beats random"] == "-"
    assert "whether a criterion beats random orders is not tested" in text
    assert re.search(r"\| unpruned \| [^|]+ \| [^|]+ \| 91\.78 \|", text)


def test_oracle_seeds_from_the_command_line_average_each_oracle_job(tmp_path, model4, video_root):
    args = ["sensitivity", model4, "--data", video_root, "-o", tmp_path / "run", "--max-steps", 2, "--batch-size", 8,
            "--lr", 0.06, "--workers", 0, "--sampling-rate", 2, "--test-clips", 1, "--test-crops", 1,
            "--oracle-seeds", 2]
    assert main_code(*args) == 0
    table = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    assert table["seeds"] == 2 and all(len(r["top1_seeds"]) == 2 for r in table["blocks"])
    for row in [table["baseline"], *table["blocks"]]:
        assert row["top1"] == pytest.approx(sum(row["top1_seeds"]) / 2)
    ran = [json.loads(line) for line in (tmp_path / "run" / "jobs.log").read_text().splitlines()]
    assert sorted(r["seed"] for r in ran) == [0] * 5 + [1] * 5


def test_calibration_criteria_sit_beside_the_data_free_ones_with_their_cost(tmp_path, full_run, model4, video_root,
                                                                            capsys):
    from gardener.scoring import CalibOptions, ScoreSettings

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    exp = _experiment(model4, run, video_root)
    names = ["l2", "block_influence", "angular_distance", "sensitivity"]
    result = run_sweep(exp, names, "25,50", random_seeds=2, scoring=ScoreSettings(calib=CalibOptions(video_root,
                                                                                                    calib_clips=4)))
    assert {r["criterion"] for r in result["table"]["rows"]} >= {"block_influence", "angular_distance", "l2"}
    agree = json.loads((run / "agreement.json").read_text())["criteria"]
    assert agree["block_influence"]["cost"]["clips"] == 4 and agree["block_influence"]["cost"]["seconds"] > 0
    assert agree["l2"]["cost"] is None
    assert main_code("report", run) == 0
    rows = {r["criterion"]: r for r in markdown_records((run / "report.md").read_text(), "#")}
    assert rows["angular_distance"]["cost beyond the weights"].startswith("4 clips, ")
    assert rows["l2"]["cost beyond the weights"] == "none"
    assert rows["block_influence"]["family"] == "calibration"
    capsys.readouterr()
    assert main_code("sweep", model4, "--data", video_root, "-o", tmp_path / "new", "--criteria", "calibration") == 2
    assert "give --calib-data" in capsys.readouterr().err and not (tmp_path / "new").exists()
