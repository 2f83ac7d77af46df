"""The embedded default: `gardener demo --quick` end to end (its own CI step: pytest -m quick_demo)."""
from __future__ import annotations

import json
import re
from importlib.metadata import version

import pytest
import transformers as T
from conftest import markdown_records, markdown_table
from conftest import run_cli as _cli

pytestmark = pytest.mark.quick_demo


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """`gardener demo --quick` run once."""
    out = tmp_path_factory.mktemp("demo") / "a"
    assert _cli("demo", out, "--quick") == 0
    return out


@pytest.fixture(scope="module")
def quick_demos(quick_demo):
    """`gardener demo --quick` run twice with one seed, in two folders (the second is made only for the tests
    that need it: CI's pass under the oldest versions runs the others)."""
    second = quick_demo.parent / "b"
    assert _cli("demo", second, "--quick") == 0
    return quick_demo, second


def _results(out):
    """The tables of a demo, without wall times (a calibration criterion's cost in seconds)."""
    run = out / "run"
    tables = {name: json.loads((run / f"{name}.json").read_text()) for name in ("sensitivity", "sweep", "agreement")}
    for row in tables["agreement"]["criteria"].values():
        if row.get("cost"):
            assert row["cost"]["seconds"] > 0
            row["cost"] = {**row["cost"], "seconds": "timed"}
    healing = json.loads((out / "heal" / "healing.json").read_text())
    return {"hash": json.loads((run / "run.json").read_text())["source_hash"], "healing": healing, **tables}


def test_one_seed_gives_the_same_videos_encoder_and_tables(quick_demos):
    a, b = quick_demos
    videos = sorted(p.relative_to(a) for p in (a / "data").rglob("*.mp4"))
    assert len(videos) == 8 * (24 + 6 + 25)
    assert all((a / v).read_bytes() == (b / v).read_bytes() for v in videos)
    assert _results(a) == _results(b)


def test_quick_demo_runs_the_papers_pipeline_in_miniature(quick_demo):
    from gardener.checkpoint import open_checkpoint

    out = quick_demo
    text = (out / "report.md").read_text()
    released = out / "source" / "model-float16"
    ckpt = open_checkpoint(released)  # scored and pruned as released VideoMAEs are stored: float16
    assert {ckpt.info(name).dtype for name in ckpt.names()} == {"F16"}
    assert T.VideoMAEForVideoClassification.from_pretrained(released).config.num_hidden_layers == 12
    source = json.loads((out / "source" / "gardener.json").read_text())["final"]
    loss = json.loads((out / "pretrain" / "gardener.json").read_text())["loss"]
    assert (f"reconstruction loss {loss['final_loss']:.3f} at the end, against {loss['trivial_loss']:.3f} for the "
            "trivial answer") in text
    assert f"source test top-1 **{100 * source['top1']:.1f} %**" in text
    assert "Float16: meaningful" in text and "Float32: not meaningful" in text  # both views, block by block
    assert f"Made with torch {version('torch')}, transformers {version('transformers')}, accelerate " in text
    sensitivity = json.loads((out / "run" / "sensitivity.json").read_text())
    assert sensitivity["videos"] == 8 * 25 and sensitivity["classes"] == 8
    assert sensitivity["baseline"]["top1"] >= 2 / 8  # at least twice chance
    assert "on **200 test videos** of 8 classes, chance 12.5 %" in text
    for link in re.findall(r"\]\((run/figures/[\w.]+\.png)\)", text):
        assert (out / link).stat().st_size > 5000
    assert len(re.findall(r"\]\((run/figures/[\w.]+\.png)\)", text)) == 6
    sweep = json.loads((out / "run" / "sweep.json").read_text())
    table = {r[0]: r[1:] for r in markdown_table(text, "ratio (%)")}
    for row in sweep["rows"]:
        assert table[row["criterion"]][sweep["ratios"].index(row["ratio"])].split(" ")[0] == \
            f"{100 * row['top1']:.2f}"
    spectral = {"spectral_entropy", "effective_rank", "stable_rank", "alpha", "alpha_weighted", "log_spectral_norm"}
    calibration = {"block_influence", "angular_distance", "skip_loss"}
    assert set(sweep["criteria"]) == {"entropy", "l1", "l2", "mean", "variance", "std", "kurtosis",
                                      "mutual_information", "random", "sensitivity"} | spectral | calibration
    # the all-criteria agreement table: every data-free criterion and random, best Spearman rho first
    agreement = json.loads((out / "run" / "agreement.json").read_text())["criteria"]
    rows = markdown_table(text, "#")
    assert {r[1] for r in rows} == set(sweep["criteria"]) - {"sensitivity"} == set(agreement)
    assert [float(r[3]) for r in rows] == sorted((float(r[3]) for r in rows), reverse=True)
    assert all(r[3] == f"{agreement[r[1]]['spearman']:.3f}" for r in rows)
    # the three families side by side, with what each costs beyond the weights
    records = {r["criterion"]: r for r in markdown_records(text, "#")}
    assert {records[n]["family"] for n in records} >= {"information", "spectral", "calibration"}
    assert all(records[n]["cost beyond the weights"].startswith("16 clips, ") for n in calibration)
    assert records["entropy"]["cost beyond the weights"] == "none"
    # the healing oracle beside the full one: their agreement with its interval (or why there is none), and cost
    assert "## Agreement between the oracles" in text and "### Cost of each oracle" in text
    costs = {r["oracle"]: r for r in markdown_records(text, "oracle")}
    assert len(costs) == 2 and any(r["finetuning steps (all jobs)"] == f"{13 * 3:,}" for r in costs.values())


def test_the_demo_scores_its_checkpoint_once_and_writes_one_score_file(quick_demos, monkeypatch):
    from pathlib import Path

    from gardener.experiments import protocol

    out, calls, real = quick_demos[1], [], protocol.score

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(protocol, "score", counting)
    assert _cli("demo", out, "--quick") == 0  # every job cached: each experiment still scores its checkpoint, once
    assert calls == [out / "source" / "model-float16", out / "target" / "model"]  # the sweep's, the healing oracle's
    assert {p.relative_to(out) for p in out.rglob("scores.json")} <= {Path("heal/scores.json"), Path("run/scores.json")}
    assert (out / "run" / "scores.json").is_file()


def test_a_second_run_reuses_every_stage_and_other_settings_are_refused(quick_demo, capsys):
    out = quick_demo
    capsys.readouterr()
    jobs_before = (out / "run" / "jobs.log").read_text()
    assert _cli("demo", out, "--quick") == 0  # every stage cached: no job runs again
    assert (out / "run" / "jobs.log").read_text() == jobs_before
    assert capsys.readouterr().err.count("done before") == 3
    assert _cli("demo", out) == 2  # other settings in the same folder: refused


def test_replicates_pool_the_verdicts_of_independently_trained_models(quick_demos, capsys):
    """(Last in this module: it adds a second model to the folder the tests above read as it was.) The second
    model's jobs run here: with `--launcher local --local-workers 2` this step took 11 min instead of 4.6 on
    2 CPU cores (each worker decodes every video again), so the demo's launchers are tested where they
    are cheap (tests/experiments/test_workers.py: `run_to_end`, and the launcher checked first)."""
    out = quick_demos[1]  # replicate 1 is this folder (seed 0): every stage cached
    capsys.readouterr()
    assert _cli("demo", out, "--quick", "--replicates", "2") == 0
    shown = capsys.readouterr().err
    assert shown.count("done before") == 3  # the first model's stages, reused as on a second run
    for stage in ("masked pretraining", "finetuning on the source task", "finetuning on the target task"):
        assert re.search(rf"^ *{stage}: step \d+/\d+ · loss .*ETA", shown, re.M), stage  # one line per tenth
    assert re.search(r"^ *job \d+/\d+ done: removing .*\(\d+ s\), ETA", shown, re.M)
    second = json.loads((out / "replicates" / "2" / "demo.json").read_text())
    assert second["seed"] == 1 and (out / "replicates" / "2" / "report.md").is_file()
    pooled = json.loads((out / "pooled.json").read_text())
    firsts = [json.loads((run / "agreement.json").read_text())["criteria"]
              for run in (out / "run", out / "replicates" / "2" / "run")]
    assert pooled["models"] == 2 and pooled["meta"]["arguments"]["runs"][0].endswith("run")
    for name, row in pooled["agreement"]["criteria"].items():  # per model, as each model's own table says
        assert row["per_model"] == [f[name]["spearman"] for f in firsts]
        assert row["beats_random"] <= (row["beats_random_in"] >= 1)
    text = (out / "pooled.md").read_text()
    assert "Verdicts pooled over 2 trained models" in text and "rho per model" in text
    assert "figures/pooled_agreement.png" in text and (out / "figures" / "pooled_sweep.png").is_file()
    assert f"Every model was made with torch {version('torch')}, transformers {version('transformers')}" in text
    assert "concern one trained model" in (out / "report.md").read_text()
