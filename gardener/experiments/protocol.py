"""The paper's evaluation as job lists: the sensitivity oracle and the pruning-ratio sweep.

`sensitivity` finetunes the unpruned model and every single-block removal (Table 1); its
accuracies rank the blocks (lower accuracy after removal = more important). With `heal_steps` it
is the healing oracle instead: every job starts from the given (task-finetuned) classifier, head
included, and trains only K steps, orders of magnitude cheaper than the full recipe; its jobs and
files (healing.json, healing_oracle.json) are its own, so both oracles can share a run folder.
`sweep` removes, for each criterion and ratio, the blocks the criterion ranks least important
(Tables 3, 7-12).
Plans are written beside the results so that `collect` and `report` need no arguments.
An experiment scores its checkpoint once (`experiment_scores`, or the oracle's own pass when it
runs alone): the sweep's orders, its random orders and oracle.json all come from that pass, and
`results.finish_tables` writes the tables at the end of every command.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import criteria as registry
from ..blocks import select_stack
from ..calibration import CalibOptions
from ..checkpoint import open_checkpoint
from ..cost import InputSpec, flop_breakdown
from ..errors import GardenerError
from ..fileio import check_output
from ..settings import check_number
from ..pruning import count_for_ratio
from ..scoring import ScoreResult, score
from ..stats import pack_correct
from ..train import DataOptions, Recipe, finetune
from .queue import QueueOptions, Task, failed_for_good, forget_failures, write_spec
from .results import HEALING, ORACLE, finish_tables, known_oracle, write_json
from .identity import decisive
from .runs import (Job, RunDir, Settings, open_run, process_rank, read_plan, run_jobs, source_hash, unique,
                   wait_for)


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
    queue: QueueOptions = QueueOptions()
    launcher: str = "none"  # "none": this process runs the jobs; "local": worker processes; "slurm": queue only
    local_workers: int = 1

    def job(self, removed, seed: int | None = None) -> Job:
        return self.settings.job(removed, seed)

    def gflops_without(self, removed) -> float:
        return self.gflops - sum(self.block_gflops[b - 1] for b in removed)


def prepare(source: str | Path, run_dir: str | Path, data: DataOptions, recipe: Recipe, clip: dict,
            seed: int = 0, keep_models: bool = False, oracle_seeds: int = 1, ratios: str | None = None,
            heal_steps: int | None = None, queue: QueueOptions = QueueOptions(), launcher: str = "none",
            local_workers: int = 1, inputs: list[tuple[str, Path | None]] | None = None) -> Experiment:
    """Open the checkpoint and its run folder (which must belong to the same checkpoint, and must not be,
    hold or lie inside the checkpoint, the data or any of the other `inputs`).

    Everything that can be checked (a sweep's `ratios`, a healing oracle's `heal_steps` too) is checked
    before the folder is made."""
    if oracle_seeds < 1:
        raise GardenerError(f"--oracle-seeds {oracle_seeds}: expected at least 1")
    check_number("--seed", seed, 0)
    recipe.check()
    data.check()
    source = Path(source)
    ckpt = open_checkpoint(source)
    check_output(run_dir, [*ckpt.as_inputs(source), *data.inputs(), *(inputs or [])], force=True, flag="-o/--run")
    _check_source(source, ckpt.format, ckpt.config or {}, heal_steps)
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
    return Experiment(source, run, settings, data, recipe, clip, stack.depth, total, blocks, keep_models, oracle_seeds,
                      queue.check(), launcher, local_workers)


def experiment_spec(exp: Experiment) -> dict:
    """What a worker needs to run this experiment's jobs, with nothing but the run folder (job.json)."""
    return {"source": str(exp.source.resolve()), "settings": asdict(exp.settings), "recipe": exp.recipe.to_dict(),
            "data": {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in asdict(exp.data).items()},
            "clip": exp.clip, "depth": exp.depth, "gflops": exp.gflops, "block_gflops": exp.block_gflops,
            "keep_models": exp.keep_models}


def experiment_from_spec(spec: dict, run: RunDir) -> Experiment:
    """The experiment a queued job belongs to, as the command that queued it had it."""
    data = DataOptions(**{k: Path(v) if k in ("data", "split_dir", "eval_data") and v is not None else v
                          for k, v in spec["data"].items()})
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["recipe"].items()})
    settings = Settings(**spec["settings"])
    return Experiment(Path(spec["source"]), run, settings, data, recipe, spec["clip"], spec["depth"], spec["gflops"],
                      spec["block_gflops"], spec["keep_models"])


def queue_jobs(exp: Experiment, jobs: list[Job]) -> None:
    """Write each job's job.json (once), so that workers can run it."""
    spec = experiment_spec(exp)
    for order, job in enumerate(unique(jobs)):
        write_spec(exp.run.jobs / job.id, {"id": job.id, "removed": list(job.removed), "seed": job.seed,
                                           "order": order, "experiment": spec})


def queued_tasks(run: RunDir, callbacks=None, progress=None,
                 unreadable: dict[str, str] | None = None) -> Callable[[], list[Task]]:
    """Every job queued in the run folder as a worker's task (experiments rebuilt once per settings); with
    `unreadable`, a job.json that cannot be read is named there and the other jobs run."""
    from .queue import read_specs

    built: dict[str, Callable] = {}

    def tasks() -> list[Task]:
        out = []
        for spec in read_specs(run.jobs, unreadable):
            key = json.dumps(spec["experiment"], sort_keys=True)
            if key not in built:
                built[key] = job_runner(experiment_from_spec(spec["experiment"], run), callbacks, progress)
            job = Job(Settings(**spec["experiment"]["settings"]), tuple(spec["removed"]), spec["seed"])
            if job.id != spec["id"]:
                raise GardenerError(f"{run.jobs / spec['id']}: job.json describes another job (id {job.id}); "
                                    f"it was queued by another gardener version")
            out.append(task(job, built[key]))
        return out
    return tasks


def task(job: Job, runner: Callable[..., dict]) -> Task:
    """A job as the queue runs it: the runner's result with the job's identity added."""
    def run(folder: Path, guard: Callable[[], None] | None = None) -> dict:
        return {**runner(job, folder, guard), "id": job.id, "removed": list(job.removed), "seed": job.finetune_seed,
                "settings": asdict(job.settings)}
    return Task(job.id, job.removed, job.finetune_seed, run)


def execute(exp: Experiment, jobs: list[Job], shard=(0, 1), callbacks=None, progress=None,
            job_progress=None) -> dict[str, int]:
    """Queue the jobs, then run them as the experiment's launcher says: here (this shard's share),
    by local worker processes, or not at all (`slurm`: the command submits the queue when it ends)."""
    for job in unique(jobs) if process_rank() == 0 else []:  # a new command tries failed jobs again
        if failed_for_good(exp.run.jobs / job.id, exp.queue.retries):
            forget_failures(exp.run.jobs / job.id)
    queue_jobs(exp, jobs)
    if exp.launcher == "local":
        from .launch import run_local_workers

        return run_local_workers(exp.run, unique(jobs), exp.local_workers, exp.queue, progress)
    if exp.launcher == "slurm":
        done = sum(1 for job in unique(jobs) if exp.run.has_result(job))
        return {"run": 0, "cached": done, "other_shards": 0, "queued": len(unique(jobs)) - done}
    runner = job_runner(exp, callbacks, job_progress)
    return run_jobs(exp.run, [task(job, runner) for job in unique(jobs)], shard, replace(exp.queue, raise_errors=True),
                    progress)


def _check_source(source: Path, fmt: str, config: dict, heal_steps: int | None) -> None:
    """An HF VideoMAE directory; for the healing oracle, a classifier (whose head its jobs keep)."""
    if fmt != "hf-dir" or config.get("model_type") != "videomae":
        raise GardenerError(f"{source}: experiments take an HF VideoMAE directory (convert original checkpoints "
                            f"with `gardener convert`)")
    check_heal_steps(heal_steps)
    if heal_steps is not None and "VideoMAEForVideoClassification" not in (config.get("architectures") or []):
        raise GardenerError(f"--heal-steps: {source} is not a classifier; healing starts from a checkpoint "
                            f"finetuned on the task being evaluated (or leave out --heal-steps for the full oracle)")


def check_heal_steps(heal_steps: int | None) -> None:
    """A healing oracle trains at least one step (None: the full oracle)."""
    if heal_steps is not None and heal_steps < 1:
        raise GardenerError(f"--heal-steps {heal_steps}: expected at least 1 optimizer step")


def job_runner(exp: Experiment, callbacks: list | None = None, progress: Callable | None = None):
    """prune -> finetune (resuming an interrupted one) -> evaluate, for one job in its folder."""
    from ..workflows import prune_checkpoint

    def run(job: Job, folder: Path, guard: Callable[[], None] | None = None) -> dict:
        """`guard()` raises once the job's claim is no longer this worker's: checked before every write."""
        began = time.perf_counter()
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
                        force=not resume, callbacks=callbacks, progress=progress,
                        keep_head=exp.settings.keep_head, lock=False, guard=guard, **exp.clip)
        if process_rank() != 0:  # rank 0 records the result (run_jobs makes the others wait for it)
            return {}
        if guard is not None:
            guard()
        params = open_checkpoint(train / "model").num_params
        final = info["final"]
        correct = read_correct(train / "predictions.csv")
        if not exp.keep_models:
            for name in ("pruned", "train/model", "train/best", "train/checkpoints"):
                shutil.rmtree(folder / name, ignore_errors=True)
        return {"kept": [b for b in range(1, exp.depth + 1) if b not in job.removed], "params": params,
                "gflops": exp.gflops_without(job.removed), "top1": final["top1"], "top5": final["top5"],
                "uar": final["uar"], "videos": final["videos"], "classes": len(final["classes"]),
                "correct": correct, "steps": info["steps"], "warmup_steps": info["warmup_steps"],
                "seconds": round(time.perf_counter() - began, 3)}  # this invocation's wall time (a resume's part)
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


def write_plan(run: RunDir, kind: str, plan: dict) -> None:
    """Write the plan of `kind` ("sensitivity", "healing", "sweep"). A plan already there that was made with
    other settings (recipe, data, clips, seed, heal steps) is refused, not replaced: its table would be
    another experiment's; the same experiment with other criteria, ratios or seeds replaces it."""
    path = run.path / f"{kind}.plan.json"
    if path.is_file():
        changed = plan_changes(path, plan)
        if changed:
            raise GardenerError(f"{run.path}: its {kind} was run with other settings ({changed}); run this one in "
                                f"another run folder (its jobs' results there stay as they are)")
    write_json(path, plan)


def plan_changes(path: Path, plan: dict) -> str | None:
    """What differs, in what decides the results, between the plan in `path` and `plan`; None when nothing
    (or when the old plan cannot be read: it is replaced)."""
    from ..train.state import changes_said

    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        return None
    return changes_said({"settings": decisive(old["settings"])}, {"settings": decisive(plan["settings"])})


def healing(exp: Experiment, heal_steps: int) -> Experiment:
    """The experiment of the healing oracle: its jobs keep the checkpoint's classifier head and train
    exactly `heal_steps` optimizer steps, with a warmup of at most that many (the given warmup steps,
    else none: a warmup in epochs would span the whole run); every other setting is the experiment's."""
    check_heal_steps(heal_steps)
    recipe = replace(exp.recipe, max_steps=heal_steps, epochs=None,
                     warmup_steps=min(exp.recipe.warmup_steps or 0, heal_steps))
    return replace(exp, recipe=recipe, settings=replace(exp.settings, recipe=recipe.to_dict(), keep_head=True))


def oracle_plan(exp: Experiment, kind: str, jobs: list[Job]) -> dict:
    """The plan of an oracle: its jobs, settings, and which oracle it is ("full" finetuning with the
    experiment's recipe, or "healing" of the given checkpoint for K steps)."""
    oracle = {"kind": "full", "head": "fresh"} if kind == ORACLE else {
        "kind": "healing", "heal_steps": exp.recipe.max_steps, "warmup_steps": exp.recipe.warmup_steps, "head": "kept"}
    return {"kind": kind, "oracle": oracle, "depth": exp.depth, "seeds": exp.oracle_seeds,
            "jobs": [{"id": j.id, "removed": list(j.removed), "seed": j.finetune_seed} for j in jobs],
            "settings": asdict(exp.settings)}


def run_sensitivity(exp: Experiment, shard=(0, 1), callbacks=None, progress=None, job_progress=None,
                    scores: ScoreResult | None = None, heal_steps: int | None = None) -> dict:
    """Run (this shard's part of) the oracle; returns the table when every job has a result.

    `heal_steps` K makes it the healing oracle (`healing`): sensitivity plan, jobs and files of its own
    (healing.json, healing_oracle.json). `scores` is the experiment's scoring pass (a sweep's), whose
    blocks the oracle's ranking file names; alone, the oracle makes the one pass of its own (the
    cheapest criterion) once every job has a result.
    """
    kind = ORACLE if heal_steps is None else HEALING
    exp = exp if heal_steps is None else healing(exp, heal_steps)
    jobs = sensitivity_jobs(exp)
    plan = oracle_plan(exp, kind, jobs)
    write_plan(exp.run, kind, plan)
    counts = execute(exp, jobs, shard, callbacks, progress, job_progress)
    if scores is None and all(exp.run.has_result(job) for job in jobs):
        scores = score(exp.source, ["l1"], primary="l1")  # only its block layout is used
    return {"counts": counts, "kind": kind, "table": finish_tables(exp.run, {kind: plan}, scores).get(kind)}


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
    """The criteria a sweep compares, in the given order: registered names ("calibration" stands for
    every calibration criterion, "all" for every data-free one) and the oracle."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise GardenerError("--criteria: give at least one criterion")
    out: list[str] = []
    for name in names:  # unknown names fail in registry.parse, with the list of known ones
        out += [ORACLE] if name == ORACLE else registry.parse(name)
    return list(dict.fromkeys(out))


def experiment_scores(exp: Experiment, names: list[str], dtype: str = "stored", aggregate: str = "mean",
                      calib: CalibOptions | None = None) -> ScoreResult:
    """The experiment's one scoring pass, written to scores.json: every criterion of `names` but the
    oracle and random (calibration ones from `calib`'s data), and entropy (the report's profile), with
    histograms. The random orders and the oracle's score file are derived from it, so no other pass
    reads the checkpoint."""
    data_free = [n for n in names if n not in (ORACLE, "random")]
    scores = score(exp.source, data_free + (["entropy"] if "entropy" not in data_free else []), primary="entropy",
                   dtype=dtype, histograms=True, aggregate=aggregate, calib=calib, seed=exp.settings.seed)
    write_json(exp.run.path / "scores.json", scores.to_dict())
    return scores


def random_orders(scores: ScoreResult, seeds: int) -> dict[int, list[int]]:
    """The removal order of the `random` criterion for each seed 0..seeds-1, without reading weights.

    `random` is a model-scope criterion of the block count and the seed alone (criteria/baseline.py):
    called on the scored blocks it gives what `score(path, ["random"], seed=s)` would (a test checks).
    """
    criterion = registry.get("random")
    blocks = [registry.BlockSummary(b.number, b.n_params, None) for b in scores.blocks]

    def order(seed: int) -> list[int]:
        context = registry.Context(bins=scores.bins, seed=seed, aggregate=scores.aggregate)
        values = [float(v) for v in criterion.fn(blocks, context)]
        return replace(scores, primary="random", scores={"random": values},
                       removes={"random": criterion.removes}).removal_order()
    return {seed: order(seed) for seed in range(seeds)}


def criterion_orders(name: str, scores: ScoreResult, oracle: dict | None, random_seeds: int
                     ) -> dict[int | None, list[int]]:
    """One sweep criterion's removal orders by random seed (None: not random); none while the oracle is not known."""
    if name == ORACLE:
        from ..ranking import removal_order

        return {} if oracle is None else {None: [i + 1 for i in removal_order(oracle["scores"], "highest")]}
    if name == "random":
        return random_orders(scores, random_seeds)
    return {None: scores.removal_order(name)}


def sweep_rows(exp: Experiment, names: list[str], ratios: list[tuple[float, int]], scores: ScoreResult,
               oracle: dict | None, random_seeds: int) -> list[dict]:
    """One row per (criterion, ratio, seed): the blocks it removes. Oracle rows wait for the oracle."""
    rows = []
    for name in names:
        orders = criterion_orders(name, scores, oracle, random_seeds)
        for ratio, count in ratios:
            for seed, order in orders.items():
                removed = sorted(order[:count])
                rows.append({"criterion": name, "ratio": ratio, "count": count, "seed": seed, "removed": removed,
                             "id": exp.job(removed).id})
    return rows


def run_sweep(exp: Experiment, names: list[str], ratios_text: str, random_seeds: int = 3, dtype: str = "stored",
              shard=(0, 1), callbacks=None, progress=None, job_progress=None, aggregate: str = "mean",
              calib: CalibOptions | None = None) -> dict:
    """The oracle first when the sweep includes it, then every (criterion, ratio) job; one scoring pass for all
    (with `calib`, the calibration criteria's one forward pass too)."""
    ratios = parse_ratios(ratios_text, exp.depth)
    scores = experiment_scores(exp, names, dtype, aggregate, calib)
    counts: dict[str, int] = {}
    oracle = None
    if ORACLE in names:
        result = run_sensitivity(exp, shard, callbacks, progress, job_progress, scores=scores)
        oracle, counts = result["table"], result["counts"]
    rows = sweep_rows(exp, names, ratios, scores, oracle, random_seeds)
    baseline = exp.job([])
    plan = {"kind": "sweep", "depth": exp.depth, "baseline": baseline.id, "rows": rows, "criteria": names,
            "ratios": [r for r, _ in ratios], "waiting_for_oracle": ORACLE in names and oracle is None,
            "random_seeds": random_seeds, "dtype": scores.dtype_view, "aggregate": aggregate,
            "settings": asdict(exp.settings)}
    write_plan(exp.run, "sweep", plan)
    jobs = unique([baseline] + [exp.job(r["removed"]) for r in rows])
    more = execute(exp, jobs, shard, callbacks, progress, job_progress)
    counts = {k: counts.get(k, 0) + more.get(k, 0) for k in {**counts, **more}}
    made = finish_tables(exp.run, {"sweep": plan}, scores)
    return {"counts": counts, "table": made.get("sweep"), "oracle": oracle if oracle is not None else
            known_oracle(exp.run, made), "waiting_for_oracle": plan["waiting_for_oracle"]}


def rebuild_tables(run: RunDir) -> dict:
    """After `collect` or the last worker: the tables of every plan in the run folder whose jobs are all
    done (scores from its scores.json, the sweep's one scoring pass, when there is one; an oracle run
    alone makes the cheap pass it would have made, for its ranking file's block layout)."""
    plans = {kind: read_plan(path) for kind in (ORACLE, HEALING, "sweep")
             if (path := run.path / f"{kind}.plan.json").is_file()}
    scores_file = run.path / "scores.json"
    scores = ScoreResult.load(scores_file) if scores_file.is_file() else None
    source = Path(run.info.get("source", ""))
    if scores is None and set(plans) & {ORACLE, HEALING} and source.exists() and missing_jobs(run) == 0:
        scores = score(source, ["l1"], primary="l1")  # only its block layout is used
    return finish_tables(run, plans, scores)


def plan_job_ids(run: RunDir) -> list[str]:
    """Every job the run folder's plans name."""
    ids: set[str] = set()
    for plan_file in run.path.glob("*.plan.json"):
        plan = read_plan(plan_file)
        ids |= {j["id"] for j in plan.get("jobs", [])} | {r["id"] for r in plan.get("rows", [])}
        if plan.get("baseline"):
            ids.add(plan["baseline"])
    return sorted(ids)


def missing_jobs(run: RunDir) -> int:
    """Jobs named by the run folder's plans that have no (valid) result yet."""
    return sum(1 for i in plan_job_ids(run) if not run.has_result(i))


def collect_runs(run_dir: str | Path, others: list[Path], warn: Callable[[str], None] | None = None) -> dict:
    """`gardener collect`: copy the other shards' job results into RUN and rebuild its tables.

    Returns how many results were copied, the tables built (by kind) and how many jobs of the plans
    still have no result (the caller decides whether that is an error). A result in RUN that is not its
    job's own stops it (`InvalidResult`, naming the file); one in another folder is not merged (`warn`)."""
    from .runs import collect, open_existing

    run = open_existing(run_dir)
    copied = collect(run, list(others), warn)
    return {"copied": copied, "tables": rebuild_tables(run), "missing": missing_jobs(run)}
