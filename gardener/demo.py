"""`gardener demo`: the whole paper in miniature on a CPU, with nothing downloaded.

Stages, each cached in the output folder so that a second run (or one after an interrupt)
reuses what is done: synthetic action videos -> masked VideoMAE pretraining of a 12-block
encoder -> data-free scores of every block -> the sensitivity oracle and the pruning-ratio
sweep (short finetuning per job) -> report.md with the paper's tables and figures.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import GardenerError
from .fileio import atomic_dir, write_text

PAPER_RATIOS = "8.3,25,41.7,58.3,75,91.7"
CACHE_BYTES = 1 << 30  # decoded videos kept in memory (the default demo's are about 63 MB)


@dataclass(frozen=True)
class DemoSettings:
    """The sizes of every stage: the default takes about 20 minutes on 2 CPU cores, quick about 3."""

    per_class: int = 40
    frames: int = 16
    size: int = 64
    classes: tuple[str, ...] = ("move_up", "move_down", "grow", "shrink", "fade_in", "fade_out", "bounce", "pass")
    model: dict = field(default_factory=dict)  # overrides of the tiny preset
    pretrain_steps: int = 500
    pretrain_lr: float = 1.5e-3  # per 256 clips, scaled by the batch
    finetune_steps: int = 30
    finetune_lr: float = 1e-3
    batch: int = 8
    ratios: str = PAPER_RATIOS
    random_seeds: int = 3


QUICK = DemoSettings(per_class=12, frames=16, size=32, classes=("move_up", "move_down", "grow", "shrink"),
                     model={"image_size": 32, "patch_size": 8, "hidden_size": 64, "num_attention_heads": 2,
                            "intermediate_size": 128, "decoder_hidden_size": 64, "decoder_num_attention_heads": 2,
                            "decoder_intermediate_size": 128},
                     pretrain_steps=30, finetune_steps=6, ratios="25,50,75", random_seeds=2)

NOTE = ("**What these numbers are.** A 12-block VideoMAE ({hidden} wide) pretrained here for {steps} steps with "
        "masked autoencoding on {videos} synthetic videos of moving, growing and fading shapes ({classes} classes, "
        "{frames} frames of {size} px), then finetuned for {ft} steps per pruned variant. They show the method end "
        "to end on a model that was really pretrained; they are **not** the paper's VideoMAE-B on UCF101, and "
        "with so short a finetuning budget the accuracies are noisy. Run the same commands on a real checkpoint "
        "and dataset for the paper's protocol (see the README).")


def _stage_done(path: Path) -> bool:
    return path.is_file()


def run_demo(out_dir: str | Path = "gardener-demo", *, quick: bool = False, seed: int = 0, force: bool = False,
             say: Callable[[str], None] = print, progress: Callable | None = None,
             job_progress: Callable | None = None, step_progress: Callable | None = None) -> Path:
    """Run (or finish) the demo in `out_dir`; returns the report's path."""
    from .data import frame_cache

    settings = DemoSettings() if not quick else QUICK
    # every stage reads the same few hundred small videos dozens of times: decode each once
    with frame_cache(CACHE_BYTES):
        return _run(settings, Path(out_dir), quick, seed, force, say, job_progress, step_progress)


def _run(settings: DemoSettings, out: Path, quick: bool, seed: int, force: bool, say: Callable,
         job_progress: Callable | None, step_progress: Callable | None) -> Path:
    import shutil

    from . import criteria, precision_report, score
    from .data.synthetic import make_dataset
    from .experiments.protocol import prepare, run_sensitivity, run_sweep
    from .report.experiment import write_report
    from .train import DataOptions, Recipe
    from .train.pretrain import PretrainRecipe, pretrain
    from .workflows import write_score_outputs

    marker = {"quick": quick, "seed": seed, "settings": asdict(settings)}
    stamp = out / "demo.json"
    if out.exists():
        if force:
            shutil.rmtree(out)
        elif not stamp.is_file():
            raise GardenerError(f"{out}: exists and is not a gardener demo folder; pass --force or another folder")
        elif json.loads(stamp.read_text()) != json.loads(json.dumps(marker)):
            raise GardenerError(f"{out}: holds a demo made with other settings (--quick/--seed); pass --force "
                                f"to start over or choose another folder")
    if not out.parent.is_dir():
        raise GardenerError(f"{out}: parent folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    write_text(stamp, json.dumps(marker, indent=2) + "\n", force=True)

    data = out / "data"
    if not _stage_done(data / "gardener.json"):
        say(f"1/5 writing {settings.per_class * len(settings.classes)} synthetic videos to {data}")
        with atomic_dir(data, force=True) as tmp:
            info = make_dataset(tmp, classes=settings.classes, per_class=settings.per_class, frames=settings.frames,
                                size=settings.size, seed=seed)
            write_text(tmp / "gardener.json", json.dumps({"count": info["count"], "classes": info["classes"],
                                                          "seed": seed}, indent=2) + "\n")
    else:
        say("1/5 synthetic videos: done before")
    options = DataOptions(data / "videos", split_dir=data / "splits", workers=0)

    encoder = out / "pretrain" / "encoder"
    if not _stage_done(encoder / "config.json"):
        say(f"2/5 masked pretraining of a 12-block VideoMAE for {settings.pretrain_steps} steps")
        resume = (out / "pretrain" / "checkpoints").is_dir()
        recipe = PretrainRecipe(batch_size=settings.batch, max_steps=settings.pretrain_steps,
                                warmup_steps=max(1, settings.pretrain_steps // 10),
                                base_lr=settings.pretrain_lr * 256 / settings.batch, save_every=100)
        pretrain(options, out / "pretrain", preset="tiny", config_overrides=settings.model, recipe=recipe,
                 sampling_rate=1, seed=seed, resume=resume, force=not resume, progress=step_progress)
    else:
        say("2/5 pretraining: done before")

    say("3/5 scoring every block with every criterion")
    result = score(encoder, "all", seed=seed, histograms=True)
    write_score_outputs(result, {"json": out / "scores.json", "csv": out / "scores.csv",
                                 "plot": out / "histograms.png"}, force=True, arguments={"seed": seed})

    say("4/5 sensitivity oracle and pruning-ratio sweep (cached per job)")
    finetune = Recipe(batch_size=settings.batch, max_steps=settings.finetune_steps, warmup_steps=2,
                      base_lr=settings.finetune_lr * 256 / settings.batch, layer_decay=0.75, drop_path=0.1,
                      classifier_dropout=0.0, save_every=1000)
    clip = {"frames": None, "size": None, "sampling_rate": 1, "test_clips": 1, "test_crops": 1,
            "min_crop_scale": 0.5}
    exp = prepare(encoder, out / "run", options, finetune, clip, seed)
    run_sensitivity(exp, progress=job_progress, job_progress=step_progress)
    run_sweep(exp, criteria.sweep_criteria(), settings.ratios, settings.random_seeds, progress=job_progress,
              job_progress=step_progress)

    say("5/5 writing the report")
    config = json.loads((encoder / "config.json").read_text())
    note = NOTE.format(hidden=config["hidden_size"], steps=settings.pretrain_steps,
                       videos=settings.per_class * len(settings.classes), classes=len(settings.classes),
                       frames=settings.frames, size=settings.size, ft=settings.finetune_steps)
    loss = json.loads((out / "pretrain" / "gardener.json").read_text()).get("loss") or {}
    if loss:
        note += (f" Pretraining ended at a reconstruction loss of {loss['final_loss']:.3f}, against "
                 f"{loss['trivial_loss']:.3f} for the trivial answer that ignores the visible patches: "
                 + ("the encoder learnt from them." if loss["learned"] else
                    "the encoder learnt little from them, so these are close to the scores of an untrained model "
                    "(BENCHMARKS.md, pretraining diagnosis)."))
    precision = precision_report(encoder)
    note += (f" Exact-value entropy on this encoder (stored as {'/'.join(precision['stored_dtypes'])}): "
             f"{precision['verdict']} (`gardener score --precision-report`).")
    return write_report(out / "run", out=out / "report.md", note=note)
