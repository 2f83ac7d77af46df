"""The paper's evaluation as job lists: the sensitivity oracle and the pruning-ratio sweep.

`sensitivity` finetunes the unpruned model and every single-block removal (Table 1); its
accuracies rank the blocks (lower accuracy after removal = more important). `sweep` removes,
for each criterion and ratio, the blocks the criterion ranks least important (Tables 3, 7-12).
Plans are written beside the results so that `collect` and `report` need no arguments.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import criteria as registry
from ..blocks import select_stack
from ..checkpoint import open_checkpoint
from ..cost import InputSpec, flop_breakdown
from ..errors import GardenerError
from ..fileio import write_text
from ..pruning import count_for_ratio
from ..scoring import ScoreResult, score
from ..stats import average_ranks, interval_of, pack_correct, runs_interval, separable
from ..train import DataOptions, Recipe, finetune
from .runs import Job, RunDir, Settings, open_run, process_rank, run_jobs, source_hash, unique, wait_for

ORACLE = "sensitivity"


@dataclass
class Experiment:
    """A checkpoint, its run folder, and the settings every job of this invocation shares."""

    source: Path
    run: RunDir
    settings: Settings
    data: DataOptions
    recipe: Recipe
    clip: dict
    depth: int
    gflops: float
    block_gflops: list[float]
    keep_models: bool = False
    oracle_seeds: int = 1  # each oracle job is repeated with this many finetuning seeds

    def job(self, removed, seed: int | None = None) -> Job:
        return self.settings.job(removed, seed)

    def gflops_without(self, removed) -> float:
        return self.gflops - sum(self.block_gflops[b - 1] for b in removed)


def prepare(source: str | Path, run_dir: str | Path, data: DataOptions, recipe: Recipe, clip: dict,
            seed: int = 0, keep_models: bool = False, oracle_seeds: int = 1, ratios: str | None = None
            ) -> Experiment:
    """Open the checkpoint and its run folder (which must belong to the same checkpoint).

    Everything that can be checked (a sweep's `ratios` too) is checked before the folder is made."""
    if oracle_seeds < 1:
        raise GardenerError(f"--oracle-seeds {oracle_seeds}: expected at least 1")
    source = Path(source)
    ckpt = open_checkpoint(source)
    if ckpt.format != "hf-dir" or (ckpt.config or {}).get("model_type") != "videomae":
        raise GardenerError(f"{source}: experiments take an HF VideoMAE directory (convert original checkpoints "
                            f"with `gardener convert`)")
    stack = select_stack(ckpt)
    if ratios is not None:
        parse_ratios(ratios, stack.depth)
    frames = clip.get("frames") or ckpt.config["num_frames"]
    size = clip.get("size") or ckpt.config["image_size"]
    total, per_stack = flop_breakdown(ckpt.config, InputSpec(frames, size))
    blocks = next((v for v in per_stack.values() if len(v) == stack.depth), None)
    if blocks is None:
        raise GardenerError(f"{source}: cannot attribute FLOPs to the {stack.depth} blocks of {stack.name}")
    run = open_run(run_dir, source, source_hash(ckpt.files))
    data_key = {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in asdict(data).items()
                if k not in ("workers", "strict")}
    settings = Settings(str(source.resolve()), run.source_hash, data_key, recipe.to_dict(), clip, seed)
    return Experiment(source, run, settings, data, recipe, clip, stack.depth, total, blocks, keep_models, oracle_seeds)


def job_runner(exp: Experiment, callbacks: list | None = None, progress: Callable | None = None):
    """prune -> finetune (resuming an interrupted one) -> evaluate, for one job in its folder."""
    from ..workflows import prune_checkpoint

    def run(job: Job, folder: Path) -> dict:
        model = exp.source
        if job.removed:
            model = folder / "pruned"
            if process_rank() != 0:
                wait_for(model / "config.json")
            elif not (model / "config.json").is_file():
                prune_checkpoint(exp.source, model, blocks=",".join(map(str, job.removed)), force=True)
        train = folder / "train"
        resume = (train / "checkpoints").is_dir() and any((train / "checkpoints").glob("step-*/state.json"))
        info = finetune(model, train, exp.data, exp.recipe, seed=job.finetune_seed, resume=resume,
                        force=not resume, callbacks=callbacks, progress=progress, plots=False, **exp.clip)
        if process_rank() != 0:  # rank 0 records the result (run_jobs makes the others wait for it)
            return {}
        params = open_checkpoint(train / "model").num_params
        final = info["final"]
        correct = read_correct(train / "predictions.csv")
        if not exp.keep_models:
            for name in ("pruned", "train/model", "train/best", "train/checkpoints"):
                shutil.rmtree(folder / name, ignore_errors=True)
        return {"kept": [b for b in range(1, exp.depth + 1) if b not in job.removed], "params": params,
                "gflops": exp.gflops_without(job.removed), "top1": final["top1"], "top5": final["top5"],
                "uar": final["uar"], "videos": final["videos"], "classes": len(final["classes"]),
                "correct": correct, "steps": info["steps"]}
    return run


def read_correct(predictions: Path) -> str:
    """Which test videos a finetuned model got right, in test-split order, as a string of 0 and 1."""
    import csv

    with open(predictions, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return pack_correct(row[1] == row[2] for row in rows)


# --- sensitivity -------------------------------------------------------------------------------------

def sensitivity_jobs(exp: Experiment) -> list[Job]:
    """The unpruned baseline, then each single block removed; all of them once per oracle seed."""
    seeds = [exp.settings.seed + k for k in range(exp.oracle_seeds)]
    return [exp.job(removed, seed) for seed in seeds for removed in [[]] + [[b] for b in range(1, exp.depth + 1)]]


def sensitivity_table(exp_or_plan: dict, run: RunDir) -> dict | None:
    """Table 1 and the oracle scores from a sensitivity plan; None while a job has no result.

    Each accuracy is the mean over the oracle's seeds, with its 95 % Wilson interval from the
    number of test videos. Ranks treat equal accuracies as ties (average ranks); `separable_from`
    names the blocks whose accuracy intervals do not overlap this block's, and `spread` says
    whether any two single-block removals are separable at all.
    """
    results = [run.result(j["id"]) for j in exp_or_plan["jobs"]]
    if any(r is None for r in results):
        return None
    groups: dict[tuple, list[dict]] = {}
    for job, result in zip(exp_or_plan["jobs"], results):
        groups.setdefault(tuple(job["removed"]), []).append(result)
    depth = exp_or_plan.get("depth") or len(groups) - 1
    baseline = _summary(groups[()])
    blocks = [{"block": b, **_summary(groups[(b,)])} for b in range(1, depth + 1)]
    scores = [r["top1"] for r in blocks]
    order = average_ranks(scores, "highest")  # lower accuracy after removal = more important
    for row, rank in zip(blocks, order):
        row["rank"] = rank
        row["vs_unpruned"] = _versus(row, baseline)
    known = all(r["interval"] for r in blocks)  # not when the test-set size is unknown
    for row in blocks:
        row["separable_from"] = [other["block"] for other in blocks if other is not row
                                 and separable(row["interval"], other["interval"])] if known else None
    spread = any(r["separable_from"] for r in blocks) if known else None
    first = groups[()][0]
    return {"baseline": baseline, "blocks": blocks, "scores": scores, "ranks": order, "removes": "highest",
            "seeds": len(groups[()]), "videos": first.get("videos"), "classes": first.get("classes"),
            "spread": spread, "separable_from_unpruned": [r["block"] for r in blocks if r["vs_unpruned"] == "lower"]}


def _summary(results: list[dict]) -> dict:
    """One oracle job over its seeds: mean accuracies, the per-seed top-1, the Wilson interval."""
    top1 = [r["top1"] for r in results]
    videos = results[0].get("videos")
    mean = float(np.mean(top1))
    row = {"params": results[0]["params"], "gflops": results[0]["gflops"], "top1": mean,
           "top5": _mean(r.get("top5") for r in results), "uar": _mean(r.get("uar") for r in results),
           "top1_seeds": top1, "videos": videos, "interval": interval_of(mean, videos)}
    if all(r.get("correct") for r in results):
        row["correct"] = [r["correct"] for r in results]
    return row


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _versus(row: dict, baseline: dict) -> str | None:
    """'lower' or 'higher' than the unpruned model beyond both intervals, else 'not separable'."""
    if not row["interval"] or not baseline["interval"]:
        return None
    if not separable(row["interval"], baseline["interval"]):
        return "not separable"
    return "lower" if row["top1"] < baseline["top1"] else "higher"


def _row(result: dict) -> dict:
    return {k: result.get(k) for k in ("params", "gflops", "top1", "top5", "uar", "videos")}


def oracle_meta(table: dict) -> dict:
    """The parts of a sensitivity table the agreement statistics need."""
    return {"videos": table.get("videos"), "seeds": table.get("seeds"), "spread": table.get("spread"),
            "correct": [r.get("correct") for r in table["blocks"]]}


def write_plan(run: RunDir, kind: str, plan: dict) -> None:
    write_text(run.path / f"{kind}.plan.json", json.dumps(plan, indent=2) + "\n", force=True)


def run_sensitivity(exp: Experiment, shard=(0, 1), callbacks=None, progress=None, job_progress=None) -> dict:
    """Run (this shard's part of) the oracle; returns the table when every job has a result."""
    jobs = sensitivity_jobs(exp)
    plan = {"kind": ORACLE, "depth": exp.depth, "seeds": exp.oracle_seeds,
            "jobs": [{"id": j.id, "removed": list(j.removed), "seed": j.finetune_seed} for j in jobs],
            "settings": asdict(exp.settings)}
    write_plan(exp.run, ORACLE, plan)
    counts = run_jobs(exp.run, jobs, job_runner(exp, callbacks, job_progress), shard, progress)
    table = sensitivity_table(plan, exp.run)
    if table is not None:
        write_oracle(exp, table)
    return {"counts": counts, "table": table}


def write_oracle(exp: Experiment, table: dict) -> ScoreResult:
    """sensitivity.json (Table 1) and oracle.json: the oracle as a score file `prune --ranking` takes
    (its meta carries what `agree` needs for honest statistics: test videos, seeds, per-video results)."""
    base = score(exp.source, ["l1"], primary="l1")
    base.scores, base.removes, base.primary = {ORACLE: table["scores"]}, {ORACLE: "highest"}, ORACLE
    base.meta = {**base.meta, "note": "accuracy (top-1) after finetuning with the block removed",
                 "oracle": oracle_meta(table)}
    write_text(exp.run.path / "oracle.json", json.dumps(base.to_dict(), indent=2) + "\n", force=True)
    write_text(exp.run.path / "sensitivity.json", json.dumps(table, indent=2) + "\n", force=True)
    return base


# --- sweep -------------------------------------------------------------------------------------------

def parse_ratios(text: str, depth: int) -> list[tuple[float, int]]:
    """'8.3,25' (percent) or '0.083,0.25' -> [(ratio, blocks removed)], each validated."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GardenerError(f"--ratios {text!r}: expected comma-separated numbers like 8.3,25,41.7") from None
    if not values:
        raise GardenerError("--ratios: give at least one ratio")
    percent = any(v > 1 for v in values)
    out = []
    for v in values:
        ratio = v / 100 if percent else v
        if not 0 < ratio < 1:
            raise GardenerError(f"--ratios {text}: {v:g} is not a pruning ratio; give percentages between 0 and 100 "
                                f"(8.3,25) or fractions between 0 and 1 (0.083,0.25)")
        try:
            out.append((round(ratio * 100, 1), count_for_ratio(ratio, depth)))
        except GardenerError as exc:  # say it in the user's own words, not as a fraction
            raise GardenerError(f"--ratios {text}: {v:g}{' %' if percent else ''} "
                                f"{str(exc).split(': ', 1)[1]}") from None
    return out


def parse_sweep_criteria(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise GardenerError("--criteria: give at least one criterion")
    data_free = [n for n in names if n != ORACLE]
    if data_free:
        registry.parse(",".join(data_free))  # unknown names fail here, with the list of known ones
    return names


def sweep_rows(exp: Experiment, names: list[str], ratios: list[tuple[float, int]], scores: ScoreResult,
               oracle: dict | None, random_seeds: int) -> list[dict]:
    """One row per (criterion, ratio, seed): the blocks it removes. Oracle rows wait for the oracle."""
    rows = []
    for name in names:
        if name == ORACLE:
            if oracle is None:
                continue
            from ..ranking import removal_order

            orders = {None: [i + 1 for i in removal_order(oracle["scores"], "highest")]}
        elif name == "random":
            orders = {s: score(exp.source, ["random"], seed=s).removal_order("random") for s in range(random_seeds)}
        else:
            orders = {None: scores.removal_order(name)}
        for ratio, count in ratios:
            for seed, order in orders.items():
                removed = sorted(order[:count])
                rows.append({"criterion": name, "ratio": ratio, "count": count, "seed": seed, "removed": removed,
                             "id": exp.job(removed).id})
    return rows


def sweep_table(plan: dict, run: RunDir) -> dict | None:
    """Table 3 from a sweep plan: accuracy per criterion and ratio (random: mean and std over seeds)."""
    baseline = run.result(plan["baseline"])
    results = {r["id"]: run.result(r["id"]) for r in plan["rows"]}
    if baseline is None or any(v is None for v in results.values()) or plan.get("waiting_for_oracle"):
        return None
    base = _row(baseline)
    base["interval"] = interval_of(base["top1"], base.get("videos"))
    cells: dict[tuple[str, float], list[dict]] = {}
    for row in plan["rows"]:
        cells.setdefault((row["criterion"], row["ratio"]), []).append({**row, **_row(results[row["id"]])})
    table = []
    for (name, ratio), members in cells.items():
        top1 = np.array([m["top1"] for m in members])
        videos = members[0].get("videos")
        table.append({"criterion": name, "ratio": ratio, "count": members[0]["count"],
                      "removed": [m["removed"] for m in members] if len(members) > 1 else members[0]["removed"],
                      "gflops": float(np.mean([m["gflops"] for m in members])), "top1": float(top1.mean()),
                      "top1_std": float(top1.std(ddof=1)) if len(members) > 1 else None, "runs": len(members),
                      "drop": float(base["top1"] - top1.mean()), "videos": videos,
                      "interval": runs_interval(top1, videos)})
    return {"baseline": base, "rows": table, "ratios": sorted({r["ratio"] for r in table}),
            "criteria": list(dict.fromkeys(r["criterion"] for r in table)), "classes": baseline.get("classes"),
            "videos": base.get("videos")}


def run_sweep(exp: Experiment, names: list[str], ratios_text: str, random_seeds: int = 3, dtype: str = "stored",
              shard=(0, 1), callbacks=None, progress=None, job_progress=None, aggregate: str = "mean") -> dict:
    """The oracle first when the sweep includes it, then every (criterion, ratio) job."""
    ratios = parse_ratios(ratios_text, exp.depth)
    data_free = [n for n in names if n not in (ORACLE, "random")]
    scores = score(exp.source, data_free + (["entropy"] if "entropy" not in data_free else []), primary="entropy",
                   dtype=dtype, histograms=True, aggregate=aggregate)
    write_text(exp.run.path / "scores.json", json.dumps(scores.to_dict(), indent=2) + "\n", force=True)
    runner = job_runner(exp, callbacks, job_progress)
    counts = {"run": 0, "cached": 0, "other_shards": 0}
    oracle = None
    if ORACLE in names:
        result = run_sensitivity(exp, shard, callbacks, progress, job_progress)
        oracle = result["table"]
        counts = {k: counts[k] + result["counts"][k] for k in counts}
    rows = sweep_rows(exp, names, ratios, scores, oracle, random_seeds)
    baseline = exp.job([])
    plan = {"kind": "sweep", "depth": exp.depth, "baseline": baseline.id, "rows": rows, "criteria": names,
            "ratios": [r for r, _ in ratios], "waiting_for_oracle": ORACLE in names and oracle is None,
            "random_seeds": random_seeds, "dtype": scores.dtype_view, "aggregate": aggregate,
            "settings": asdict(exp.settings)}
    write_plan(exp.run, "sweep", plan)
    jobs = unique([baseline] + [exp.job(r["removed"]) for r in rows])
    more = run_jobs(exp.run, jobs, runner, shard, progress)
    counts = {k: counts[k] + more[k] for k in counts}
    table = sweep_table(plan, exp.run)
    if oracle is None and (exp.run.path / "sensitivity.json").is_file():  # an earlier `gardener sensitivity`
        oracle = json.loads((exp.run.path / "sensitivity.json").read_text())
    if table is not None:
        write_text(exp.run.path / "sweep.json", json.dumps(table, indent=2) + "\n", force=True)
        if oracle is not None:
            write_agreement(exp.run, scores, oracle)
    return {"counts": counts, "table": table, "oracle": oracle, "waiting_for_oracle": plan["waiting_for_oracle"]}


def write_agreement(run: RunDir, scores: ScoreResult, oracle: dict) -> dict:
    """agreement.json: every criterion of the scores against the oracle's sensitivity table."""
    from .agreement import agreement

    agree = agreement(scores, oracle)
    write_text(run.path / "agreement.json", json.dumps(agree, indent=2) + "\n", force=True)
    return agree


def rebuild_tables(run: RunDir) -> dict:
    """After `collect`: the tables of every plan in the run folder whose jobs are all done."""
    made = {}
    plan_file = run.path / f"{ORACLE}.plan.json"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
        table = sensitivity_table(plan, run)
        if table is not None:
            write_text(run.path / "sensitivity.json", json.dumps(table, indent=2) + "\n", force=True)
            made[ORACLE] = table
    plan_file = run.path / "sweep.plan.json"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
        table = sweep_table(plan, run)
        if table is not None:
            write_text(run.path / "sweep.json", json.dumps(table, indent=2) + "\n", force=True)
            made["sweep"] = table
            scores_file, oracle = run.path / "scores.json", made.get(ORACLE)
            if oracle is None and (run.path / "sensitivity.json").is_file():
                oracle = json.loads((run.path / "sensitivity.json").read_text())
            if oracle is not None and scores_file.is_file():
                write_agreement(run, ScoreResult.load(scores_file), oracle)
    return made


def missing_jobs(run: RunDir) -> int:
    """Jobs named by the run folder's plans that have no result yet."""
    ids = set()
    for plan_file in run.path.glob("*.plan.json"):
        plan = json.loads(plan_file.read_text())
        ids |= {j["id"] for j in plan.get("jobs", [])} | {r["id"] for r in plan.get("rows", [])}
        if plan.get("baseline"):
            ids.add(plan["baseline"])
    return sum(1 for i in ids if run.result(i) is None)
