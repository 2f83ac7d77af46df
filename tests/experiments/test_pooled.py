"""Verdicts pooled over models: each model's rho, the mean, an interval over models, and beyond random only
where the pooled interval clears the pooled random band; checked by hand on constructed run folders."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from gardener.errors import GardenerError
from gardener.experiments.pooled import pool, read_run

ORACLES = [[1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 3, 5, 4, 6, 8, 7], [1, 3, 2, 4, 6, 5, 7, 8]]
STEADY = [0.80, 0.75, 0.85]  # beyond random in every model
FLIP = [0.90, -0.60, 0.70]  # wins in two models and loses in the third
REVERSED = [-0.80, -0.75, -0.85]  # ranks the blocks the wrong way round in every model


def _agreement(k: int) -> dict:
    row = lambda rho, alone: {"family": "information", "spearman": rho, "beats_random": alone}  # noqa: E731
    return {"oracle_ranks": ORACLES[k], "random_orders": {"mean": 0.0, "interval": [-0.7, 0.7]},
            "criteria": {"steady": row(STEADY[k], True), "flip": row(FLIP[k], FLIP[k] > 0.5),
                         "reversed": row(REVERSED[k], False), "random": row(0.0, None)}}


def _sweep(k: int) -> dict:
    def row(criterion, ratio, top1, half=0.02):
        return {"criterion": criterion, "ratio": ratio, "top1": top1, "interval": [top1 - half, top1 + half]}
    random = [0.50, 0.52, 0.48]
    return {"ratios": [25.0, 50.0], "criteria": ["steady", "flip", "random"],
            "rows": [row("random", 25.0, 0.70), row("random", 50.0, random[k]),
                     row("steady", 25.0, 0.71), row("steady", 50.0, random[k] + 0.10),
                     row("flip", 25.0, 0.72), row("flip", 50.0, random[k] + [0.2, -0.2, 0.1][k])]}


@pytest.fixture
def runs(tmp_path):
    folders = []
    for k in range(3):
        folder = tmp_path / f"model{k}"
        folder.mkdir()
        (folder / "agreement.json").write_text(json.dumps(_agreement(k)))
        (folder / "sweep.json").write_text(json.dumps(_sweep(k)))
        folders.append(folder)
    return folders


def _t(values):
    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return [values.mean() - half, values.mean() + half]


def _random_band_by_hand(draws: int = 4000) -> list[float]:
    """The mean over the three models of one random order's rho each, by scipy, many times."""
    rng = np.random.default_rng(7)
    means = [np.mean([stats.spearmanr(rng.permutation(8), oracle).statistic for oracle in ORACLES])
             for _ in range(draws)]
    return list(np.percentile(means, [2.5, 97.5]))


def test_pooled_agreement_equals_the_computation_by_hand(runs):
    pooled = pool([read_run(r) for r in runs])
    assert pooled["models"] == 3 and pooled["method"].startswith("t-interval over models")
    steady, flip = pooled["agreement"]["criteria"]["steady"], pooled["agreement"]["criteria"]["flip"]
    assert steady["per_model"] == STEADY and steady["mean"] == pytest.approx(np.mean(STEADY))
    assert steady["interval"] == pytest.approx(_t(STEADY))
    assert flip["interval"] == pytest.approx([max(-1, _t(FLIP)[0]), min(1, _t(FLIP)[1])])  # a rho lies in [-1, 1]
    band = pooled["agreement"]["random"]["interval"]
    assert band == pytest.approx(_random_band_by_hand(), abs=0.03)
    assert steady["interval"][0] > band[1] and steady["beats_random"] and steady["beats_random_in"] == 3
    # wins in two models, loses in one: its mean (0.33) is not beyond random, whatever two models say alone
    assert flip["beats_random_in"] == 2 and flip["tested_in"] == 3 and not flip["beats_random"]
    assert pooled["agreement"]["beats_random"] == ["steady"] and "random" not in pooled["agreement"]["criteria"]
    reversed_ = pooled["agreement"]["criteria"]["reversed"]  # wholly below the band: said so, not "not separable"
    assert reversed_["interval"][1] < band[0] and reversed_["below_random"] and not steady["below_random"]


def test_pooled_ratio_table_equals_the_computation_by_hand(runs):
    cells = pool([read_run(r) for r in runs])["sweep"]["criteria"]
    steady, flip = cells["steady"]["50.0"], cells["flip"]["50.0"]
    assert steady["vs_random"] == pytest.approx([0.10, 0.10, 0.10]) and steady["above_random"]
    assert steady["above_random_in"] == 3
    assert flip["vs_random"] == pytest.approx([0.2, -0.2, 0.1]) and flip["interval"] == pytest.approx(_t([0.2, -0.2, 0.1]))
    # agreeing models do not make a zero-width interval: each model's own +-2 points (criterion and random)
    within = np.sqrt(3 * 2 * 0.02 ** 2) / 3
    assert not flip["above_random"] and flip["above_random_in"] == 2
    near = cells["flip"]["25.0"]  # 2 points above random in every model, within each model's own intervals
    assert near["interval"] == pytest.approx([0.02 - within, 0.02 + within]) and near["above_random_in"] == 0
    assert near["above_random"]  # the mean of three: 0.02 against a noise of 0.016
    assert cells["steady"]["25.0"]["interval"] == pytest.approx([0.01 - within, 0.01 + within])
    assert not cells["steady"]["25.0"]["above_random"]  # 1 point in each: within the models' own noise


def test_runs_of_different_studies_or_too_few_are_refused(runs, tmp_path):
    with pytest.raises(GardenerError, match="at least 2 models"):
        pool([read_run(runs[0])])
    other = json.loads((runs[2] / "sweep.json").read_text())
    other["ratios"] = [25.0, 75.0]
    (runs[2] / "sweep.json").write_text(json.dumps(other))
    with pytest.raises(GardenerError, match="different ratios"):
        pool([read_run(r) for r in runs])
    (tmp_path / "empty").mkdir()
    with pytest.raises(GardenerError, match="holds neither agreement.json nor sweep.json"):
        read_run(tmp_path / "empty")


def test_the_pool_command_prints_per_model_and_pooled_tables_and_writes_them(runs, tmp_path, capsys):
    from conftest import run_cli

    out = runs[0] / "pooled.json"  # beside the tables it reads, never over one
    assert run_cli("pool", *runs, "--json", out) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "0.80 0.75 0.85" in printed and "2 of 3" in printed and "Pooled over 3 independently trained models" in printed
    assert "Beyond random over the 3 models: steady." in printed and "below random (reversed)" in printed
    assert "Below random (ranking the blocks the wrong way round): reversed." in printed
    written = json.loads(out.read_text())
    assert written["agreement"]["criteria"] == pool([read_run(r) for r in runs])["agreement"]["criteria"]
    assert written["meta"]["inputs"] and written["meta"]["arguments"]["seed"] == 0
    assert run_cli("pool", *runs, "--json", runs[1] / "agreement.json", "--force") == 2
    assert "error: --json" in capsys.readouterr().err
    assert run_cli("pool", runs[0]) == 2
    assert "at least 2 models" in capsys.readouterr().err


def test_one_runs_agreement_says_it_concerns_one_trained_model_and_how_to_pool():
    from gardener.report.agreement import agreement_summary

    text = agreement_summary(_agreement(0) | {"bootstrap": {"resamples": 100, "seeds": 1}, "beats_random": ["steady"]})
    assert "concern one trained model" in text and "gardener pool RUN1 RUN2" in text


def test_the_pooled_report_draws_each_model_and_the_pooled_interval_and_names_the_versions(runs, tmp_path, capsys):
    from conftest import run_cli
    from PIL import Image

    for k, folder in enumerate(runs):  # the models' own record of what they were made with
        versions = {"torch": "2.13.0", "transformers": "5.25.0" if k else "5.24.0", "accelerate": "1.16.0"}
        (folder / "run.json").write_text(json.dumps({"versions": versions}))
    report = tmp_path / "pooled" / "pooled.md"
    report.parent.mkdir()
    assert run_cli("pool", *runs, "--markdown", report) == 0
    text = report.read_text()
    assert "model 1: torch 2.13.0, transformers 5.24.0, accelerate 1.16.0" in text
    assert "model 2: torch 2.13.0, transformers 5.25.0" in text  # the models differ: each is named
    for name in ("pooled_agreement.png", "pooled_sweep.png"):
        figure = report.parent / "figures" / name
        assert f"figures/{name}" in text and Image.open(figure).size[0] > 300
    before = report.read_text()
    assert run_cli("pool", *runs, "--markdown", report) == 2  # never replaced without --force
    assert "--force" in capsys.readouterr().err and report.read_text() == before
    assert run_cli("pool", *runs, "--markdown", runs[0] / "sweep.json", "--force") == 2  # nor over an input
    assert "never replaces or writes into an input" in capsys.readouterr().err
    assert json.loads((runs[0] / "sweep.json").read_text())["ratios"] == [25.0, 50.0]
