"""The optimizer-step loop shared by finetuning and pretraining, on Accelerate.

A step: set each group's lr from the schedule (a function of the step), run `grad_accum`
micro-batches through `loss_fn` (gradients synchronised on the last one only), clip, step,
log, report progress, checkpoint every `save_every` steps, then the caller's `after_step`.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .recipe import lr_factor
from .state import Log, save_checkpoint


def make_accelerator():
    """The process's Accelerator: a GPU each, or CPU processes (gloo) without GPUs or when processes
    outnumber them. Its mixed precision is always "no": each job autocasts itself (`autocast_dtype`),
    so that finetuning, evaluation, pretraining and sweep jobs with any precision share one process.
    A state another library left at another precision is reset (the processes stay as they are)."""
    import os

    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpu = torch.cuda.is_available() and torch.cuda.device_count() >= processes
    shared = getattr(AcceleratorState, "_shared_state", {})
    if shared.get("_mixed_precision", "no") != "no":
        AcceleratorState._reset_state()
    return Accelerator(cpu=not gpu, mixed_precision="no")


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
    """Load the checkpoint of step `start` (model, optimizer, RNG); returns the step and best metric."""
    if start is None:
        return 0, None
    folder = out / "checkpoints" / f"step-{start:06d}"
    accelerator.load_state(str(folder))
    state = json.loads((folder / "state.json").read_text())
    return state["step"], state.get("best")


@dataclass
class Loop:
    """What the step loop needs; `loss_fn(batch, step, micro) -> (loss, clips)` or `(loss, clips, extras)`,
    extras a dict of scalars logged beside the loss (averaged over micro-batches and processes)."""

    accelerator: object
    model: object
    optimizer: object
    batches: Iterator
    total: int
    warmup: int
    peak: float
    final: float
    per_epoch: int
    out: Path
    logbook: Log
    grad_accum: int = 1
    clip_grad: float | None = None
    save_every: int = 500
    keep_last: int = 2
    callbacks: list[Callable[[int, float], None]] = field(default_factory=list)
    progress: Callable | None = None
    autocast: object = None  # torch.bfloat16 for bf16 autocast, None for float32


def run_steps(loop: Loop, step: int, best: dict | None, loss_fn: Callable,
              after_step: Callable[[int, dict | None], dict | None] | None = None) -> dict | None:
    """Optimizer steps from `step` to `loop.total`; returns the best metric `after_step` kept."""
    import torch

    accelerator, model, optimizer = loop.accelerator, loop.model, loop.optimizer
    timer, clips = time.perf_counter(), 0
    model.train()
    while step < loop.total:
        for group in optimizer.param_groups:
            group["lr"] = loop.peak * group.get("lr_scale", 1.0) * lr_factor(step, loop.warmup, loop.total,
                                                                           loop.peak, loop.final)
        losses, extras = [], {}
        for micro in range(loop.grad_accum):
            batch = next(loop.batches)
            sync = contextlib.nullcontext() if micro == loop.grad_accum - 1 else accelerator.no_sync(model)
            device = accelerator.device.type
            with sync, torch.autocast(device, dtype=loop.autocast, enabled=loop.autocast is not None):
                loss, count, *more = loss_fn(batch, step, micro)
                accelerator.backward(loss / loop.grad_accum)
            losses.append(loss.detach())
            for key, value in (more[0] if more else {}).items():
                extras.setdefault(key, []).append(torch.as_tensor(value).detach())
            clips += count * accelerator.num_processes
        if loop.clip_grad:
            accelerator.clip_grad_norm_(model.parameters(), loop.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        # the loss and the extras in one all-reduce
        means = [torch.stack(values).mean().float() for values in (losses, *extras.values())]
        loss_value, *extra_values = accelerator.reduce(torch.stack(means).to(accelerator.device), "mean").tolist()
        rate = clips / (time.perf_counter() - timer)
        lr = optimizer.param_groups[-1]["lr"]
        loop.logbook.write({"step": step, "epoch": round(step / loop.per_epoch, 4), "loss": loss_value, "lr": lr,
                            "clips_per_s": round(rate, 3), **dict(zip(extras, extra_values))})
        if loop.progress:
            loop.progress(step, loop.total, loss=loss_value, lr=lr, clips_per_s=rate)
        if after_step is not None:
            best = after_step(step, best)
            model.train()
        if step % loop.save_every == 0 or step == loop.total:
            save_checkpoint(accelerator, loop.out, step, best, loop.keep_last)
        for callback in loop.callbacks:
            callback(step, loss_value)
    return best
