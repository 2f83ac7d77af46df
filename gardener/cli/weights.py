"""Commands on weights alone: score, prune, info, convert, criteria, families, version."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..cost import InputSpec
from ._app import app, err, out, progress, say, warn
from .options import CALIB, CUT, INPUT_SPEC, RANKING, SCORING, WRITE, command

PANEL = "Weights"  # the heading these commands are listed under in `gardener --help`
PATH_ARG = typer.Argument(..., metavar="CHECKPOINT", help="HF model directory, .safetensors, or .pth/.pt/.bin "
                          "state dict.")
STACK_OPT = typer.Option(None, "--stack", help="Stack to use (default: the encoder).")
PATTERN_OPT = typer.Option(None, "--block-pattern", help="Regex with the block number in a group.")
DTYPE_OPT = typer.Option("stored", "--dtype", help="Precision view: stored, float16, bfloat16 or float32.")
AGGREGATE_OPT = typer.Option("mean", "--aggregate", help="How spectral criteria combine a block's matrices: mean, "
                             "min, max or weighted (by parameter count).")
FRAMES_OPT = typer.Option(16, "--frames", help="Video frames for the GFLOPs count.")
SIZE_OPT = typer.Option(224, "--size", help="Image/frame size for the GFLOPs count.")
SEQ_OPT = typer.Option(128, "--seq-len", help="Sequence length for the GFLOPs count of text models.")
FORCE_OPT = typer.Option(False, "--force", help="Replace existing outputs.")


@command(rich_help_panel=PANEL, scoring=SCORING, calib=CALIB)
def score(
    ctx: typer.Context, scoring, calib, path: Path = PATH_ARG,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write scores, ranks and metadata as JSON."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write one row per block as CSV."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write weight histograms at several depths (PNG)."),
    precision_report: bool = typer.Option(False, "--precision-report", help="Also show exact-value entropy under "
                                          "every --dtype view: distinct values, ranks and their agreement, and "
                                          "whether entropy is meaningful on this checkpoint."),
    force: bool = FORCE_OPT,
) -> None:
    """Score every block of a checkpoint from its weights alone, and show the removal order."""
    from ..report.console import show_scores
    from ..scoring import ScoreOutputs, score_checkpoint

    outputs = ScoreOutputs(json=json_out, csv=csv_out, plot=plot, force=force)
    bar, tick = progress("scoring blocks")
    with bar:
        result, written = score_checkpoint(path, replace(scoring, calib=calib), outputs, precision=precision_report,
                                           arguments=ctx.params, progress=tick)
    for where, item in show_scores(result):
        (err if where == "err" else out).print(item, highlight=False)
    for path_written in written:
        say(f"wrote {path_written}")


@command(rich_help_panel=PANEL, cut=CUT, ranking=RANKING, calib=CALIB, write=WRITE, spec=INPUT_SPEC)
def prune(
    ctx: typer.Context, cut, ranking, calib, write, spec, path: Path = PATH_ARG,
    out_dir: Path = typer.Option(..., "-o", "--out", help="Output folder, or for a single-file input a file of the "
                                 "same format (manifest beside it); must not exist unless --force."),
    force: bool = FORCE_OPT,
) -> None:
    """Remove blocks in one shot and write a shallower checkpoint in the input's own format."""
    from ..pruning import prune_checkpoint
    from ..report.console import prune_messages
    from ..report.tables import prune_table

    from ..scoring import reporting

    bar, tick = progress("scoring blocks")
    with bar, reporting(tick):
        info = prune_checkpoint(path, out_dir, cut, replace(ranking, calib=calib),
                                replace(write, force=force, spec=spec), arguments=ctx.params)
    out.print(prune_table(info))
    for message in prune_messages(info):
        warn(message)
    say(f"wrote {out_dir}" + (f" and {out_dir}.gardener.json" if out_dir.is_file() else ""))


@app.command(rich_help_panel=PANEL)
def info(path: Path = PATH_ARG, stack: Optional[str] = STACK_OPT, block_pattern: Optional[str] = PATTERN_OPT,
         frames: int = FRAMES_OPT, size: int = SIZE_OPT, seq_len: int = SEQ_OPT,
         as_json: bool = typer.Option(False, "--json", help="Print what info finds as JSON instead.")) -> None:
    """Print the depth, stacks, parameters and GFLOPs of a checkpoint."""
    from ..info import checkpoint_info
    from ..report.tables import info_table

    info = checkpoint_info(path, stack, block_pattern, InputSpec(frames, size, seq_len))
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(info_table(info))
        if info["gflops"] is not None:
            out.print(gflops_input_line(info["gflops_input"]), highlight=False, markup=False)
    for message in info["warnings"]:
        warn(message)


def gflops_input_line(shown: dict) -> str:
    """What a GFLOPs figure counts: one forward pass on one input of the sizes used, and the flags that
    change them (a figure for 224 px means little at 112 px)."""
    if shown["input"] == "video":
        what = f"one clip of {shown['frames']} frames at {shown['size']}x{shown['size']} px (--frames, --size)"
    elif shown["input"] == "image":
        what = f"one {shown['size']}x{shown['size']} px image (--size)"
    else:
        what = f"one sequence of {shown['seq_len']} tokens (--seq-len)"
    return f"GFLOPs of one forward pass on {what}"


@app.command(rich_help_panel=PANEL)
def convert(
    ctx: typer.Context,
    path: Path = typer.Argument(..., metavar="CHECKPOINT", help="Original VideoMAE checkpoint "
                                "(.pth/.pt/.bin/.safetensors)."),
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


@app.command("criteria", rich_help_panel=PANEL)
def list_criteria() -> None:
    """List the registered criteria and which end of each is removed first."""
    from ..report.console import criteria_table

    out.print(criteria_table())


@app.command("families", rich_help_panel=PANEL)
def list_families(as_json: bool = typer.Option(False, "--json", help="Print the families as JSON instead.")) -> None:
    """List the registered model families (in the order they are tried), their stacks and model types."""
    from ..families import summaries

    found = summaries()
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        out.print(families_table(found))


def families_table(found: list[dict]):
    """The registered families: name, stacks (with their role), model types (with their input) and what each
    covers; text as it is (a plugin's description may hold brackets)."""
    from rich.table import Table
    from rich.text import Text

    table = Table("name", "stacks", "model types", "what it covers", header_style="bold")
    for family in found:
        stacks = ", ".join(f"{k['name']} ({k['role']})" for k in family["stacks"])
        types = ", ".join(f"{name} ({kind})" for name, kind in family["model_types"].items()) or "-"
        table.add_row(*(Text(cell) for cell in (family["name"], stacks, types, family["description"])))
    return table


@app.command(rich_help_panel=PANEL)
def version() -> None:
    """Print the versions of gardener and the libraries it relies on."""
    from ..manifest import versions

    for name, value in versions().items():
        out.print(f"{name} {value}", highlight=False)
