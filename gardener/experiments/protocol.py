"""An experiment: a checkpoint, its run folder and the settings its jobs share; its one scoring pass;
and the job runner that prunes, finetunes and evaluates one job.

The paper's evaluation is built on top: oracle.py (the sensitivity oracle, Table 1, and the healing
oracle), sweep.py (the pruning-ratio sweep, Tables 3, 7-12), plans.py (the plans written beside the
results and the tables built from them) and launchers.py (who runs the queued jobs).
An experiment scores its checkpoint once (`experiment_scores`, or the oracle's own pass when it
runs alone, `layout_scores`): the sweep's orders, its random orders and oracle.json all come from
that pass, and `results.finish_tables` writes the tables at the end of every command.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..blocks import select_stack
from ..scoring.settings import ScoreSettings
from ..checkpoint import open_checkpoint
from ..cost import InputSpec, flop_breakdown
from ..errors import GardenerError
from ..fileio import check_output
from ..settings import check_number
from ..scoring import ScoreResult, score
from ..train import DataOptions, Recipe
from .launch import Launch, write_launch
from .queue import QueueOptions, Task, read_specs, write_spec
from .ratios import parse_ratios
from .results import ORACLE, write_json
from .identity import VIDEO
from .runs import Job, RunDir, Settings, open_run, process_rank, source_hash, unique, wait_for


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
    launch: Launch = Launch()  # who runs the jobs (launchers.launcher_for)
    ratios: list[tuple[float, int]] | None = None  # a sweep's (ratio in %, blocks removed), checked by prepare

    def job(self, removed, seed: int | None = None) -> Job:
        return self.settings.job(removed, seed)

    def gflops_without(self, removed) -> float:
        return self.gflops - sum(self.block_gflops[b - 1] for b in removed)


def prepare(source: str | Path, run_dir: str | Path, data: DataOptions, recipe: Recipe, clip: dict,
            seed: int = 0, keep_models: bool = False, oracle_seeds: int = 1, ratios: str | None = None,
            heal_steps: int | None = None, queue: QueueOptions = QueueOptions(), launch: Launch = Launch(),
            inputs: list[tuple[str, Path | None]] | None = None, task: str | None = None) -> Experiment:
    """Open the checkpoint and its run folder (which must belong to the same checkpoint, and must not be,
    hold or lie inside the checkpoint, the data or any of the other `inputs`); record the launch in
    RUN/launch.json.

    `task` names the task its jobs are trained and judged on (None: the one the checkpoint fits; `recipe` and
    `clip` are that task's: `Recipe` and frames/size for video, `ImageRecipe` and size for images, `LMRecipe` and
    seq_len for text). Everything that can be checked (a sweep's `ratios`, a healing oracle's `heal_steps`
    too) is checked before the folder is made."""
    if oracle_seeds < 1:
        raise GardenerError(f"--oracle-seeds {oracle_seeds}: expected at least 1")
    check_number("--seed", seed, 0)
    recipe.check()
    data.check()
    source = Path(source)
    ckpt = open_checkpoint(source)
    check_output(run_dir, [*ckpt.as_inputs(source), *data.inputs(), *(inputs or [])], force=True, flag="-o/--out")
    task = _check_source(source, ckpt.format, ckpt.config or {}, heal_steps, task)
    stack = select_stack(ckpt)
    parsed = parse_ratios(ratios, stack.depth) if ratios is not None else None
    total, per_stack = flop_breakdown(ckpt.config, input_spec(task, clip, ckpt.config))
    blocks = next((v for v in per_stack.values() if len(v) == stack.depth), None)
    if blocks is None:
        raise GardenerError(f"{source}: cannot attribute FLOPs to the {stack.depth} blocks of {stack.name}")
    run = open_run(run_dir, source, source_hash(ckpt.files))
    data_key = {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in asdict(data).items()
                if k not in ("workers", "strict")}
    settings = Settings(str(source.resolve()), run.source_hash, data_key, recipe.to_dict(), clip, seed, task=task)
    exp = Experiment(source, run, settings, data, recipe, clip, stack.depth, total, blocks, keep_models, oracle_seeds,
                     queue.check(), launch, parsed)
    if process_rank() == 0:
        write_launch(run, launch, exp.queue)
    return exp


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
    settings = Settings(**spec["settings"])
    recipe = recipe_class(settings.task)(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in spec["recipe"].items()})
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


def _check_source(source: Path, fmt: str, config: dict, heal_steps: int | None, task: str | None) -> str:
    """A transformers model folder of a task the experiments run (the named one, else the one it fits); for the
    healing oracle, a model with its task's head (which its jobs keep). Returns the task's name."""
    from .. import tasks

    if fmt != "hf-dir":
        raise GardenerError(f"{source}: experiments take a transformers model folder (convert original checkpoints "
                            f"with `gardener convert`)")
    found = tasks.infer(source, task)
    found.job_runner()  # a task the experiments have no path for: a one-line error now
    check_heal_steps(heal_steps, found.name)
    architecture = next(iter(config.get("architectures") or []), "")
    if heal_steps is not None and not architecture.endswith(HEADS[found.name]):
        raise GardenerError(f"--heal-steps: {source} is not a model with its task's head ({architecture or 'none'}); "
                            f"healing starts from a checkpoint trained on the task being evaluated (or leave out "
                            f"--heal-steps for the full oracle)")
    return found.name


HEADS = {VIDEO: "ForVideoClassification", "image-classification": "ForImageClassification",
         "causal-lm": ("ForCausalLM", "LMHeadModel")}  # what a healing oracle's checkpoint must be


def recipe_class(task: str) -> type:
    """The recipe dataclass of a task's finetuning."""
    from ..train.image import ImageRecipe
    from ..train.lm import LMRecipe

    return {"image-classification": ImageRecipe, "causal-lm": LMRecipe}.get(task, Recipe)


def input_spec(task: str, clip: dict, config: dict) -> InputSpec:
    """The one input each job's FLOPs are counted for: a clip, an image or a sequence of the experiment's sizes."""
    if task == "causal-lm":
        return InputSpec(seq_len=clip["seq_len"])
    return InputSpec(clip.get("frames") or config.get("num_frames") or 16, clip.get("size") or config["image_size"])


def check_heal_steps(heal_steps: int | None, task: str = VIDEO) -> None:
    """A healing oracle trains at least one step (None: the full oracle); a language model's may train none
    (0: the plain remove-one-block perplexity)."""
    least = 0 if task == "causal-lm" else 1
    if heal_steps is not None and heal_steps < least:
        raise GardenerError(f"--heal-steps {heal_steps}: expected at least {least} optimizer step"
                            + ("s (0: measure without training)" if least == 0 else ""))


def job_runner(exp: Experiment, callbacks: list | None = None, progress: Callable | None = None):
    """prune -> finetune (resuming an interrupted one) -> evaluate, for one job in its folder; the training and
    evaluation are the task's own (`task_jobs`)."""
    from .. import tasks
    from ..pruning import Cut, WriteOptions, prune_checkpoint
    from .task_jobs import JobRun

    train_and_judge = tasks.get(exp.settings.task).job_runner()

    def run(job: Job, folder: Path, guard: Callable[[], None] | None = None) -> dict:
        """`guard()` raises once the job's claim is no longer this worker's: checked before every write."""
        began = time.perf_counter()
        model = exp.source
        if job.removed:
            model = folder / "pruned"
            if process_rank() != 0:
                wait_for(model / "config.json")
            elif not (model / "config.json").is_file():
                prune_checkpoint(exp.source, model, Cut(blocks=tuple(job.removed)), write=WriteOptions(force=True))
        train = folder / "train"
        resume = (train / "checkpoints").is_dir() and any((train / "checkpoints").glob("step-*/state.json"))
        measured = train_and_judge(exp, JobRun(model, train, job.finetune_seed, resume, callbacks, progress, guard))
        if process_rank() != 0:  # rank 0 records the result (run_jobs makes the others wait for it)
            return {}
        if guard is not None:
            guard()
        params = open_checkpoint(measured.pop("model")).num_params
        if not exp.keep_models:
            for name in ("pruned", "train/model", "train/best", "train/checkpoints"):
                shutil.rmtree(folder / name, ignore_errors=True)
        return {"kept": [b for b in range(1, exp.depth + 1) if b not in job.removed], "params": params,
                "gflops": exp.gflops_without(job.removed), **measured,
                "seconds": round(time.perf_counter() - began, 3)}  # this invocation's wall time (a resume's part)
    return run


# --- the experiment's scoring pass -------------------------------------------------------------------
# Every `score` call of the experiments goes through these two (tests count them here).

def experiment_scores(exp: Experiment, names: list[str], scoring: ScoreSettings) -> ScoreResult:
    """The experiment's one scoring pass, written to scores.json: every criterion of `names` but the
    oracle and random (calibration ones from `scoring.calib`'s data), and entropy (the report's profile), with
    histograms (`scoring`'s dtype view and aggregate; its seed is the experiment's). The random orders and the oracle's score file are derived from it, so no other pass
    reads the checkpoint."""
    data_free = [n for n in names if n not in (ORACLE, "random")]
    scores = score(exp.source, data_free + (["entropy"] if "entropy" not in data_free else []), scoring,
                   primary="entropy", histograms=True, seed=exp.settings.seed)
    write_json(exp.run.path / "scores.json", scores.to_dict())
    return scores


def layout_scores(source: Path) -> ScoreResult:
    """The pass of an oracle run alone: its blocks' layout, for the ranking file (no criterion, no weight read)."""
    return score(source, (), primary=None)
