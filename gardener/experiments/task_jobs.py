"""How one experiment job trains and judges its pruned model, per task: the video, image and text paths.

Each function is a task's `job` (tasks registry): given the experiment, the model to start from (the pruned
checkpoint, or the source itself for the unpruned baseline) and the job's training folder, it finetunes
(resuming an interrupted run), evaluates on the experiment's test split and returns the result's measured
part: the task's metric, what the tables' intervals and the agreement's bootstrap resample (per test
video or image: right or wrong; per test sequence: its summed loss and predicted tokens), the run's steps
and the model folder its parameters are counted in.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..stats import pack_correct


@dataclass
class JobRun:
    """What a task's job function needs besides the experiment: where to train, with which seed, and how."""

    model: Path  # the checkpoint to start from
    train: Path  # the job's training folder
    seed: int
    resume: bool
    callbacks: list | None = None
    progress: Callable | None = None
    guard: Callable[[], None] | None = None
    extra: dict = field(default_factory=dict)


def video_job(exp, run: JobRun) -> dict:
    """Finetune a video classifier with the experiment's recipe (train/finetune.py) and evaluate it."""
    from ..train import finetune

    info = finetune(run.model, run.train, exp.data, exp.recipe, seed=run.seed, resume=run.resume,
                    force=not run.resume, callbacks=run.callbacks, progress=run.progress,
                    keep_head=exp.settings.keep_head, lock=False, guard=run.guard, **exp.clip)
    final = info["final"]
    return {"top1": final["top1"], "top5": final["top5"], "uar": final["uar"], "videos": final["videos"],
            "classes": len(final["classes"]), "correct": read_correct(run.train / "predictions.csv"),
            "steps": info["steps"], "warmup_steps": info["warmup_steps"], "model": run.train / "model"}


def image_job(exp, run: JobRun) -> dict:
    """Finetune an image classifier (train/image.py) and evaluate it on the experiment's test split."""
    from ..train.image import finetune_images

    info = finetune_images(run.model, run.train, exp.data.data, exp.recipe, eval_data=exp.data.eval_data,
                           size=exp.clip.get("size"), val_fraction=exp.data.val_fraction, seed=run.seed,
                           resume=run.resume, force=not run.resume, callbacks=run.callbacks, progress=run.progress,
                           keep_head=exp.settings.keep_head, workers=exp.data.workers, lock=False, guard=run.guard,
                           split_seed=exp.settings.seed)
    final = info["final"]
    return {"top1": final["top1"], "top5": final["top5"], "uar": final["uar"], "samples": final["images"],
            "classes": len(final["classes"]), "correct": read_correct(run.train / "predictions.csv"),
            "steps": info["steps"], "warmup_steps": info["warmup_steps"], "model": run.train / "model"}


def text_job(exp, run: JobRun) -> dict:
    """Finetune a causal LM (train/lm.py) and measure its perplexity on the experiment's held-out text; with a
    recipe of 0 steps (`sensitivity --heal-steps 0`), only measure: the plain remove-one-block perplexity."""
    from ..train.lm import finetune_lm, held_out_perplexity

    seq_len = exp.clip["seq_len"]
    if exp.recipe.max_steps == 0:
        final, steps, model = held_out_perplexity(run.model, exp.data, seq_len, exp.settings.seed), (0, 0), run.model
    else:
        info = finetune_lm(run.model, run.train, exp.data.data, exp.recipe, eval_data=exp.data.eval_data,
                           seq_len=seq_len, val_fraction=exp.data.val_fraction, seed=run.seed,
                           split_seed=exp.settings.seed, resume=run.resume, force=not run.resume,
                           callbacks=run.callbacks, progress=run.progress, lock=False, guard=run.guard)
        final = json.loads((run.train / "eval.json").read_text())
        steps, model = (info["steps"], info["warmup_steps"]), run.train / "model"
    per = final["per_sequence"]
    return {"perplexity": final["perplexity"], "perplexity_interval": final["perplexity_interval"],
            "loss": final["loss"], "next_token_accuracy": final["next_token_accuracy"],
            "samples": final["sequences"], "nll": [round(float(x), 6) for x in per["loss_sum"]],
            "tokens": [int(t) for t in per["tokens"]], "steps": steps[0], "warmup_steps": steps[1], "model": model}


def read_correct(predictions: Path) -> str:
    """Which test samples a finetuned classifier got right, in test-split order, as a string of 0 and 1."""
    import csv

    with open(predictions, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return pack_correct(row[1] == row[2] for row in rows)
