"""Option groups: the fields of the library's settings dataclasses as command-line options, declared once.

A command names its groups (`@command(data=DATA, recipe=FINETUNE_RECIPE)`); it receives the
built dataclasses (`data: DataOptions`, `recipe: Recipe`) instead of a flat list of options.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from ..scoring.settings import CalibOptions
from ..data.clips import ClipOptions
from ..experiments.launch import Launch
from ..settings import with_file
from ._app import SETTING_FLAGS, app

# How each settings field appears on the command line: its help, and its flag where it is not --field-name.
HELP = {
    "data": "Class folders ROOT/<class>/<video>, a UCF101/HMDB51 video root (with --split-dir), or a .csv/.jsonl "
            "manifest of path,label.",
    "split_dir": "UCF101 ucfTrainTestlist/ or HMDB51 split folder.",
    "fold": "Split number of UCF101/HMDB51.",
    "eval_data": "Separate test data (default: the test split of --data).",
    "val_fraction": "Held-out fraction per class for class folders without train/ and test/ subfolders.",
    "strict": "Unreadable videos are an error instead of being skipped.",
    "workers": "DataLoader processes decoding video.",
    "frames": "Frames per clip (default: the model's num_frames).",
    "size": "Clip size in pixels (default: the model's image_size).",
    "sampling_rate": "Stride between sampled frames.",
    "test_clips": "Evenly spaced clips per video at evaluation.",
    "test_crops": "Spatial crops per clip at evaluation.",
    "min_crop_scale": "Smallest random-resized-crop area.",
    "epochs": "Training length in epochs.",
    "max_steps": "Training length in optimizer steps.",
    "batch_size": "Clips per process per micro-batch.",
    "num_sample": "Augmented clips per decoded video (VideoMAE's repeated augmentation: 2 halves decoding per "
                  "clip; batches hold N x videos).",
    "grad_accum": "Micro-batches per optimizer step.",
    "base_lr": "Base learning rate per 256 clips (scaled by the total batch).",
    "min_lr": "Final learning rate per 256 clips.",
    "warmup_epochs": "Linear warmup length.",
    "warmup_steps": "Warmup in steps (overrides --warmup-epochs).",  # where there is none: _warmup_help
    "weight_decay": "AdamW weight decay (not on norms/biases).",
    "layer_decay": "Layer-wise lr decay.",
    "label_smoothing": "Label smoothing.",
    "drop_path": "Stochastic depth at the last block.",
    "classifier_dropout": "Dropout before the classifier.",
    "mix": "Mixup 0.8 / CutMix 1.0.",
    "clip_grad": "Gradient norm clipping.",
    "bf16": "bf16 autocast on GPU.",
    "compile": "torch.compile the model (a first step of compiling, then faster steps; see BENCHMARKS.md).",
    "gradient_checkpointing": "Save memory.",
    "eval_every": "Evaluate every N steps; keeps best/.",
    "save_every": "Checkpoint every N steps.",
    "keep_last": "Checkpoints kept.",
    "mask_ratio": "Share of each frame's patches hidden (tubes).",
    "shard": "i/n: run every n-th job starting at the i-th (1-based).",
    "retries": "Try a failed job this many more times before it counts as failed (a user mistake is not retried).",
    "stale_after": "Seconds without a heartbeat after which another worker takes over a job's claim (its holder "
                   "died); the job resumes from its last checkpoint.",
    "launcher": "Who runs the jobs: none (this process), local (--local-workers worker processes here, one GPU "
                "each) or slurm (a job array through submitit; needs the \\[slurm] extra).",
    "local_workers": "Worker processes of --launcher local.",
    "gpus_per_job": "GPUs per SLURM array task (one job each).",
    "timeout_min": "Time limit of a SLURM array task in minutes; a job that reaches it is requeued and resumes from "
                   "its checkpoint.",
    "partition": "SLURM partition.",
    "array_parallelism": "Array tasks SLURM runs at once.",
    "sbatch": "Extra sbatch parameter KEY=VALUE (repeatable), e.g. --sbatch account=myproject --sbatch mem=64G.",
    "submitit_cluster": "submitit's cluster for --launcher slurm: slurm, or local / debug to run the same array on "
                        "this machine (a try-out without a cluster).",
    "keep_models": "Keep each job's pruned and finetuned models.",
    "calib_data": "Calibration data for block_influence, angular_distance and skip_loss: any dataset finetune "
                  "accepts; for text models a .txt file or a .jsonl of {\"text\": ...} lines (tokenised with the "
                  "checkpoint's own tokenizer) or of {\"input_ids\": [...], \"attention_mask\": [...]} lines.",
    "calib_seq_len": "Tokens per sequence cut from raw text calibration data.",
    "tokens": "Which tokens angular_distance reads: last (the last real token of each sequence; Gromov et al., the "
              "default for causal LMs), mean (every real token; the default for encoders and video) or cls (the "
              "first token: a class token).",
    "last_output": "The last block's output as output_hidden_states returns it (hidden_states: after the final norm "
                   "of LLaMA- and GPT-2-style decoders, as ShortGPT and PruneMe read it) or the block's own output "
                   "(block).",
    "calib_clips": "Clips (or sequences) the calibration pass reads.",
    "sequential": "Run the calibration pass block by block, one block's weights in memory at a time (a model larger "
                  "than memory): the same figures; skip_loss for causal language models only.",
    "calib_dtype": "Precision of the calibration pass: float32 or bfloat16 (half the memory).",
    "device_map": "Accelerate's big-model placement of a model larger than one GPU: auto (every GPU, then CPU "
                  "memory, then disk), balanced, balanced_low_0 or sequential.",
    "max_memory": "With --calib-device-map: what each device may hold, e.g. 0=70GiB,1=70GiB,cpu=100GiB.",
    "span": "Blocks per span for angular_distance (Gromov et al.: the distance from a block's input to the input "
            "n blocks on).",
    "calib_batch": "Clips per batch of the calibration pass.",
    "oracle_seeds": "Repeat each oracle job with K finetuning seeds (seed, seed+1, ...) and average them, so that "
                    "its ranking is less noisy.",
}
FLAGS = {"base_lr": "--lr", "bf16": "--bf16/--no-bf16"}
PARAMS = {"base_lr": "lr"}  # the Python name of an option whose flag is not its field name
SETTING_FLAGS.update({name: flag.split("/")[0] for name, flag in FLAGS.items()})


@dataclass(frozen=True)
class Jobs:
    """How an experiment's jobs run: which share of them here, and what each keeps."""

    shard: Optional[str] = None
    keep_models: bool = False
    oracle_seeds: int = 1
    retries: int = 1
    stale_after: float = 300.0


@dataclass(frozen=True)
class Group:
    """Some fields of a settings dataclass, shown as options (with command-specific defaults);
    `file_flag` adds an option naming a JSON file whose fields go on top (e.g. --recipe)."""

    cls: type
    fields: tuple[str, ...]
    defaults: dict = field(default_factory=dict)
    panel: str = "Options"  # the heading it is listed under in --help
    file_flag: str | None = None
    file_help: str = ""
    helps: dict = field(default_factory=dict)  # help texts of this group's own (over HELP's)
    flags: dict = field(default_factory=dict)  # a field's flag where it is not --field-name (over FLAGS)
    parse: dict = field(default_factory=dict)  # field -> (type on the command line, text -> value)

    def __post_init__(self):
        SETTING_FLAGS.update({name: flag.split("/")[0] for name, flag in self.flags.items()})

    def but(self, *drop: str, **defaults) -> Group:
        """The same group without some fields, or with other defaults."""
        kept = tuple(f for f in self.fields if f not in drop)
        return dataclasses.replace(self, fields=kept, defaults={**self.defaults, **defaults})

    def parameters(self) -> list[inspect.Parameter]:
        hints = typing.get_type_hints(self.cls)
        known = {f.name: f for f in dataclasses.fields(self.cls)}
        params = [_option(name, self.parse[name][0] if name in self.parse else hints[name],
                          self.defaults.get(name, known[name].default), self.panel, self.helps.get(name, HELP.get(name)),
                          self.flags.get(name))
                  for name in self.fields]
        if self.file_flag:
            params.append(_parameter(_file_param(self.file_flag), Optional[Path],
                                     typer.Option(None, self.file_flag, help=self.file_help, rich_help_panel=self.panel)))
        return params

    def build(self, values: dict) -> Any:
        """The dataclass from the parsed options (taken out of `values`)."""
        fields = {name: values.pop(_param(name, self.flags.get(name))) for name in self.fields}
        for name, (_, parse) in self.parse.items():
            fields[name] = parse(fields[name]) if name in fields and fields[name] is not None else fields.get(name)
        path = values.pop(_file_param(self.file_flag)) if self.file_flag else None
        return with_file(self.cls, fields, path, self.file_flag or "")


def _file_param(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_") + "_file"


def _plain(hint: Any) -> Any:
    """`X | None` as typing.Optional[X], which every typer version reads."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return Optional[next(a for a in args if a is not type(None))]
    return hint


def _param(name: str, flag: str | None) -> str:
    """The Python name of a field's option: its flag's, where the group gives it one."""
    return flag.split("/")[0].lstrip("-").replace("-", "_") if flag else PARAMS.get(name, name)


def _option(name: str, hint: Any, default: Any, panel: str, help: str | None, flag: str | None) -> inspect.Parameter:
    shown = flag or FLAGS.get(name, "--" + name.replace("_", "-"))
    value = ... if default is dataclasses.MISSING else default
    if isinstance(value, tuple):  # a parsed field's default, as the command line writes it
        value = ",".join(map(str, value)) or None
    return _parameter(_param(name, flag), _plain(hint), typer.Option(value, *shown.split(" "), help=help,
                                                                     rich_help_panel=panel))


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def command(name: str | None = None, *, rich_help_panel: str | None = None, **groups: Group):
    """Register a command whose arguments named in `groups` are built from those option groups; it is listed
    under `rich_help_panel` in `gardener --help`."""
    def wrap(fn):
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name not in groups]
        params = own + [p for group in groups.values() for p in group.parameters()]

        @functools.wraps(fn)
        def run(**values):
            built = {key: group.build(values) for key, group in groups.items()}
            return fn(**values, **built)

        run.__signature__ = inspect.Signature(params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return app.command(name, rich_help_panel=rich_help_panel)(run)
    return wrap


def _warmup_help(recipe: type, source: str = "") -> str:
    """--warmup-steps's help on a command without --warmup-epochs: the warmup it replaces is the recipe's
    default number of epochs (help must not name an option the command does not have)."""
    epochs = next(f.default for f in dataclasses.fields(recipe) if f.name == "warmup_epochs")
    return f"Warmup in steps (default: {source}{epochs:g} epochs' worth)."


def _groups():
    """The groups of the training settings (gardener.train imports no torch at module level)."""
    from ..train import DataOptions, Recipe
    from ..train.pretrain import PretrainRecipe

    data = Group(DataOptions, ("data", "split_dir", "fold", "eval_data", "val_fraction", "strict", "workers"), panel="Data")
    finetune = Group(Recipe, ("epochs", "max_steps", "batch_size", "num_sample", "grad_accum", "base_lr", "min_lr",
                              "warmup_epochs", "warmup_steps", "weight_decay", "layer_decay", "label_smoothing",
                              "drop_path", "classifier_dropout", "mix", "clip_grad", "bf16", "compile",
                              "gradient_checkpointing", "eval_every", "save_every", "keep_last"), panel="Recipe")
    experiment = Group(Recipe, ("epochs", "max_steps", "batch_size", "grad_accum", "base_lr", "warmup_steps",
                                "layer_decay", "drop_path", "classifier_dropout"), panel="Recipe", file_flag="--recipe",
                       file_help="JSON of finetuning recipe fields; overrides the options.",
                       helps={"warmup_steps": _warmup_help(Recipe, "the --recipe file's warmup_epochs, else ")})
    pretrain = Group(PretrainRecipe, ("epochs", "max_steps", "batch_size", "grad_accum", "base_lr", "warmup_steps",
                                      "mask_ratio", "save_every", "compile"), panel="Recipe",
                     helps={"warmup_steps": _warmup_help(PretrainRecipe)})
    return data, finetune, experiment, pretrain


DATA, FINETUNE_RECIPE, EXPERIMENT_RECIPE, PRETRAIN_RECIPE = _groups()
CLIPS = Group(ClipOptions, tuple(f.name for f in dataclasses.fields(ClipOptions)), panel="Clips")
JOBS = Group(Jobs, ("shard", "keep_models", "oracle_seeds", "retries", "stale_after"), panel="Jobs")
LAUNCH = Group(Launch, tuple(f.name for f in dataclasses.fields(Launch)), panel="Cluster")
CALIB = Group(CalibOptions, ("calib_data", "calib_clips", "span", "calib_batch", "calib_seq_len", "tokens",
                             "last_output", "sequential", "calib_dtype", "device_map", "max_memory"),
              panel="Calibration", flags={"sequential": "--calib-sequential", "device_map": "--calib-device-map",
                                          "max_memory": "--calib-max-memory"})


def _blocks(flag: str, blank: tuple | None = None):
    """Block numbers '3,7,9' as a tuple of ints (the library checks them against the stack's depth); a
    blank value is `blank` when that is given (--protect "" protects nothing)."""
    def parse(text: str) -> tuple[int, ...]:
        from ..pruning import block_list

        return blank if blank is not None and not text.strip() else block_list(text, flag)
    return (Optional[str], parse)


def _weight_groups():
    """The groups of scoring and pruning (`ScoreSettings`, `Cut`, `WriteOptions`, `InputSpec`)."""
    from ..cost import InputSpec
    from ..pruning import Cut, WriteOptions
    from ..scoring import ScoreSettings

    helps = {
        "criteria": "Comma list or 'all' (every data-free criterion); `gardener criteria` lists them.",
        "primary": "Primary criterion: its ranks and removal order.",
        "dtype": "Precision view: stored, float16, bfloat16 or float32.", "stack": "Stack to use (default: the encoder).",
        "block_pattern": "Regex with the block number in a group.", "seed": "Seed for the random criterion.",
        "params": "'2d' (weight matrices, as the paper) or 'all'.", "bins": "Histogram bins for hist_entropy.",
        "workers": "Blocks scored in parallel (default: up to 2).",
        "aggregate": "How spectral criteria combine a block's matrices: mean, min, max or weighted (by parameter count).",
    }
    scoring = Group(ScoreSettings, ("criteria", "primary", "dtype", "stack", "block_pattern", "params", "bins", "seed",
                                    "workers", "aggregate"), helps=helps, flags={"primary": "--criterion"},
                    parse={"criteria": (str, str)})
    ranking = scoring.but("criteria", "params", "bins", "workers")
    ranking = dataclasses.replace(ranking, helps={**helps, "primary": "The one criterion ranking the blocks "
                                                  "(`gardener criteria` lists them)."})
    cut = Group(Cut, ("ratio", "remove", "blocks", "zero_based", "protect", "ranking", "contiguous", "allow_round_off"),
                helps={
        "ratio": "Fraction of blocks to remove: round(R x depth).", "remove": "Number of blocks to remove.",
        "blocks": "Explicit blocks to remove, e.g. 3,7,9 (1-based).",
        "zero_based": "Read --blocks/--protect as 0-based indices.", "protect": "Blocks never removed, e.g. 1,12.",
        "ranking": "Use a `gardener score --json` file's ranking.",
        "contiguous": "Remove the contiguous span of blocks whose input and output are most alike (--criterion "
                      "angular_distance, Gromov et al.).",
        "allow_round_off": "Prune by an exact-value criterion (entropy) even where nearly every weight value is "
                           "distinct and round-off decides its ranking (refused otherwise)."}, parse={"blocks": _blocks("blocks"), "protect": _blocks("protect", blank=())})
    write = Group(WriteOptions, ("max_shard_size",), defaults={"max_shard_size": "5GB"},
                  helps={"max_shard_size": "Shard HF weights above this size."}, parse={"max_shard_size": (str, str)})
    spec = Group(InputSpec, ("frames", "size", "seq_len"), helps={
        "frames": "Video frames for the GFLOPs count.", "size": "Image/frame size for the GFLOPs count.",
        "seq_len": "Sequence length for the GFLOPs count of text models."})
    return scoring, ranking, cut, write, spec


SCORING, RANKING, CUT, WRITE, INPUT_SPEC = _weight_groups()
