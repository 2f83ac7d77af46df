"""The optimizer-step loop shared by finetuning and pretraining, on Accelerate.

A step: set each group's lr from the schedule (a function of the step), run `grad_accum`
micro-batches through `loss_fn` (gradients synchronised on the last one only), clip, step,
log, report progress, the caller's `after_step`, then a checkpoint every `save_every` steps.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .recipe import RecipeBase, Schedule
from .state import Log, save_checkpoint
from .tracking import accelerator_options


def make_accelerator(report_to: str = "none", out: Path | None = None, find_unused: bool = False):
    """The process's Accelerator: a GPU each, or CPU processes (gloo) without GPUs or when processes
    outnumber them. Its mixed precision is always "no": each job autocasts itself (`autocast_dtype`),
    so that finetuning, evaluation, pretraining and sweep jobs with any precision share one process.
    A state another library left at another precision is reset (the processes stay as they are).
    With `report_to` a tracker ("tensorboard", "wandb"), it logs under the run folder `out`. `find_unused` tells
    DDP that some trainable parameters may get no gradient (LoRA adapters a model's forward bypasses)."""
    import os

    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpu = torch.cuda.is_available() and torch.cuda.device_count() >= processes
    shared = getattr(AcceleratorState, "_shared_state", {})
    if shared.get("_mixed_precision", "no") != "no":
        AcceleratorState._reset_state()
    handlers = []
    if find_unused:
        from accelerate.utils import DistributedDataParallelKwargs

        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    return Accelerator(cpu=not gpu, mixed_precision="no", kwargs_handlers=handlers,
                       **accelerator_options(report_to, out))


def make_optimizer(model, groups: list[dict], lr: float, betas: tuple[float, float], accelerator):
    """AdamW over `groups`; on a GPU the fused kernel (one launch for every tensor), the model moved
    there first as it requires."""
    import torch

    fused = accelerator.device.type == "cuda"
    if fused:
        model.to(accelerator.device)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


def maybe_compile(model, on: bool):
    """torch.compile the model in place (its parameters, state dict and saving stay as they are)."""
    if on:
        model.compile()
    return model


def autocast_dtype(accelerator, bf16: bool):
    """torch.bfloat16 where a job asks for bf16 and runs on a GPU, else None (float32)."""
    import torch

    return torch.bfloat16 if bf16 and accelerator.device.type == "cuda" else None


def make_loader(dataset, sampler, workers: int, seed: int, collate):
    """A DataLoader over an endless batch sampler; worker seeds come from its own generator, not
    the global RNG, so starting it at a resume point leaves the training RNG untouched."""
    import torch
    from torch.utils.data import DataLoader

    extra = {"prefetch_factor": 4} if workers else {}  # each worker keeps 4 batches ready
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available(), **extra)


def restore(accelerator, out: Path, start: int | None) -> tuple[int, dict | None]:
    """Load the checkpoint of step `start` (model, optimizer, RNG); returns the step and best metric.
    The checkpoint was checked whole (`state.damaged`) before the run began."""
    from ..errors import GardenerError
    from .state import read_state

    if start is None:
        return 0, None
    folder = out / "checkpoints" / f"step-{start:06d}"
    state = read_state(folder)
    try:
        accelerator.load_state(str(folder))
    except Exception as exc:  # noqa: BLE001 - a damaged file that kept its size: one line, not a traceback
        raise GardenerError(f"--resume: checkpoint {folder} cannot be loaded ({exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); pass --force to start the run "
                            f"again") from None
    return state["step"], state.get("best")


@dataclass
class Run:
    """A training run once its model and optimizer are prepared: what the step loop needs, and what a
    job's loss, evaluation and exports read (the model as Accelerate prepared it: unwrap it to save)."""

    accelerator: Any
    model: Any
    optimizer: Any
    batches: Iterator
    schedule: Schedule
    recipe: RecipeBase  # grad_accum, clip_grad, save_every, keep_last
    out: Path
    logbook: Log
    autocast: Any = None  # torch.bfloat16 for bf16 autocast, None for float32
    resumes: list[dict] = field(default_factory=list)
    callbacks: list[Callable[[int, float], None]] = field(default_factory=list)
    progress: Callable | None = None
    guard: Callable[[], None] | None = None  # raises when the run must stop writing (its job's claim was lost):
    # called by the log before each record and by a checkpoint before it is put in place

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def device(self):
        return self.accelerator.device


LossFn = Callable[..., tuple]  # (batch, step, micro) -> (loss, clips) or (loss, clips, extras)


def run_steps(run: Run, step: int, best: dict | None, loss_fn: LossFn,
              after_step: Callable[[int, dict | None], dict | None] | None = None) -> dict | None:
    """Optimizer steps from `step` to the schedule's total; returns the best metric `after_step` kept.

    `loss_fn(batch, step, micro)` gives `(loss, clips)` or `(loss, clips, extras)`, extras a dict of
    scalars logged beside the loss (averaged over micro-batches and processes)."""
    timer, clips = time.perf_counter(), 0
    run.model.train()
    while step < run.schedule.total:
        _set_lr(run, step)
        losses, extras, count = _accumulate(run, step, loss_fn)
        clips += count
        if run.recipe.clip_grad:
            run.accelerator.clip_grad_norm_(run.model.parameters(), run.recipe.clip_grad)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = _record(run, step, losses, extras, clips / (time.perf_counter() - timer))
        if after_step is not None:
            best = after_step(step, best)
            run.model.train()
        if step % run.recipe.save_every == 0 or step == run.schedule.total:
            save_checkpoint(run.accelerator, run.out, step, best, run.recipe.keep_last, run.guard)
        for callback in run.callbacks:
            callback(step, loss)
    return best


def _set_lr(run: Run, step: int) -> None:
    for group in run.optimizer.param_groups:
        group["lr"] = run.schedule.lr(step, group.get("lr_scale", 1.0))


def _accumulate(run: Run, step: int, loss_fn: LossFn) -> tuple[list, dict[str, list], int]:
    """`grad_accum` micro-batches through `loss_fn` and backward, gradients synchronised on the last one
    only; returns their losses, their extras and the clips all processes took."""
    import torch

    accelerator, accum = run.accelerator, run.recipe.grad_accum
    losses, extras, clips = [], {}, 0
    for micro in range(accum):
        batch = next(run.batches)
        sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(run.model)
        with sync, torch.autocast(accelerator.device.type, dtype=run.autocast, enabled=run.autocast is not None):
            loss, count, *more = loss_fn(batch, step, micro)
            accelerator.backward(loss / accum)
        losses.append(loss.detach())
        for key, value in (more[0] if more else {}).items():
            extras.setdefault(key, []).append(torch.as_tensor(value).detach())
        clips += count * accelerator.num_processes
    return losses, extras, clips


def _record(run: Run, step: int, losses: list, extras: dict[str, list], rate: float) -> float:
    """Log the step (the loss and the extras averaged in one all-reduce) and report progress; returns the loss."""
    import torch

    means = [torch.stack(values).mean().float() for values in (losses, *extras.values())]
    loss, *extra_values = run.accelerator.reduce(torch.stack(means).to(run.accelerator.device), "mean").tolist()
    lr = run.optimizer.param_groups[-1]["lr"]
    run.logbook.write({"step": step, "epoch": round(step / run.schedule.per_epoch, 4), "loss": loss, "lr": lr,
                       "clips_per_s": round(rate, 3), **dict(zip(extras, extra_values))})
    if run.progress:
        run.progress(step, run.schedule.total, loss=loss, lr=lr, clips_per_s=rate)
    return loss
