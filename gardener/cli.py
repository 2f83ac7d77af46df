"""The `gardener` command: thin commands that parse, call one library function, and print."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from . import criteria as registry
from .demo import RUN_TIMES
from .errors import GardenerError, Terminated

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find and remove the unimportant blocks of a pretrained transformer, without data.")
# Piped output is not squeezed into 80 columns: tables are meant to be read whole.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

# typer >= 0.25 vendors its own click; take the exception bases from typer itself.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
CRITERIA_HELP = "Comma list or 'all'. Known: " + ", ".join(registry.names())

# Options shared by several commands, declared once.
PATH_ARG = typer.Argument(..., help="HF model directory, .safetensors, or .pth/.pt/.bin state dict.")
STACK_OPT = typer.Option(None, "--stack", help="Stack to use (default: the encoder).")
PATTERN_OPT = typer.Option(None, "--block-pattern", help="Regex with the block number in a group.")
DTYPE_OPT = typer.Option("stored", "--dtype", help="Precision view: stored, float16, bfloat16 or float32.")
SEED_OPT = typer.Option(0, "--seed", help="Seed for the random criterion.")
SWEEP_CRITERIA = registry.sweep_criteria()
AGGREGATE_OPT = typer.Option("mean", "--aggregate",
                             help="How spectral criteria combine a block's matrices: mean, min, max or weighted "
                                  "(by parameter count).")
FRAMES_OPT = typer.Option(16, "--frames", help="Video frames for the GFLOPs count.")
SIZE_OPT = typer.Option(224, "--size", help="Image/frame size for the GFLOPs count.")
SEQ_OPT = typer.Option(128, "--seq-len", help="Sequence length for the GFLOPs count of text models.")


def _progress(label: str):
    """A Rich progress bar on stderr; returns (context manager, callback(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


@app.command()
def score(
    ctx: typer.Context,
    path: Path = PATH_ARG,
    criteria: str = typer.Option("all", "--criteria", help=CRITERIA_HELP),
    criterion: str = typer.Option("entropy", "--criterion", help="Primary criterion: its ranks and removal order."),
    dtype: str = DTYPE_OPT,
    stack: Optional[str] = STACK_OPT,
    block_pattern: Optional[str] = PATTERN_OPT,
    params: str = typer.Option("2d", "--params", help="'2d' (weight matrices, as the paper) or 'all'."),
    bins: int = typer.Option(2048, "--bins", help="Histogram bins for hist_entropy."),
    seed: int = SEED_OPT,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write scores, ranks and metadata as JSON."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write one row per block as CSV."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write weight histograms at several depths (PNG)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Blocks scored in parallel (default: up to 2)."),
    aggregate: str = AGGREGATE_OPT,
    precision_report: bool = typer.Option(False, "--precision-report",
                                          help="Also show exact-value entropy under every --dtype view: distinct "
                                               "values, ranks and their agreement, and whether entropy is "
                                               "meaningful on this checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
) -> None:
    """Score every block of a checkpoint from its weights alone, and show the removal order."""
    from .scoring import score as run_score
    from .workflows import write_score_outputs, check_outputs

    outputs = {"json": json_out, "csv": csv_out, "plot": plot}
    check_outputs(outputs, force)
    bar, tick = _progress("scoring blocks")
    with bar:
        result = run_score(path, criteria, primary=criterion, dtype=dtype, stack=stack, block_pattern=block_pattern,
                           params=params, bins=bins, seed=seed, histograms=plot is not None or json_out is not None,
                           workers=workers, aggregate=aggregate, progress=tick)
    _show(result)
    if precision_report:
        from .precision import precision_report as make_report
        from .report.tables import precision_tables

        report = make_report(path, stack=stack, block_pattern=block_pattern, params=params, workers=workers)
        for table in precision_tables(report):
            out.print(table)
        style = "green" if report["meaningful"] else "yellow"
        out.print(f"[{style}]exact-value entropy on this checkpoint:[/] {report['verdict']}")
        result.meta["precision"] = report
    for written in write_score_outputs(result, outputs, force, arguments=ctx.params):
        err.print(f"wrote {written}")


def _show(result) -> None:
    from .report.tables import rank_table, removal_line, score_table, summary_lines

    for line in summary_lines(result):
        err.print(line, highlight=False)
    out.print(score_table(result))
    if len(result.scores) > 1:
        out.print(rank_table(result))
    out.print(removal_line(result), highlight=False)


@app.command()
def prune(
    ctx: typer.Context,
    path: Path = PATH_ARG,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder, or for a single-file input a file of the "
                                 "same format (manifest beside it); must not exist unless --force."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of blocks to remove: round(R x depth)."),
    remove: Optional[int] = typer.Option(None, "--remove", help="Number of blocks to remove."),
    blocks: Optional[str] = typer.Option(None, "--blocks", help="Explicit blocks to remove, e.g. 3,7,9 (1-based)."),
    zero_based: bool = typer.Option(False, "--zero-based", help="Read --blocks/--protect as 0-based indices."),
    criterion: str = typer.Option("entropy", "--criterion", help="Criterion ranking the blocks. " + CRITERIA_HELP),
    ranking: Optional[Path] = typer.Option(None, "--ranking", help="Use a `gardener score --json` file's ranking."),
    protect: Optional[str] = typer.Option(None, "--protect", help="Blocks never removed, e.g. 1,12."),
    dtype: str = DTYPE_OPT,
    stack: Optional[str] = STACK_OPT,
    block_pattern: Optional[str] = PATTERN_OPT,
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Shard HF weights above this size."),
    frames: int = FRAMES_OPT,
    size: int = SIZE_OPT,
    seq_len: int = SEQ_OPT,
    seed: int = SEED_OPT,
    aggregate: str = AGGREGATE_OPT,
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Remove blocks in one shot and write a shallower checkpoint in the input's own format."""
    from .cost import InputSpec
    from .report.tables import prune_table
    from .workflows import prune_checkpoint

    info = prune_checkpoint(path, out_dir, ratio=ratio, remove=remove, blocks=blocks, zero_based=zero_based,
                            criterion=criterion, ranking=ranking, protect=protect, dtype=dtype, stack=stack,
                            block_pattern=block_pattern, force=force, max_shard_size=max_shard_size,
                            spec=InputSpec(frames, size, seq_len), seed=seed, aggregate=aggregate,
                            arguments=ctx.params)
    out.print(prune_table(info))
    for warning in info["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for entry in info.get("dropped_entries", []):
        err.print(f"[yellow]warning:[/] dropped {entry['entry']!r} ({entry['tensors']} tensors): it describes the "
                  f"unpruned model (optimizer state or a copy of the weights); listed in the manifest",
                  highlight=False)
    err.print(f"wrote {out_dir}" + (f" and {out_dir}.gardener.json" if out_dir.is_file() else ""))


@app.command()
def info(
    path: Path = PATH_ARG,
    stack: Optional[str] = STACK_OPT,
    block_pattern: Optional[str] = PATTERN_OPT,
    frames: int = FRAMES_OPT,
    size: int = SIZE_OPT,
    seq_len: int = SEQ_OPT,
) -> None:
    """Print the depth, stacks, parameters and GFLOPs of a checkpoint."""
    from .cost import InputSpec
    from .report.tables import info_table
    from .workflows import checkpoint_info

    out.print(info_table(checkpoint_info(path, stack, block_pattern, InputSpec(frames, size, seq_len))))


@app.command()
def convert(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Original VideoMAE checkpoint (.pth/.pt/.bin/.safetensors)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output HF directory (must not exist unless --force)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of VideoMAEConfig fields the tensors "
                                          "cannot tell (num_attention_heads, num_frames, image_size, ...)."),
    num_labels: Optional[int] = typer.Option(None, "--num-labels", help="Classes (checked against the head)."),
    seed: int = typer.Option(0, "--seed", help="Recorded for the manifest; conversion is deterministic."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Convert an original VideoMAE checkpoint (finetuned or pretraining) into a transformers directory."""
    from .convert import convert_videomae

    info = convert_videomae(path, out_dir, config=config, num_labels=num_labels, force=force, arguments=ctx.params)
    out.print(f"{info['architecture']}: {info['tensors']} tensors, {info['params'] / 1e6:.1f} M parameters, "
              f"{info['dtype']}", highlight=False)
    err.print(f"wrote {out_dir}")


DATA_OPT = typer.Option(..., "--data", help="Class folders ROOT/<class>/<video>, a UCF101/HMDB51 video root "
                        "(with --split-dir), or a .csv/.jsonl manifest of path,label.")
SPLIT_DIR_OPT = typer.Option(None, "--split-dir", help="UCF101 ucfTrainTestlist/ or HMDB51 split folder.")
FOLD_OPT = typer.Option(1, "--fold", help="Split number of UCF101/HMDB51.")
EVAL_DATA_OPT = typer.Option(None, "--eval-data", help="Separate test data (default: the test split of --data).")
VAL_FRACTION_OPT = typer.Option(0.2, "--val-fraction", help="Held-out fraction per class for class folders "
                                "without train/ and test/ subfolders.")
STRICT_OPT = typer.Option(False, "--strict", help="Unreadable videos are an error instead of being skipped.")
WORKERS_OPT = typer.Option(2, "--workers", help="DataLoader processes decoding video.")
CLIP_FRAMES_OPT = typer.Option(None, "--frames", help="Frames per clip (default: the model's num_frames).")
CLIP_SIZE_OPT = typer.Option(None, "--size", help="Clip size in pixels (default: the model's image_size).")
RATE_OPT = typer.Option(4, "--sampling-rate", help="Stride between sampled frames.")
CLIPS_OPT = typer.Option(5, "--test-clips", help="Evenly spaced clips per video at evaluation.")
CROPS_OPT = typer.Option(3, "--test-crops", help="Spatial crops per clip at evaluation.")
EPOCHS_OPT = typer.Option(None, "--epochs", help="Training length in epochs.")
MAX_STEPS_OPT = typer.Option(None, "--max-steps", help="Training length in optimizer steps.")
BATCH_OPT = typer.Option(8, "--batch-size", help="Clips per process per micro-batch.")
ACCUM_OPT = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step.")
LR_OPT = typer.Option(5e-4, "--lr", help="Base learning rate per 256 clips (scaled by the total batch).")
WARMUP_STEPS_OPT = typer.Option(None, "--warmup-steps", help="Warmup in steps (overrides --warmup-epochs).")
LAYER_DECAY_OPT = typer.Option(0.7, "--layer-decay", help="Layer-wise lr decay.")
DROP_PATH_OPT = typer.Option(0.2, "--drop-path", help="Stochastic depth at the last block.")
CLS_DROPOUT_OPT = typer.Option(0.5, "--classifier-dropout", help="Dropout before the classifier.")
MIN_SCALE_OPT = typer.Option(0.08, "--min-crop-scale", help="Smallest random-resized-crop area.")
COMPILE_OPT = typer.Option(False, "--compile", help="torch.compile the model (a first step of compiling, then "
                           "faster steps; see BENCHMARKS.md).")
RECIPE_OPT = typer.Option(None, "--recipe", help="JSON of finetuning recipe fields; overrides the options.")
SHARD_OPT = typer.Option(None, "--shard", help="i/n: run every n-th job starting at the i-th (1-based).")
KEEP_MODELS_OPT = typer.Option(False, "--keep-models", help="Keep each job's pruned and finetuned models.")
ORACLE_SEEDS_OPT = typer.Option(1, "--oracle-seeds", help="Repeat each oracle job with K finetuning seeds (seed, "
                                "seed+1, ...) and average them, so that its ranking is less noisy.")


def _is_main_process() -> bool:
    """Under torchrun / accelerate launch only rank 0 prints results."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _data_options(data, split_dir, fold, eval_data, val_fraction, strict, workers):
    from .train import DataOptions

    return DataOptions(data, split_dir, fold, eval_data, val_fraction, strict, workers)


def _training_progress(label: str):
    """A Rich bar showing loss, lr and clips/s; returns (context manager, callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
                   disable=not err.is_terminal)
    task = bar.add_task(label, total=None, stats="")

    def update(done, total, loss=None, lr=None, clips_per_s=None):
        stats = f"loss {loss:.4f} · lr {lr:.2e} · {clips_per_s:.1f} clips/s" if loss is not None else ""
        bar.update(task, completed=done, total=total, stats=stats)
    return bar, update


@app.command()
def finetune(
    ctx: typer.Context,
    model: Path = typer.Argument(..., help="HF VideoMAE directory (pruned or not; a pretraining one works too)."),
    data: Path = DATA_OPT,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Run folder: checkpoints, logs, best/ and model/."),
    split_dir: Optional[Path] = SPLIT_DIR_OPT,
    fold: int = FOLD_OPT,
    eval_data: Optional[Path] = EVAL_DATA_OPT,
    val_fraction: float = VAL_FRACTION_OPT,
    epochs: Optional[float] = EPOCHS_OPT,
    max_steps: Optional[int] = MAX_STEPS_OPT,
    batch_size: int = BATCH_OPT,
    num_sample: int = typer.Option(1, "--num-sample", help="Augmented clips per decoded video (VideoMAE's "
                                   "repeated augmentation: 2 halves decoding per clip; batches hold N x videos)."),
    grad_accum: int = ACCUM_OPT,
    lr: float = LR_OPT,
    min_lr: float = typer.Option(1e-5, "--min-lr", help="Final learning rate per 256 clips."),
    warmup_epochs: float = typer.Option(5.0, "--warmup-epochs", help="Linear warmup length."),
    warmup_steps: Optional[int] = WARMUP_STEPS_OPT,
    weight_decay: float = typer.Option(0.05, "--weight-decay", help="AdamW weight decay (not on norms/biases)."),
    layer_decay: float = LAYER_DECAY_OPT,
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", help="Label smoothing."),
    drop_path: float = DROP_PATH_OPT,
    classifier_dropout: float = CLS_DROPOUT_OPT,
    mix: bool = typer.Option(False, "--mix", help="Mixup 0.8 / CutMix 1.0."),
    clip_grad: Optional[float] = typer.Option(None, "--clip-grad", help="Gradient norm clipping."),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bf16 autocast on GPU."),
    compile: bool = COMPILE_OPT,
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Save memory."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every N steps; keeps best/."),
    save_every: int = typer.Option(500, "--save-every", help="Checkpoint every N steps."),
    keep_last: int = typer.Option(2, "--keep-last", help="Checkpoints kept."),
    frames: Optional[int] = CLIP_FRAMES_OPT,
    size: Optional[int] = CLIP_SIZE_OPT,
    sampling_rate: int = RATE_OPT,
    test_clips: int = CLIPS_OPT,
    test_crops: int = CROPS_OPT,
    min_crop_scale: float = MIN_SCALE_OPT,
    workers: int = WORKERS_OPT,
    strict: bool = STRICT_OPT,
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, sampling and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run folder."),
) -> None:
    """Finetune a VideoMAE classifier (Step 4 of the paper); runs under `accelerate launch` / torchrun too."""
    from .report.tables import eval_table
    from .train import Recipe
    from .train import finetune as run

    recipe = Recipe(batch_size=batch_size, num_sample=num_sample, grad_accum=grad_accum, epochs=epochs,
                    max_steps=max_steps, base_lr=lr,
                    min_lr=min_lr, warmup_epochs=warmup_epochs, warmup_steps=warmup_steps,
                    weight_decay=weight_decay, layer_decay=layer_decay, label_smoothing=label_smoothing,
                    drop_path=drop_path, classifier_dropout=classifier_dropout, mix=mix, clip_grad=clip_grad,
                    bf16=bf16, compile=compile, gradient_checkpointing=gradient_checkpointing, eval_every=eval_every,
                    save_every=save_every, keep_last=keep_last)
    options = _data_options(data, split_dir, fold, eval_data, val_fraction, strict, workers)
    bar, tick = _training_progress("finetuning")
    with bar:
        info = run(model, out_dir, options, recipe, frames=frames, size=size, sampling_rate=sampling_rate,
                   test_clips=test_clips, test_crops=test_crops, min_crop_scale=min_crop_scale, seed=seed,
                   resume=resume, force=force, progress=tick, arguments=ctx.params)
    if _is_main_process():
        out.print(eval_table(info["final"]))
        if info.get("already_finished"):
            err.print(f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed", highlight=False)
        else:
            err.print(f"wrote {out_dir}/model (final), {out_dir}/eval.json, {out_dir}/gardener.json")


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Path = typer.Argument(..., help="HF VideoMAEForVideoClassification directory."),
    data: Path = DATA_OPT,
    split_dir: Optional[Path] = SPLIT_DIR_OPT,
    fold: int = FOLD_OPT,
    val_fraction: float = VAL_FRACTION_OPT,
    frames: Optional[int] = CLIP_FRAMES_OPT,
    size: Optional[int] = CLIP_SIZE_OPT,
    sampling_rate: int = RATE_OPT,
    test_clips: int = CLIPS_OPT,
    test_crops: int = CROPS_OPT,
    workers: int = WORKERS_OPT,
    strict: bool = STRICT_OPT,
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Write eval.json, predictions.csv, "
                                           "confusion.csv and confusion.png into this folder."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split for class folders."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Multi-clip, multi-crop evaluation: top-1 (WAR), top-5, UAR, per-class recall, confusion matrix."""
    from .report.tables import eval_table
    from .train import evaluate_model

    options = _data_options(data, split_dir, fold, None, val_fraction, strict, workers)
    result = evaluate_model(model, options, frames=frames, size=size, sampling_rate=sampling_rate,
                            test_clips=test_clips, test_crops=test_crops, seed=seed, out=out_dir, force=force,
                            arguments=ctx.params)
    if _is_main_process():
        out.print(eval_table(result))
        if out_dir:
            err.print(f"wrote {out_dir}")


def _recipe(recipe_file, **fields):
    """A Recipe from the command's options, with a --recipe JSON file's fields on top."""
    import json

    from .train import Recipe

    if recipe_file is not None:
        try:
            extra = json.loads(Path(recipe_file).read_text())
        except (OSError, ValueError) as exc:
            raise GardenerError(f"--recipe {recipe_file}: cannot read a JSON object ({exc})") from None
        unknown = sorted(set(extra) - set(Recipe.__dataclass_fields__))
        if unknown:
            raise GardenerError(f"--recipe {recipe_file}: unknown field {unknown[0]!r}")
        fields.update(extra)
    return Recipe(**fields)


def _experiment_progress():
    """Rich bars for the jobs of a plan and the steps of the running job; without a terminal (a log
    file, a batch job), one line per finished job instead."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=err, disable=not err.is_terminal)
    jobs = bar.add_task("jobs", total=None, stats="")
    steps = bar.add_task("  finetuning", total=None, stats="")
    running: dict = {}

    def on_job(done, total, job):
        bar.update(jobs, completed=done, total=total,
                   stats=f"removing {list(job.removed) or 'nothing'}" if job is not None else "")
        if not err.is_terminal and running.get("job") is not None and _is_main_process():
            seconds = time.monotonic() - running["since"]
            err.print(f"  job {done}/{total} done: removing {list(running['job'].removed) or 'nothing'} "
                      f"({seconds:.1f} s)", highlight=False)
        running.update(job=job, since=time.monotonic())

    def on_step(done, total, loss=None, lr=None, clips_per_s=None):
        bar.update(steps, completed=done, total=total,
                   stats=f"loss {loss:.4f} · {clips_per_s:.1f} clips/s" if loss is not None else "")
    return bar, on_job, on_step


def _prepare_experiment(p: dict):
    """The experiment and shard named by the options `sensitivity` and `sweep` share (their ctx.params)."""
    from .experiments.protocol import prepare
    from .experiments.runs import parse_shard

    recipe = _recipe(p["recipe"], epochs=p["epochs"], max_steps=p["max_steps"], batch_size=p["batch_size"],
                     grad_accum=p["grad_accum"], base_lr=p["lr"], warmup_steps=p["warmup_steps"],
                     layer_decay=p["layer_decay"], drop_path=p["drop_path"],
                     classifier_dropout=p["classifier_dropout"])
    shard = parse_shard(p["shard"])
    clip = {k: p[k] for k in ("frames", "size", "sampling_rate", "test_clips", "test_crops", "min_crop_scale")}
    options = _data_options(p["data"], p["split_dir"], p["fold"], p["eval_data"], p["val_fraction"], p["strict"],
                            p["workers"])
    return prepare(p["checkpoint"], p["run_dir"], options, recipe, clip, p["seed"], p["keep_models"],
                   p["oracle_seeds"], p.get("ratios")), shard


def _report_counts(counts: dict, complete: bool, run_dir: Path) -> None:
    if not _is_main_process():
        return
    err.print(f"jobs: {counts['run']} run, {counts['cached']} from the cache"
              + (f", {counts['other_shards']} left to other shards" if counts["other_shards"] else ""),
              highlight=False)
    if not complete:
        err.print(f"not every job has a result yet: run the other shards, then `gardener collect {run_dir}`",
                  highlight=False)


@app.command()
def sensitivity(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="HF VideoMAE directory (the unpruned model)."),
    data: Path = DATA_OPT,
    run_dir: Path = typer.Option(..., "-o", "--run", help="Run folder (created, or reused for the same checkpoint)."),
    split_dir: Optional[Path] = SPLIT_DIR_OPT, fold: int = FOLD_OPT, eval_data: Optional[Path] = EVAL_DATA_OPT,
    val_fraction: float = VAL_FRACTION_OPT, strict: bool = STRICT_OPT, workers: int = WORKERS_OPT,
    epochs: Optional[float] = EPOCHS_OPT, max_steps: Optional[int] = MAX_STEPS_OPT, batch_size: int = BATCH_OPT,
    grad_accum: int = ACCUM_OPT, lr: float = LR_OPT, warmup_steps: Optional[int] = WARMUP_STEPS_OPT,
    layer_decay: float = LAYER_DECAY_OPT, drop_path: float = DROP_PATH_OPT,
    classifier_dropout: float = CLS_DROPOUT_OPT, recipe: Optional[Path] = RECIPE_OPT,
    frames: Optional[int] = CLIP_FRAMES_OPT, size: Optional[int] = CLIP_SIZE_OPT, sampling_rate: int = RATE_OPT,
    test_clips: int = CLIPS_OPT, test_crops: int = CROPS_OPT, min_crop_scale: float = MIN_SCALE_OPT,
    shard: Optional[str] = SHARD_OPT, keep_models: bool = KEEP_MODELS_OPT, oracle_seeds: int = ORACLE_SEEDS_OPT,
    seed: int = typer.Option(0, "--seed", help="Seed of every job's finetuning."),
) -> None:
    """The oracle: remove each block in turn, finetune, evaluate (the paper's Table 1 and Fig. 1a)."""
    from .experiments.protocol import run_sensitivity
    from .report.tables import sensitivity_table

    exp, part = _prepare_experiment(ctx.params)
    bar, on_job, on_step = _experiment_progress()
    with bar:
        result = run_sensitivity(exp, part, progress=on_job, job_progress=on_step)
    _report_counts(result["counts"], result["table"] is not None, run_dir)
    if result["table"] is not None and _is_main_process():
        out.print(sensitivity_table(result["table"]))
        err.print(f"wrote {run_dir}/sensitivity.json and {run_dir}/oracle.json (a ranking for `prune --ranking`)")


@app.command()
def sweep(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="HF VideoMAE directory (the unpruned model)."),
    data: Path = DATA_OPT,
    run_dir: Path = typer.Option(..., "-o", "--run", help="Run folder (created, or reused for the same checkpoint)."),
    criteria: str = typer.Option(",".join(SWEEP_CRITERIA), "--criteria",
                                 help="Criteria to compare; 'sensitivity' is the oracle. Default: the paper's "
                                      "criteria and the spectral ones."),
    ratios: str = typer.Option("8.3,25,41.7,58.3,75,91.7", "--ratios", help="Pruning ratios in % (or fractions)."),
    random_seeds: int = typer.Option(3, "--random-seeds", help="Random rankings averaged for 'random'."),
    dtype: str = DTYPE_OPT,
    aggregate: str = AGGREGATE_OPT,
    split_dir: Optional[Path] = SPLIT_DIR_OPT, fold: int = FOLD_OPT, eval_data: Optional[Path] = EVAL_DATA_OPT,
    val_fraction: float = VAL_FRACTION_OPT, strict: bool = STRICT_OPT, workers: int = WORKERS_OPT,
    epochs: Optional[float] = EPOCHS_OPT, max_steps: Optional[int] = MAX_STEPS_OPT, batch_size: int = BATCH_OPT,
    grad_accum: int = ACCUM_OPT, lr: float = LR_OPT, warmup_steps: Optional[int] = WARMUP_STEPS_OPT,
    layer_decay: float = LAYER_DECAY_OPT, drop_path: float = DROP_PATH_OPT,
    classifier_dropout: float = CLS_DROPOUT_OPT, recipe: Optional[Path] = RECIPE_OPT,
    frames: Optional[int] = CLIP_FRAMES_OPT, size: Optional[int] = CLIP_SIZE_OPT, sampling_rate: int = RATE_OPT,
    test_clips: int = CLIPS_OPT, test_crops: int = CROPS_OPT, min_crop_scale: float = MIN_SCALE_OPT,
    shard: Optional[str] = SHARD_OPT, keep_models: bool = KEEP_MODELS_OPT, oracle_seeds: int = ORACLE_SEEDS_OPT,
    seed: int = typer.Option(0, "--seed", help="Seed of every job's finetuning."),
) -> None:
    """Accuracy by pruning ratio for each criterion (the paper's Tables 3, 7-12 and Fig. 1b)."""
    from .experiments.protocol import parse_sweep_criteria, run_sweep
    from .report.tables import sweep_table

    names = parse_sweep_criteria(criteria)
    registry.check_aggregate(aggregate)  # before the run folder is made
    exp, part = _prepare_experiment(ctx.params)  # checks --ratios before the run folder is made
    bar, on_job, on_step = _experiment_progress()
    with bar:
        result = run_sweep(exp, names, ratios, random_seeds, dtype, part, progress=on_job, job_progress=on_step,
                           aggregate=aggregate)
    _report_counts(result["counts"], result["table"] is not None, run_dir)
    if result["waiting_for_oracle"] and _is_main_process():
        err.print("the oracle is not complete: once every shard has finished, run the same sweep again to add "
                  "the sensitivity rows", highlight=False)
    if result["table"] is not None and _is_main_process():
        out.print(sweep_table(result["table"]))
        err.print(f"wrote {run_dir}/sweep.json" + (" and agreement.json" if result["oracle"] else ""))


@app.command()
def agree(
    scores: Path = typer.Argument(..., help="A `gardener score --json` file (or RUN/scores.json)."),
    oracle: Path = typer.Argument(..., help="RUN/oracle.json written by `gardener sensitivity`."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the agreement as JSON."),
    force: bool = typer.Option(False, "--force", help="Overwrite the JSON file."),
) -> None:
    """Rank agreement of each data-free criterion with the oracle: Spearman, Kendall, top-k overlap."""
    import json

    from .experiments.agreement import agree_files
    from .fileio import write_text
    from .report.experiment import agreement_summary
    from .report.tables import agreement_table

    result = agree_files(scores, oracle)
    out.print(agreement_table(result))
    out.print(agreement_summary(result).replace("**", ""), highlight=False)
    if json_out:
        write_text(json_out, json.dumps(result, indent=2) + "\n", force)
        err.print(f"wrote {json_out}")


@app.command()
def collect(
    run_dir: Path = typer.Argument(..., help="Run folder to complete."),
    others: Optional[list[Path]] = typer.Argument(None, help="Run folders of other shards to merge in."),
) -> None:
    """Merge the job results of sharded runs and build the tables of every finished plan."""
    from .experiments.protocol import missing_jobs, rebuild_tables
    from .experiments.runs import RunDir, collect as merge, read_json

    info = read_json(run_dir / "run.json")
    run = RunDir(run_dir, info["source_hash"], info)
    copied = merge(run, list(others or []))
    made = rebuild_tables(run)
    left = missing_jobs(run)
    err.print(f"merged {copied} job results; tables built: {', '.join(made) or 'none'}; jobs without a result: "
              f"{left}", highlight=False)
    if left:
        raise GardenerError(f"{run_dir}: {left} job(s) of its plans have no result yet; run the missing shards "
                            f"(or the same command again if the sweep waited for the oracle)")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run folder of `gardener sensitivity` / `sweep`."),
    fmt: str = typer.Option("md", "--format", help="md (report.md + figures/) or html (one self-contained page)."),
) -> None:
    """Write the paper's tables and figures for a run folder: report.md or report.html."""
    from .report.experiment import write_report

    err.print(f"wrote {write_report(run_dir, fmt)}")


@app.command("criteria")
def list_criteria() -> None:
    """List the registered criteria and which end of each is removed first."""
    from rich.table import Table

    table = Table("name", "family", "removes first", "scope", "what it measures", header_style="bold")
    for name in registry.names():
        c = registry.get(name)
        table.add_row(name, c.family, f"{c.removes} score", c.scope, c.summary)
    out.print(table)


@app.command()
def demo(
    out_dir: Path = typer.Argument(Path("gardener-demo"), help="Folder for the demo (reused if run again)."),
    quick: bool = typer.Option(False, "--quick", help=f"Smaller settings: {RUN_TIMES['quick']} instead of "
                               f"{RUN_TIMES['default']} on 2 CPU cores (measured {RUN_TIMES['date']})."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, the pretraining and every finetuning job."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing folder."),
) -> None:
    """The paper in miniature: synthetic videos, masked pretraining, scores, oracle, sweep and report."""
    from .demo import run_demo

    bar, on_job, on_step = _experiment_progress()
    with bar:
        report = run_demo(out_dir, quick=quick, seed=seed, force=force, say=lambda m: err.print(m, highlight=False),
                          job_progress=on_job, step_progress=on_step)
    err.print(f"wrote {report}")


@app.command("make-data")
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
    ucf101_like: bool = typer.Option(False, "--ucf101-like", help="Write UCF101's kind of file instead: 320x240 .avi, "
                                     "MPEG-4 Part 2 with B-frames, 25 fps (for decoding tests and benchmarks)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same videos."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write a deterministic synthetic action-recognition dataset of real video files."""
    import json

    from .data.synthetic import ACTIONS, make_dataset
    from .fileio import atomic_dir, write_text
    from .manifest import manifest

    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    unknown = [c for c in names if c not in ACTIONS]
    if unknown or len(names) < 2:
        raise GardenerError(f"--classes: {unknown[0]!r} is not an action" if unknown else
                            "--classes: give at least two actions")
    frames = frames if frames is not None else (125 if ucf101_like else 16)
    if size < 16 or size % 2 or frames < 2 or per_class < 2:
        raise GardenerError("--size must be even and >= 16, --frames >= 2, --per-class >= 2")
    if test_per_class is not None and test_per_class < 1:
        raise GardenerError("--test-per-class must be at least 1")
    with atomic_dir(out_dir, force) as tmp:
        info = make_dataset(tmp, classes=names, per_class=per_class, frames=frames, size=size, seed=seed,
                            test_per_class=test_per_class, domain=domain, ucf101_like=ucf101_like)
        record = manifest("make-data", [], {k: str(v) if isinstance(v, Path) else v for k, v in ctx.params.items()})
        record.update({"count": info["count"], "classes": info["classes"]})
        write_text(tmp / "gardener.json", json.dumps(record, indent=2) + "\n")
    err.print(f"wrote {info['count']} videos to {out_dir}/videos and split files to {out_dir}/splits "
              f"(use --data {out_dir}/videos --split-dir {out_dir}/splits)")


@app.command("pretrain")
def pretrain_command(
    ctx: typer.Context,
    data: Path = DATA_OPT,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Run folder; the encoder goes to OUT/encoder."),
    preset: str = typer.Option("tiny", "--preset", help="tiny (12 blocks, 128 wide, 64 px) or base (VideoMAE-B)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of VideoMAEConfig fields over the preset."),
    split_dir: Optional[Path] = SPLIT_DIR_OPT, fold: int = FOLD_OPT, val_fraction: float = VAL_FRACTION_OPT,
    strict: bool = STRICT_OPT, workers: int = WORKERS_OPT,
    epochs: Optional[float] = EPOCHS_OPT, max_steps: Optional[int] = MAX_STEPS_OPT, batch_size: int = BATCH_OPT,
    grad_accum: int = ACCUM_OPT,
    lr: float = typer.Option(1.5e-4, "--lr", help="Base learning rate per 256 clips."),
    warmup_steps: Optional[int] = WARMUP_STEPS_OPT,
    mask_ratio: float = typer.Option(0.9, "--mask-ratio", help="Share of each frame's patches hidden (tubes)."),
    sampling_rate: int = RATE_OPT,
    min_crop_scale: float = typer.Option(0.5, "--min-crop-scale", help="Smallest random-resized-crop area."),
    save_every: int = typer.Option(500, "--save-every", help="Checkpoint every N steps."),
    compile: bool = COMPILE_OPT,
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, sampling, masking."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run folder."),
) -> None:
    """Masked VideoMAE pretraining (Step 1 of the paper); exports OUT/encoder for score/prune/finetune."""
    import json

    from .train.pretrain import PretrainRecipe, pretrain

    overrides = {}
    if config is not None:
        try:
            overrides = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise GardenerError(f"--config {config}: cannot read a JSON object ({exc})") from None
    recipe = PretrainRecipe(batch_size=batch_size, grad_accum=grad_accum, epochs=epochs, max_steps=max_steps,
                            base_lr=lr, warmup_steps=warmup_steps, mask_ratio=mask_ratio, save_every=save_every,
                            compile=compile)
    options = _data_options(data, split_dir, fold, None, val_fraction, strict, workers)
    bar, tick = _training_progress("pretraining")
    with bar:
        info = pretrain(options, out_dir, preset=preset, config_overrides=overrides, recipe=recipe,
                        sampling_rate=sampling_rate, min_crop_scale=min_crop_scale, seed=seed, resume=resume,
                        force=force, progress=tick, arguments=ctx.params)
    if _is_main_process():
        if info.get("already_finished"):
            err.print(f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed", highlight=False)
            return
        err.print(f"pretrained {info['steps']} steps; encoder in {out_dir}/encoder")
        summary = info["loss"]
        if summary:
            err.print(f"final loss {summary['final_loss']:.4f}; the trivial answer (ignoring the visible patches) "
                      f"scores {summary['trivial_loss']:.4f}", highlight=False)
            if not summary["learned"]:
                err.print("[yellow]warning:[/] the loss is not 10 % below the trivial one: the encoder has learnt "
                          "little from the visible patches (more steps, a lower --mask-ratio or larger frames may help)",
                          highlight=False)


@app.command()
def version() -> None:
    """Print the versions of gardener and the libraries it relies on."""
    from .manifest import versions

    for name, value in versions().items():
        out.print(f"{name} {value}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and a non-zero exit, never a traceback."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # gardener draws its own progress bars
    previous = _on_sigterm()
    try:
        code = app(args=argv, standalone_mode=False, prog_name="gardener")
    except GardenerError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except _USAGE_ERROR as exc:
        err.print(f"[red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:  # typer returns 130 for a KeyboardInterrupt, which our SIGTERM handler raises too
        err.print("terminated (SIGTERM)" if _TERMINATED else "interrupted")
        sys.exit(143 if _TERMINATED else 130)
    sys.exit(code if isinstance(code, int) else 0)


_TERMINATED: list[int] = []


def _on_sigterm():
    """Handle SIGTERM like Ctrl-C (temporaries removed, exit 143); returns the handler it replaced."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    _TERMINATED.clear()

    def stop(signum, frame):
        _TERMINATED.append(signum)
        raise Terminated()
    return signal.signal(signal.SIGTERM, stop)
