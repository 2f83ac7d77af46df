"""One training run, whatever it trains: the skeleton finetuning and pretraining share.

`train_run` owns everything a run does besides its model, its loss and what it keeps at the
end: the finished-run and run-folder checks, the accelerator, the schedule, start.json, the
optimizer, torch.compile, restoring a checkpoint, the data loader, the step loop, checkpoints
and gardener.json. A `TrainingJob` supplies the rest; `FinetuneJob` (finetune.py) and `PretrainJob`
(pretrain.py) are the two there are. Both kinds of run therefore keep the same files and
resume the same way.

Accelerate owns devices, processes, mixed precision and the checkpoint format (model,
optimizer, RNG states). What makes a resumed run continue on the same trajectory is kept
deterministic here: the lr is a function of the step, the sampler and every augmentation are
functions of (seed, epoch, video), so resuming at step k needs only the step and the states.
"""
from __future__ import annotations

import contextlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from ..data import EpochSampler, TrainClips
from ..fileio import check_output, write_text
from ..locks import run_lock
from ..settings import check_number
from ..manifest import manifest
from .loop import Run, autocast_dtype, make_accelerator, make_loader, make_optimizer, maybe_compile, restore, run_steps
from .recipe import RecipeBase, param_groups
from .state import Log, begin, check_out, collate, finished
from .tracking import check_report_to, end_tracking, start_tracking, track


@dataclass
class RunOptions:
    """How a run is kept and watched; none of these changes its trajectory."""

    resume: bool = False  # continue from the last checkpoint in the run folder
    force: bool = False  # replace an existing run folder
    workers: int = 2  # DataLoader processes decoding training clips
    callbacks: list[Callable[[int, float], None]] = field(default_factory=list)  # (step, loss) after each step
    progress: Callable | None = None  # (step, total, loss=, lr=, clips_per_s=) after each step
    report_to: str = "none"  # experiment tracker beside log.jsonl: none, tensorboard or wandb (tracking.py)
    lock: bool = True  # hold the run folder's lock (a queued job's claim already is its lock)
    guard: Callable[[], None] | None = None  # called before each step is recorded; raises to stop the run


class TrainingJob(ABC):
    """What one kind of training run is: its data, its model, its loss and what it keeps at the end.

    A subclass sets `kind` (the manifest's kind), `recipe` and `seed`, and `load` sets `spec`.
    """

    kind: ClassVar[str]
    collate_fn: ClassVar[Callable[[list[dict]], dict]] = staticmethod(collate)  # training items to a batch
    recipe: RecipeBase
    seed: int
    spec: Any  # what one training item is (a dataclass: the clips' ClipSpec, a text's sequence length); set by `load`

    @abstractmethod
    def load(self) -> TrainClips:
        """Check the inputs and read the data (before the run folder is touched); the training clips."""

    @abstractmethod
    def inputs(self) -> list[tuple[str, Path | None]]:
        """What the run reads, as (what, path) pairs: the run folder must not be, hold or lie inside one."""

    @abstractmethod
    def identity(self) -> dict:
        """What this run is besides its recipe, clips, seed and process count (recorded in start.json)."""

    @abstractmethod
    def build_model(self):
        """The model to train, built after the seed is set."""

    @abstractmethod
    def loss(self, run: Run, batch: dict, step: int, micro: int) -> tuple:
        """(loss, clips) or (loss, clips, extras) of one micro-batch."""

    def healing_identity(self, identity_of: Callable[[Path], dict]) -> dict:
        """What start.json records of a distillation teacher and LoRA settings (nothing where unused)."""
        distill, lora = getattr(self, "distill", None), getattr(self, "lora", None)
        return {**({"distill": distill.identity(identity_of)} if distill else {}),
                **({"lora": lora.settings()} if lora else {})}

    def healing_record(self) -> dict:
        """What the manifest says of distillation and LoRA (None where unused)."""
        distill, lora = getattr(self, "distill", None), getattr(self, "lora", None)
        return {"distill": distill.record() if distill else None,
                "lora": {**lora.settings(), **self.parameters, "merged": True} if lora else None}

    def finds_unused(self) -> bool:
        """Whether some trainable parameters may get no gradient (DDP must then look for them): LoRA runs."""
        return getattr(self, "lora", None) is not None

    def after_step(self, run: Run) -> Callable[[int, dict | None], dict | None] | None:
        """A hook called after each optimizer step with (step, best) that returns the best metric; None for none."""
        return None

    @abstractmethod
    def exports(self, run: Run, best: dict | None) -> dict:
        """Write what the run leaves (models, evaluation, gardener.json via `conclude`); its manifest."""


def train_run(job: TrainingJob, out: Path, options: RunOptions) -> dict:
    """Run `job` in the run folder `out` from scratch or from its last checkpoint; returns its manifest.

    A finished run is left exactly as it is: resuming it returns its manifest with
    `already_finished`. Every check (the folder, then the job's inputs) comes before the first
    training step.
    """
    out = Path(out)
    check_report_to(options.report_to)
    job.recipe.check()
    check_number("--seed", job.seed, 0)
    check_number("--workers", options.workers, 0)  # (a caller's RunOptions need not come from DataOptions)
    check_output(out, job.inputs(), force=True)
    locked = options.lock and launch_rank() == 0  # rank 0 holds it for every rank
    with run_lock(out, f"gardener {job.kind} run") if locked else contextlib.nullcontext():
        done = finished(out, job.kind, {"recipe": job.recipe.to_dict(), "seed": job.seed}) if options.resume else None
        if done is not None:
            return {**done, "already_finished": True}
        start = check_out(out, options.resume, options.force)
        clips = job.load()
        accelerator = make_accelerator(options.report_to, out, job.finds_unused())
        try:
            run, step, best = _start(job, clips, out, start, options, accelerator)
            best = run_steps(run, step, best, partial(job.loss, run), job.after_step(run))
            if options.guard is not None:
                options.guard()
            return job.exports(run, best)
        finally:
            end_tracking(accelerator)


def _start(job: TrainingJob, clips: TrainClips, out: Path, start: int | None, options: RunOptions,
           accelerator) -> tuple[Run, int, dict | None]:
    """Start the run folder (or check the resumed one) and its tracker, build and prepare the model and
    optimizer, restore the checkpoint; the run, its step and its best metric so far."""
    from accelerate.utils import set_seed

    recipe = job.recipe
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    sampler = EpochSampler(len(clips), recipe.batch_size, job.seed, 0, rank, world)
    schedule = recipe.schedule(max(1, sampler.batches_per_epoch // recipe.grad_accum), world)
    identity = {**job.identity(), "recipe": recipe.to_dict(), "clip": asdict(job.spec), "seed": job.seed,
                "world_size": world}
    resumes = begin(out, identity, start, schedule.total, main)
    accelerator.wait_for_everyone()
    start_tracking(accelerator, options.report_to, out, {"kind": job.kind, "seed": job.seed, **recipe.to_dict()},
                   start)  # before the seed is set: a tracker cannot touch the run's RNG
    set_seed(job.seed)
    model = job.build_model()
    optimizer = make_optimizer(model, param_groups(model, recipe, schedule.peak), schedule.peak, recipe.betas,
                               accelerator)
    model, optimizer = accelerator.prepare(maybe_compile(model, recipe.compile), optimizer)
    step, best = restore(accelerator, out, start)
    mirror = partial(track, accelerator) if options.report_to != "none" else None
    sampler.start_batch = step * recipe.grad_accum
    batches = iter(make_loader(clips, sampler, options.workers, job.seed, job.collate_fn))
    logbook = Log(out / "log.jsonl", main, start, mirror, options.guard)
    run = Run(accelerator, model, optimizer, batches, schedule, recipe, out, logbook,
              autocast_dtype(accelerator, recipe.bf16), resumes, list(options.callbacks), options.progress,
              options.guard)
    return run, step, best


def launch_rank() -> int:
    """This process's rank under torchrun / accelerate launch: 0 when run alone (a stray RANK without a
    WORLD_SIZE above 1, or one that is not a number, does not make a process another's helper)."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
    return rank if world > 1 else 0


def run_manifest(kind: str, inputs: list, arguments: dict | None) -> dict:
    """The manifest of a run (what made it, from which files), with Path arguments as strings."""
    return manifest(kind, inputs, {k: (str(v) if isinstance(v, Path) else v) for k, v in (arguments or {}).items()})


def run_facts(run: Run, seed: int) -> dict:
    """What every run's manifest says about how it ran."""
    return {"seed": seed, "world_size": run.world, "steps": run.schedule.total, "warmup_steps": run.schedule.warmup}


def conclude(run: Run, info: dict, write: Callable[[], Any]) -> dict:
    """The main process writes the run's own files, then gardener.json, which marks the run finished
    (so a resumed run that stopped while writing them writes them again); returns `info`."""
    run.accelerator.wait_for_everyone()
    if run.main:
        write()
        write_text(run.out / "gardener.json", json.dumps(info, indent=2) + "\n", force=True)
    run.accelerator.wait_for_everyone()
    return info
