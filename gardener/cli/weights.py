"""Commands on weights alone: score, prune, info, convert, criteria, version."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import criteria as registry
from ..cost import InputSpec
from ._app import app, err, out, progress, say, warn
from .options import CALIB, command

CRITERIA_HELP = "Comma list or 'all'. Known: " + ", ".join(registry.names())
PATH_ARG = typer.Argument(..., help="HF model directory, .safetensors, or .pth/.pt/.bin state dict.")
STACK_OPT = typer.Option(None, "--stack", help="Stack to use (default: the encoder).")
PATTERN_OPT = typer.Option(None, "--block-pattern", help="Regex with the block number in a group.")
DTYPE_OPT = typer.Option("stored", "--dtype", help="Precision view: stored, float16, bfloat16 or float32.")
SEED_OPT = typer.Option(0, "--seed", help="Seed for the random criterion.")
AGGREGATE_OPT = typer.Option("mean", "--aggregate", help="How spectral criteria combine a block's matrices: mean, "
                             "min, max or weighted (by parameter count).")
FRAMES_OPT = typer.Option(16, "--frames", help="Video frames for the GFLOPs count.")
SIZE_OPT = typer.Option(224, "--size", help="Image/frame size for the GFLOPs count.")
SEQ_OPT = typer.Option(128, "--seq-len", help="Sequence length for the GFLOPs count of text models.")
FORCE_OPT = typer.Option(False, "--force", help="Replace existing outputs.")


@command(calib=CALIB)
def score(
    ctx: typer.Context, calib, path: Path = PATH_ARG,
    criteria: str = typer.Option("all", "--criteria", help=CRITERIA_HELP),
    criterion: str = typer.Option("entropy", "--criterion", help="Primary criterion: its ranks and removal order."),
    dtype: str = DTYPE_OPT, stack: Optional[str] = STACK_OPT, block_pattern: Optional[str] = PATTERN_OPT,
    params: str = typer.Option("2d", "--params", help="'2d' (weight matrices, as the paper) or 'all'."),
    bins: int = typer.Option(2048, "--bins", help="Histogram bins for hist_entropy."), seed: int = SEED_OPT,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write scores, ranks and metadata as JSON."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write one row per block as CSV."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write weight histograms at several depths (PNG)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Blocks scored in parallel (default: up to 2)."),
    aggregate: str = AGGREGATE_OPT,
    precision_report: bool = typer.Option(False, "--precision-report", help="Also show exact-value entropy under "
                                          "every --dtype view: distinct values, ranks and their agreement, and "
                                          "whether entropy is meaningful on this checkpoint."),
    force: bool = FORCE_OPT,
) -> None:
    """Score every block of a checkpoint from its weights alone, and show the removal order."""
    from ..report.console import show_scores
    from ..workflows import score_checkpoint

    bar, tick = progress("scoring blocks")
    with bar:
        result, written = score_checkpoint(
            path, {"json": json_out, "csv": csv_out, "plot": plot}, force=force, precision=precision_report,
            arguments=ctx.params, criteria=criteria, primary=criterion, dtype=dtype, stack=stack,
            block_pattern=block_pattern, params=params, bins=bins, seed=seed, workers=workers, aggregate=aggregate,
            progress=tick, calib=calib)
    for where, item in show_scores(result):
        (err if where == "err" else out).print(item, highlight=False)
    for path_written in written:
        say(f"wrote {path_written}")


@command(calib=CALIB)
def prune(
    ctx: typer.Context, calib, path: Path = PATH_ARG,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder, or for a single-file input a file of the "
                                 "same format (manifest beside it); must not exist unless --force."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of blocks to remove: round(R x depth)."),
    remove: Optional[int] = typer.Option(None, "--remove", help="Number of blocks to remove."),
    blocks: Optional[str] = typer.Option(None, "--blocks", help="Explicit blocks to remove, e.g. 3,7,9 (1-based)."),
    zero_based: bool = typer.Option(False, "--zero-based", help="Read --blocks/--protect as 0-based indices."),
    criterion: str = typer.Option("entropy", "--criterion", help="The one criterion ranking the blocks (`gardener "
                                  "criteria` lists them): " + ", ".join(registry.names())),
    ranking: Optional[Path] = typer.Option(None, "--ranking", help="Use a `gardener score --json` file's ranking."),
    protect: Optional[str] = typer.Option(None, "--protect", help="Blocks never removed, e.g. 1,12."),
    contiguous: bool = typer.Option(False, "--contiguous", help="Remove the contiguous span of blocks whose input "
                                    "and output are most alike (--criterion angular_distance, Gromov et al.)."),
    dtype: str = DTYPE_OPT, stack: Optional[str] = STACK_OPT, block_pattern: Optional[str] = PATTERN_OPT,
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Shard HF weights above this size."),
    frames: int = FRAMES_OPT, size: int = SIZE_OPT, seq_len: int = SEQ_OPT, seed: int = SEED_OPT,
    aggregate: str = AGGREGATE_OPT, force: bool = FORCE_OPT,
) -> None:
    """Remove blocks in one shot and write a shallower checkpoint in the input's own format."""
    from ..report.console import prune_messages
    from ..report.tables import prune_table
    from ..workflows import prune_checkpoint

    info = prune_checkpoint(path, out_dir, ratio=ratio, remove=remove, blocks=blocks, zero_based=zero_based,
                            criterion=criterion, ranking=ranking, protect=protect, dtype=dtype, stack=stack,
                            block_pattern=block_pattern, force=force, max_shard_size=max_shard_size,
                            spec=InputSpec(frames, size, seq_len), seed=seed, aggregate=aggregate,
                            arguments=ctx.params, contiguous=contiguous, calib=calib)
    out.print(prune_table(info))
    for message in prune_messages(info):
        warn(message)
    say(f"wrote {out_dir}" + (f" and {out_dir}.gardener.json" if out_dir.is_file() else ""))


@app.command()
def info(path: Path = PATH_ARG, stack: Optional[str] = STACK_OPT, block_pattern: Optional[str] = PATTERN_OPT,
         frames: int = FRAMES_OPT, size: int = SIZE_OPT, seq_len: int = SEQ_OPT) -> None:
    """Print the depth, stacks, parameters and GFLOPs of a checkpoint."""
    from ..report.tables import info_table
    from ..workflows import checkpoint_info

    info = checkpoint_info(path, stack, block_pattern, InputSpec(frames, size, seq_len))
    out.print(info_table(info))
    for message in info["warnings"]:
        warn(message)


@app.command()
def convert(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Original VideoMAE checkpoint (.pth/.pt/.bin/.safetensors)."),
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output HF directory (must not exist unless --force)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of VideoMAEConfig fields the tensors "
                                          "cannot tell (num_attention_heads, num_frames, image_size, ...)."),
    num_labels: Optional[int] = typer.Option(None, "--num-labels", help="Classes (checked against the head)."),
    seed: int = typer.Option(0, "--seed", help="Recorded for the manifest; conversion is deterministic."),
    force: bool = FORCE_OPT,
) -> None:
    """Convert an original VideoMAE checkpoint (finetuned or pretraining) into a transformers directory."""
    from ..convert import convert_videomae

    info = convert_videomae(path, out_dir, config=config, num_labels=num_labels, force=force, arguments=ctx.params)
    out.print(f"{info['architecture']}: {info['tensors']} tensors, {info['params'] / 1e6:.1f} M parameters, "
              f"{info['dtype']}", highlight=False)
    say(f"wrote {out_dir}")


@app.command("criteria")
def list_criteria() -> None:
    """List the registered criteria and which end of each is removed first."""
    from ..report.console import criteria_table

    out.print(criteria_table())


@app.command()
def version() -> None:
    """Print the versions of gardener and the libraries it relies on."""
    from ..manifest import versions

    for name, value in versions().items():
        out.print(f"{name} {value}", highlight=False)
