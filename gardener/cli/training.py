"""Commands that train and evaluate: finetune, evaluate, pretrain, make-data."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from ..data.clips import ClipOptions
from ._app import err, is_main_process, out, say, live_progress
from .options import CLIPS, DATA, FINETUNE_RECIPE, PRETRAIN_RECIPE, command
from .task_runs import (EVAL_CLIPS, EVAL_DATA, evaluate_image, evaluate_text, finetune_image, finetune_text, healing,
                        make_images, make_text, refuse_given, runnable)

OUT_RUN_OPT = typer.Option(..., "-o", "--out", help="Run folder: checkpoints, logs, best/ and model/.")
RESUME_OPT = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")
FORCE_OPT = typer.Option(False, "--force", help="Replace an existing output folder.")
TRAIN_SEED_OPT = typer.Option(0, "--seed", help="Seed for initialisation, sampling and augmentation.")
REPORT_TO_OPT = typer.Option("none", "--report-to", help="Also log losses, lr and evaluations to an experiment "
                             "tracker: none, tensorboard (OUT/tensorboard/) or wandb.")


TASK_OPT = typer.Option(None, "--task", help="video-classification, image-classification or causal-lm (default: the "
                        "one that fits MODEL's class).")


@command(rich_help_panel="Training", data=DATA, recipe=FINETUNE_RECIPE, clips=CLIPS)
def finetune(
    ctx: typer.Context, data, recipe, clips: ClipOptions,
    model: Path = typer.Argument(..., help="HF model directory: VideoMAE (pruned or not; a pretraining one works "
                                 "too), or a causal language model."),
    out_dir: Path = OUT_RUN_OPT, seed: int = TRAIN_SEED_OPT, resume: bool = RESUME_OPT, force: bool = FORCE_OPT,
    report_to: str = REPORT_TO_OPT, task: Optional[str] = TASK_OPT,
    seq_len: int = typer.Option(128, "--seq-len", help="causal-lm: tokens per packed training sequence."),
    distill_from: Optional[Path] = typer.Option(None, "--distill-from", help="Heal by distillation from this "
                                                "teacher (the unpruned model; for video a classifier of the data's "
                                                "classes): the KL to its temperature-softened predictions."),
    distill_temperature: float = typer.Option(2.0, "--distill-temperature", help="Temperature T of the "
                                              "distillation (the KL is scaled by T^2)."),
    distill_weight: float = typer.Option(1.0, "--distill-weight", help="Share of the loss that is the KL (the "
                                         "rest is the task's loss); 1: the KL alone."),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="Heal with LoRA adapters of this rank on the "
                                            "blocks' linear layers (the head trains whole), merged back at the end "
                                            "into a plain checkpoint; needs peft."),
    lora_alpha: float = typer.Option(16.0, "--lora-alpha", help="LoRA's scale alpha (updates are alpha / rank x BA)."),
    lora_dropout: float = typer.Option(0.0, "--lora-dropout", help="Dropout on the LoRA adapters' input."),
) -> None:
    """Finetune (heal) a model on its task: a VideoMAE classifier (Step 4 of the paper), or a causal LM on text.

    Runs under `accelerate launch` / torchrun too. A causal LM trains on --data text (a .txt, or a .jsonl of
    {"text"} or {"input_ids"} lines) packed into --seq-len sequences, and its perplexity is measured on --eval-data
    (or a held-out --val-fraction of the sequences); it takes the recipe options given, with its own defaults."""
    from ..tasks import infer

    distill, lora = healing(ctx, distill_from, distill_temperature, distill_weight, lora_rank, lora_alpha, lora_dropout)
    chosen = infer(model, task).name
    if chosen == "causal-lm":
        return finetune_text(ctx, model, data, out_dir, seq_len, seed, resume, force, report_to, distill, lora)
    if chosen == "image-classification":
        return finetune_image(ctx, model, data, clips.size, out_dir, seed, resume, force, report_to, distill, lora)
    runnable(chosen)
    refuse_given(ctx, {"seq_len"}, "the video-classification task")
    from ..report.figures import draw_eval_figures
    from ..report.tables import eval_table
    from ..train import finetune as run

    with live_progress("finetuning") as live:
        info = run(model, out_dir, data, recipe, **asdict(clips), seed=seed, resume=resume, force=force,
                   progress=live.step, arguments=ctx.params, report_to=report_to, distill=distill, lora=lora)
    if is_main_process():
        if not info.get("already_finished"):
            draw_eval_figures(out_dir)
        out.print(eval_table(info["final"]))
        say(f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed"
            if info.get("already_finished") else f"wrote {out_dir}/model (final), {out_dir}/eval.json, "
                                                 f"{out_dir}/gardener.json")




@command(rich_help_panel="Training", data=EVAL_DATA, clips=EVAL_CLIPS)
def evaluate(
    ctx: typer.Context, data, clips: ClipOptions,
    model: Path = typer.Argument(..., help="HF model directory: a VideoMAE classifier, or a causal language model."),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Write eval.json (and for video "
                                           "predictions.csv, confusion.csv and confusion.png) into this folder."),
    task: Optional[str] = TASK_OPT,
    seq_len: int = typer.Option(128, "--seq-len", help="causal-lm: tokens per packed sequence."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split for class folders, and of the "
                             "bootstrap intervals for text."),
    force: bool = FORCE_OPT,
) -> None:
    """Evaluate a model on its task: top-1 and more for video, perplexity for a causal LM.

    Video: multi-clip multi-crop top-1 (WAR), top-5, UAR, per-class recall and the confusion matrix. A causal LM:
    perplexity and next-token accuracy on --data text (a .txt, or a .jsonl of {"text"} or {"input_ids"} lines)
    packed into sequences of --seq-len tokens, each with its 95 % interval over sequences."""
    from ..tasks import infer

    chosen = infer(model, task)
    if chosen.name == "causal-lm":
        return evaluate_text(ctx, model, data.data, out_dir, seq_len, seed, force)
    if chosen.name == "image-classification":
        return evaluate_image(ctx, model, data, clips.size, out_dir, seed, force)
    runnable(chosen.name)
    refuse_given(ctx, {"seq_len"}, f"the {chosen.name} task")
    from ..report.figures import draw_eval_figures
    from ..report.tables import eval_table
    from ..train import evaluate_model

    result = evaluate_model(model, data, **clips.evaluation(), seed=seed, out=out_dir, force=force,
                            arguments=ctx.params, figures=draw_eval_figures)
    if is_main_process():
        out.print(eval_table(result))
        if out_dir:
            say(f"wrote {out_dir}")


@command("pretrain", rich_help_panel="Training", data=DATA.but("eval_data"), recipe=PRETRAIN_RECIPE,
         clips=CLIPS.but("frames", "size", "test_clips", "test_crops", min_crop_scale=0.5))
def pretrain_command(
    ctx: typer.Context, data, recipe, clips: ClipOptions,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Run folder; the encoder goes to OUT/encoder."),
    preset: str = typer.Option("tiny", "--preset", help="tiny (12 blocks, 128 wide, 64 px) or base (VideoMAE-B)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of VideoMAEConfig fields over the preset."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, sampling, masking."),
    resume: bool = RESUME_OPT, force: bool = FORCE_OPT, report_to: str = REPORT_TO_OPT,
) -> None:
    """Masked VideoMAE pretraining (Step 1 of the paper); exports OUT/encoder for score/prune/finetune."""
    from ..report.console import pretrain_messages
    from ..train.pretrain import pretrain

    with live_progress("masked pretraining") as live:
        info = pretrain(data, out_dir, preset=preset, config_overrides=config, recipe=recipe,
                        sampling_rate=clips.sampling_rate, min_crop_scale=clips.min_crop_scale, seed=seed,
                        resume=resume, force=force, progress=live.step, arguments=ctx.params,
                        report_to=report_to)
    if is_main_process():
        for line in pretrain_messages(info, out_dir):
            err.print(line, highlight=False)


@command("make-data", rich_help_panel="Training")
def make_data(
    ctx: typer.Context,
    out_dir: Path = typer.Argument(..., help="Folder for videos/<class>/*.mp4 and splits/ (UCF101 style)."),
    classes: str = typer.Option("move_up,move_down,grow,shrink,fade_in,fade_out,bounce,pass", "--classes",
                                help="Actions, from: move_up, move_down, grow, shrink, fade_in, fade_out, bounce, "
                                     "pass."),
    per_class: int = typer.Option(40, "--per-class", help="Videos per class (1 in 4 is a test video); with "
                                  "--test-per-class, the training videos per class."),
    test_per_class: Optional[int] = typer.Option(None, "--test-per-class",
                                                 help="Test videos per class, written after the training ones."),
    domain: str = typer.Option("source", "--domain", help="Scene: source (flat background, one distractor) or "
                               "target (the same actions elsewhere: gradient background, two distractors)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per video (default 16; 125 with "
                                         "--ucf101-like: 5 s)."),
    size: int = typer.Option(64, "--size", help="Frame size in pixels (even)."),
    ucf101_like: bool = typer.Option(False, "--ucf101-like", help="Write UCF101's kind of file instead: 320x240 "
                                     ".avi, MPEG-4 Part 2 with B-frames, 25 fps (for decoding tests and benchmarks)."),
    text: bool = typer.Option(False, "--text", help="Write text instead: a small formal language (verbs that agree "
                              "with subjects across nested clauses) as train.jsonl and test.jsonl, with its "
                              "tokenizer/, for the causal-lm task."),
    images: bool = typer.Option(False, "--images", help="Write images instead: textures (stripes, dots, checkers, "
                                "rings) as PNG files in train/ and val/ class folders, for the image-classification "
                                "task (--classes, --per-class, --test-per-class, --size apply; default 32 px)."),
    documents: int = typer.Option(2000, "--documents", help="With --text: training documents (4-12 sentences)."),
    test_documents: int = typer.Option(200, "--test-documents", help="With --text: test documents."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same videos (or text)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write a deterministic synthetic dataset: action videos as real video files, or text.

    With --text, a small formal language for the causal-lm task instead; with --images, textures for the
    image-classification task."""
    from ..data.synthetic import write_synthetic

    if text and images:
        raise typer.BadParameter("give one of --text and --images", param_hint="'--images'")
    if text:
        return make_text(ctx, out_dir, documents, test_documents, seed, force)
    if images:
        return make_images(ctx, out_dir, classes, per_class, test_per_class, size, seed, force)
    refuse_given(ctx, {"documents", "test_documents"}, "videos (without --text)")

    info = write_synthetic(out_dir, classes=classes, per_class=per_class, test_per_class=test_per_class,
                           domain=domain, frames=frames, size=size, ucf101_like=ucf101_like, seed=seed, force=force,
                           arguments=ctx.params)
    say(f"wrote {info['count']} videos to {out_dir}/videos and split files to {out_dir}/splits "
        f"(use --data {out_dir}/videos --split-dir {out_dir}/splits)")
