"""How the training commands run each task: the causal-lm and image-classification paths of finetune and
evaluate, the healing options (distillation, LoRA), and the rule that another task's options are refused."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import GardenerError
from ._app import is_main_process, live_progress, out, say
from .options import CLIPS, DATA, FINETUNE_RECIPE

EVAL_DATA, EVAL_CLIPS = DATA.but("eval_data"), CLIPS.but("min_crop_scale")


def healing(ctx: typer.Context, distill_from, temperature, weight, rank, alpha, dropout) -> tuple:
    """The distillation and LoRA settings of a finetuning, if asked for (their other options alone are refused)."""
    from ..train.distill import Distill
    from ..train.lora import Lora

    distill = Distill(distill_from, temperature, weight) if distill_from else None
    if distill is None:
        refuse_given(ctx, {"distill_temperature", "distill_weight"}, "finetuning without --distill-from")
    lora = Lora(rank, alpha, dropout) if rank is not None else None
    if lora is None:
        refuse_given(ctx, {"lora_alpha", "lora_dropout"}, "finetuning without --lora-rank")
    return distill, lora


# the recipe options a causal LM's finetuning takes (by parameter name; `lr` is the recipe's base_lr)
TEXT_RECIPE = {"epochs": "epochs", "max_steps": "max_steps", "batch_size": "batch_size", "grad_accum": "grad_accum",
               "lr": "base_lr", "min_lr": "min_lr", "warmup_epochs": "warmup_epochs", "warmup_steps": "warmup_steps",
               "weight_decay": "weight_decay", "layer_decay": "layer_decay", "clip_grad": "clip_grad",
               "bf16": "bf16", "compile": "compile", "save_every": "save_every", "keep_last": "keep_last"}


def finetune_text(ctx: typer.Context, model: Path, data, out_dir: Path, seq_len: int, seed: int, resume: bool,
                   force: bool, report_to: str, distill, lora) -> None:
    """The causal-lm task's finetuning: the recipe options given on the command line over LMRecipe's defaults."""
    from ..report.tables import lm_eval_table
    from ..train.lm import LMRecipe, finetune_lm

    video = {p.name for group in (DATA, FINETUNE_RECIPE, CLIPS) for p in group.parameters()}
    refuse_given(ctx, video - set(TEXT_RECIPE) - {"data", "eval_data", "val_fraction"}, "the causal-lm task")
    with live_progress("finetuning") as live:
        info = finetune_lm(model, out_dir, data.data, LMRecipe(**given_recipe(ctx, TEXT_RECIPE)), eval_data=data.eval_data, seq_len=seq_len,
                           val_fraction=data.val_fraction, seed=seed, resume=resume, force=force, progress=live.step,
                           arguments=ctx.params, report_to=report_to, distill=distill, lora=lora)
    if is_main_process():
        out.print(lm_eval_table({**info["final"], "seq_len": seq_len}))
        say(f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed"
            if info.get("already_finished") else f"wrote {out_dir}/model (final, with its tokenizer), "
                                                 f"{out_dir}/eval.json, {out_dir}/gardener.json")


IMAGE_RECIPE = {**TEXT_RECIPE, "label_smoothing": "label_smoothing"}


def given_recipe(ctx: typer.Context, fields: dict[str, str]) -> dict:
    """The recipe options given on the command line, by field name (the task's own defaults for the rest)."""
    return {field: ctx.params[name] for name, field in fields.items()
            if ctx.get_parameter_source(name).name == "COMMANDLINE"}


def finetune_image(ctx: typer.Context, model: Path, data, size: Optional[int], out_dir: Path, seed: int,
                   resume: bool, force: bool, report_to: str, distill, lora) -> None:
    """The image-classification task's finetuning: the recipe options given over ImageRecipe's defaults."""
    from ..report.tables import eval_table
    from ..train.image import ImageRecipe, finetune_images

    video = {p.name for group in (DATA, FINETUNE_RECIPE, CLIPS) for p in group.parameters()}
    refuse_given(ctx, (video | {"seq_len"}) - set(IMAGE_RECIPE) - {"data", "eval_data", "val_fraction", "workers",
                                                                   "size"}, "the image-classification task")
    with live_progress("finetuning") as live:
        info = finetune_images(model, out_dir, data.data, ImageRecipe(**given_recipe(ctx, IMAGE_RECIPE)),
                               eval_data=data.eval_data, size=size, val_fraction=data.val_fraction, seed=seed,
                               resume=resume, force=force, progress=live.step, arguments=ctx.params,
                               workers=data.workers, report_to=report_to, distill=distill, lora=lora)
    if is_main_process():
        out.print(eval_table({**info["final"], "videos": info["final"]["images"]}, unit="images"))
        say(f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed"
            if info.get("already_finished") else f"wrote {out_dir}/model (final), {out_dir}/eval.json, "
                                                 f"{out_dir}/gardener.json")


def evaluate_image(ctx: typer.Context, model: Path, data, size: Optional[int], out_dir: Optional[Path], seed: int,
                   force: bool) -> None:
    """The image-classification task's evaluation: top-1 with its interval, top-5, UAR, per-class recall."""
    from ..report.tables import eval_table
    from ..train.image import evaluate_images_into

    video = {p.name for group in (EVAL_DATA, EVAL_CLIPS) for p in group.parameters()}
    refuse_given(ctx, (video | {"seq_len"}) - {"data", "val_fraction", "size", "workers"},
                 "the image-classification task")
    result = evaluate_images_into(model, data.data, out_dir, size=size, val_fraction=data.val_fraction, seed=seed,
                                  force=force, arguments=ctx.params)
    out.print(eval_table({**result, "videos": result["images"]}, unit="images"))
    if out_dir:
        say(f"wrote {out_dir}")


def evaluate_text(ctx: typer.Context, model: Path, data: Path, out_dir: Optional[Path], seq_len: int, seed: int,
                   force: bool) -> None:
    from ..report.tables import lm_eval_table
    from ..tasks.causal_lm import evaluate_into

    video = {p.name for group in (EVAL_DATA, EVAL_CLIPS) for p in group.parameters()} - {"data"}
    refuse_given(ctx, video, "the causal-lm task")
    result = evaluate_into(model, data, out_dir, seq_len=seq_len, seed=seed, force=force, arguments=ctx.params)
    out.print(lm_eval_table(result))
    if out_dir:
        say(f"wrote {out_dir}/eval.json")


# the experiment recipe options the image and text experiments take (the rest are video's)
EXPERIMENT_FIELDS = {"epochs": "epochs", "max_steps": "max_steps", "batch_size": "batch_size",
                     "grad_accum": "grad_accum", "lr": "base_lr", "warmup_steps": "warmup_steps",
                     "layer_decay": "layer_decay"}


def experiment_task(ctx: typer.Context, checkpoint: Path, task: Optional[str], recipe, clips, seq_len: int) -> tuple:
    """An experiment's task (the named one, else the one the checkpoint fits), its recipe and what its inputs are
    (video: the clip options; images: the size; text: the sequence length); another task's options are refused."""
    from dataclasses import asdict

    from .. import tasks
    from ..train.image import ImageRecipe
    from ..train.lm import LMRecipe

    name = tasks.infer(checkpoint, task).name if (checkpoint / "config.json").is_file() else (task or VIDEO)
    if name == VIDEO:
        refuse_given(ctx, {"seq_len"}, "video experiments")
        return name, recipe, asdict(clips)
    video = {p.name for group in (DATA, CLIPS) for p in group.parameters()} | {"recipe_file", "drop_path",
                                                                               "classifier_dropout"}
    given = set(EXPERIMENT_FIELDS) | {"data", "eval_data", "val_fraction", "workers"}
    if name == "image-classification":
        refuse_given(ctx, (video | {"seq_len"}) - given - {"size"}, "image experiments")
        return name, ImageRecipe(**given_recipe(ctx, EXPERIMENT_FIELDS)).check(), {"size": clips.size}
    refuse_given(ctx, video - given, "text experiments")
    from ..settings import check_number

    check_number("--seq-len", seq_len, 2)
    return name, LMRecipe(**given_recipe(ctx, EXPERIMENT_FIELDS)).check(), {"seq_len": seq_len}


VIDEO = "video-classification"
RUNNABLE = (VIDEO, "image-classification", "causal-lm")


def runnable(task: str) -> None:
    """A registered task these commands have no path for (one a plugin added): a one-line error."""
    if task not in RUNNABLE:
        raise GardenerError(f"--task {task}: finetune and evaluate run {', '.join(RUNNABLE)}")


def refuse_given(ctx: typer.Context, names: set[str], where: str) -> None:
    """Options of another task or kind of data, given on the command line: a one-line error naming the first."""
    for param in ctx.command.params:  # typer may vendor its own click: the source is compared by name
        source = ctx.get_parameter_source(param.name) if param.name in names else None
        if source is not None and source.name == "COMMANDLINE":
            raise GardenerError(f"{param.opts[0]}: does not apply to {where}")


def make_images(ctx: typer.Context, out_dir: Path, classes: str, per_class: int, test_per_class: Optional[int],
                size: int, seed: int, force: bool) -> None:
    from ..data.synthetic_images import TEXTURES, write_images

    refuse_given(ctx, {"domain", "frames", "ucf101_like", "documents", "test_documents"}, "images (--images)")
    given = {name for name in ("classes", "size") if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if "classes" in given else TEXTURES
    record = write_images(out_dir, classes=names, per_class=per_class, test_per_class=test_per_class or 20,
                          size=size if "size" in given else 32, seed=seed, force=force, arguments=ctx.params)
    say(f"wrote {record['train']} + {record['val']} images of {len(names)} classes to {out_dir}/train and "
        f"{out_dir}/val (use --data {out_dir})")


def make_text(ctx: typer.Context, out_dir: Path, documents: int, test_documents: int, seed: int, force: bool) -> None:
    from ..data.synthetic_text import write_text_corpus

    video = {"classes", "per_class", "test_per_class", "domain", "frames", "size", "ucf101_like"}
    refuse_given(ctx, video, "text (--text)")
    record = write_text_corpus(out_dir, documents=documents, test_documents=test_documents, seed=seed, force=force,
                               arguments=ctx.params)
    say(f"wrote {documents} + {test_documents} documents ({record['words']['train']:,} + {record['words']['test']:,} "
        f"words) to {out_dir}/train.jsonl and {out_dir}/test.jsonl, and their tokenizer to {out_dir}/tokenizer "
        f"(unigram perplexity of the test text: {record['unigram_perplexity']:.1f})")
