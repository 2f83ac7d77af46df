"""`gardener demo`: the paper's pipeline in miniature on a CPU, with nothing downloaded.

The paper scored VideoMAE-B pretrained *and finetuned* on Kinetics-400 (stored in half
precision), pruned it, and finetuned the pruned encoders on UCF101. The demo does the same at
a size a laptop trains in minutes: synthetic action videos play Kinetics (the source task: more
clips) and the same actions in a new scene play UCF101 (the target task: 10 training clips per
class, a large test split so that accuracies are measured to about a point); a 12-block VideoMAE
is pretrained with masked autoencoding, finetuned on the source task, exported in float16 and
scored; the oracle (each block removed, K finetuning seeds) and the pruning-ratio sweep run on
the target task; the report carries every accuracy's interval. Each stage is cached in the
output folder, so a second run (or one after an interrupt) reuses what is done.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import GardenerError
from .experiments.launch import Launch
from .demo_stages import Hooks, Stages, claim
from .fileio import atomic_dir, write_text

PAPER_RATIOS = "8.3,25,41.7,58.3,75,91.7"
# Wall times on a quiet 2-core VM, each with the date it was measured; README's quickstart gives the same
# figures (a test checks). The default's is that of 2026-12-06 (BENCHMARKS.md); the quick one's is older.
RUN_TIMES = {"default": "18 min 39 s", "default_date": "2026-12-06", "quick": "2 min 19 s", "quick_date": "2026-12-07",
             "image": "5 min 19 s", "text": "2 min 35 s", "tasks_date": "2026-12-07"}
CACHE_BYTES = 1 << 30  # decoded videos kept in memory (the default demo's are about 100 MB)
ACTIONS = ("move_up", "move_down", "grow", "shrink", "fade_in", "fade_out", "bounce", "pass")
# 12 blocks of width 32 on 8 frames of 32 px (64 tokens): a few hundred clips/s on 2 CPU cores
MODEL = {"image_size": 32, "patch_size": 8, "num_frames": 8, "tubelet_size": 2, "hidden_size": 32,
         "num_attention_heads": 2, "intermediate_size": 128, "decoder_num_hidden_layers": 1,
         "decoder_hidden_size": 32, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 128}


@dataclass(frozen=True)
class DemoSettings:
    """The sizes of every stage (learning rates are per step's batch, not per 256 clips)."""

    classes: tuple[str, ...] = ACTIONS
    frames: int = 8
    size: int = 32
    model: dict = field(default_factory=lambda: dict(MODEL))
    source_per_class: int = 80  # 1 in 4 is a test video
    target_train: int = 10  # per class
    target_test: int = 600  # per class: 4,800 test videos, so that one accuracy is measured to about a point
    pretrain_steps: int = 200
    pretrain_lr: float = 1e-3
    source_steps: int = 600
    source_lr: float = 2e-3
    source_batch: int = 32
    source_drop_path: float = 0.1  # stochastic depth, as VideoMAE-B's Kinetics finetuning (0 at block 1)
    target_steps: int = 30
    target_lr: float = 3e-3
    target_batch: int = 16
    oracle_seeds: int = 3
    ratios: str = PAPER_RATIOS
    random_seeds: int = 10  # random orders: how much they differ is part of the random row's interval
    calib_clips: int = 64  # source-task clips the calibration criteria read (the peers' default order)
    heal_steps: int = 5  # the healing oracle: steps of finetuning after each removal, from the target model


QUICK = DemoSettings(source_per_class=24, target_train=6, target_test=25, pretrain_steps=20, source_steps=150,
                     target_steps=20, oracle_seeds=1, ratios="25,50,75", random_seeds=3, calib_clips=16,
                     heal_steps=3)


def run_demo(out_dir: str | Path = "gardener-demo", *, quick: bool = False, seed: int = 0, force: bool = False,
             replicates: int = 1, launch: Launch | None = None, say: Callable[[str], None] = print,
             job_progress: Callable | None = None, step_progress: Callable | None = None,
             stage_progress: Callable[[str], None] | None = None, task: str = "video") -> Path | None:
    """Run (or finish) the demo in `out_dir`; returns the report's path, None while jobs wait in a queue.

    With `replicates` N > 1 the whole study runs N times on independently trained models (demo_replicates.py)
    and their verdicts are pooled into `out_dir/pooled.md`, whose path is returned. `launch` says who runs the
    oracles' and the sweep's jobs: this process (the default), local worker processes, or a SLURM array, after
    which the same command, run again, picks up their results and writes the reports. The progress callbacks
    hear of each job, each training step and each stage by name. `task` "image" or "text" runs the same study on
    a tiny image classifier or language model instead (demo_tasks.py)."""
    from .experiments.launchers import launcher_for
    from .settings import check_number

    check_number("--seed", seed, 0)
    check_number("--replicates", replicates, 1)
    launch = (launch or Launch()).check()
    launcher_for(launch).prepare(sharded=False)
    if task not in DEMO_TASKS:
        raise GardenerError(f"--task {task!r}: expected one of {', '.join(DEMO_TASKS)}")
    settings = QUICK if quick else DemoSettings()
    hooks = Hooks(job_progress, step_progress, stage_progress)

    def one(folder: Path, k: int) -> Path | None:
        if task != "video":
            from .demo_tasks import run_task_demo

            return run_task_demo(folder, task, quick, seed + k - 1, force, launch, say, hooks)
        return one_model(folder, settings, quick, seed + k - 1, force, launch, say, hooks)
    if replicates == 1:
        return one(Path(out_dir), 1)
    from .demo_replicates import run_replicates

    return run_replicates(Path(out_dir), replicates, one, seed, say)


DEMO_TASKS = ("video", "image", "text")


def one_model(out: Path, settings: DemoSettings, quick: bool, seed: int, force: bool, launch: Launch,
              say: Callable, hooks: Hooks = Hooks()) -> Path | None:
    """The whole study on one trained model in `out`: its report, or None while its jobs wait in a queue."""
    from .data import frame_cache

    claim(out, {"quick": quick, "seed": seed, "settings": asdict(settings)}, force)
    # every stage reads the same few thousand small videos many times: decode each once
    with frame_cache(CACHE_BYTES):
        return _run(settings, out, seed, launch, Stages(out, say, 7, hooks))


def _run(settings: DemoSettings, out: Path, seed: int, launch: Launch, stages: Stages) -> Path | None:
    from . import criteria
    from .demo_notes import note, precision_of, precision_parts
    from .experiments.launchers import run_to_end
    from .experiments.protocol import prepare
    from .experiments.sweep import run_sweep
    from .report.experiment import write_report
    from .report.oracles import between_parts
    from .scoring import CalibOptions, ScoreSettings

    source, target = _make_data(out / "data", settings, seed, stages)
    encoder = _pretrain(out / "pretrain", source, settings, seed, stages)
    released = _source_model(out / "source", encoder, source, settings, seed, stages)
    stages.start("precision", "exact-value entropy of the float16 checkpoint and of its float32 original")
    precision = precision_of(released, out / "source" / "model")
    stages.end()
    stages.start("experiments", f"oracle ({settings.oracle_seeds} seed(s) per block) and pruning-ratio sweep on the "
                                f"target task, calibration criteria on {settings.calib_clips} source clips "
                                f"(cached per job)")
    exp = prepare(released, out / "run", target, _target_recipe(settings), _CLIP, seed,
                  oracle_seeds=settings.oracle_seeds, launch=launch)
    # the sweep's criteria include the oracle: it runs first, and one scoring pass serves both
    swept = run_to_end(exp, lambda: run_sweep(
        exp, criteria.sweep_criteria() + criteria.needing_data(), settings.ratios, settings.random_seeds,
        ScoreSettings(calib=CalibOptions(source.data, calib_clips=settings.calib_clips)),
        progress=stages.hooks.job, job_progress=stages.hooks.step), stages.say)
    stages.end()
    between = _healing_oracle(out, exp.run, released, target, settings, seed, launch, stages)
    if swept is None or between is None:
        stages.say(f"{out}: jobs wait in the queue (`gardener status {out / 'run'}`, `gardener status "
                   f"{out / 'heal'}`); run the same command again once they are done to write the report")
        return None
    stages.start("report", "writing the report")
    report = write_report(out / "run", out=out / "report.md", note=note(settings, out),
                          extra=precision_parts(precision), after_oracles=between_parts(between))
    stages.end()
    return report


def _healing_oracle(out: Path, full_run, released: Path, target, settings: DemoSettings, seed: int, launch: Launch,
                    stages: Stages) -> dict | None:
    """The cheap oracle beside the full one: the unpruned model finetuned on the target task, then each block
    removed from it and healed for a few steps; its agreement with the full oracle and what each cost (None
    while the jobs of either wait in a queue)."""
    from .experiments.agreement import oracle_agreement
    from .experiments.launchers import run_to_end
    from .experiments.oracle import run_sensitivity
    from .experiments.protocol import prepare
    from .experiments.results import HEALING, ORACLE, oracle_cost
    from .train import finetune

    model = out / "target" / "model"
    stages.start("healing", f"healing oracle: the unpruned model finetuned on the target task, then each block "
                            f"removed and healed for {settings.heal_steps} steps (cached per job)")
    if not (out / "target" / "gardener.json").is_file():
        resume = (out / "target" / "checkpoints").is_dir()
        finetune(released, out / "target", target, _target_recipe(settings), seed=seed, resume=resume,
                 force=not resume, progress=stages.hooks.step, **_CLIP)
    stages.relabel("healing oracle")
    exp = prepare(model, out / "heal", target, _target_recipe(settings), _CLIP, seed,
                  oracle_seeds=settings.oracle_seeds, heal_steps=settings.heal_steps, launch=launch)
    healed = run_to_end(exp, lambda: run_sensitivity(exp, progress=stages.hooks.job, job_progress=stages.hooks.step,
                                                     heal_steps=settings.heal_steps), stages.say)
    stages.end()
    if healed is None or not (full_run.path / "sensitivity.json").is_file():
        return None
    full = json.loads((full_run.path / "sensitivity.json").read_text())
    return {**oracle_agreement(full, healed["table"]), "cost": {"full": oracle_cost(full_run, ORACLE),
                                                               "healing": oracle_cost(exp.run, HEALING)}}


# the clips every stage cuts: the whole 8-frame video, no crop (a flip only), one view at evaluation
_CLIP = {"frames": None, "size": None, "sampling_rate": 1, "test_clips": 1, "test_crops": 1, "min_crop_scale": 1.0}


def _make_data(root: Path, settings: DemoSettings, seed: int, stages: Stages):
    """The source task (the Kinetics role) and the target task (the UCF101 role) as real .mp4 files."""
    from .data.synthetic import make_dataset
    from .train import DataOptions

    tasks = {"source": dict(per_class=settings.source_per_class),
             "target": dict(per_class=settings.target_train, test_per_class=settings.target_test)}
    todo = [name for name in tasks if not (root / name / "gardener.json").is_file()]
    count = sum(len(settings.classes) * (t["per_class"] + t.get("test_per_class", 0)) for n, t in tasks.items()
                if n in todo)
    stages.start("data", f"writing {count} synthetic videos (source and target tasks) to {root}" if todo else None)
    root.mkdir(exist_ok=True)
    for name in todo:
        with atomic_dir(root / name, force=True) as tmp:
            info = make_dataset(tmp, classes=settings.classes, frames=settings.frames, size=settings.size,
                                seed=seed, domain=name, **tasks[name])
            write_text(tmp / "gardener.json", json.dumps({"count": info["count"], "classes": info["classes"],
                                                          "domain": name, "seed": seed, **tasks[name]}, indent=2) + "\n")
    stages.end()
    return tuple(DataOptions(root / n / "videos", split_dir=root / n / "splits", workers=0) for n in tasks)


def _pretrain(folder: Path, data, settings: DemoSettings, seed: int, stages: Stages) -> Path:
    """Masked autoencoding on the source task's training videos (short: its loss is reported honestly)."""
    from .train.pretrain import PretrainRecipe, pretrain

    encoder = folder / "encoder"
    done = (encoder / "config.json").is_file()
    stages.start("pretrain", None if done else f"masked pretraining of a 12-block VideoMAE for "
                                               f"{settings.pretrain_steps} steps on the source task")
    if not done:
        resume = (folder / "checkpoints").is_dir()
        recipe = PretrainRecipe(batch_size=settings.source_batch, max_steps=settings.pretrain_steps,
                                warmup_steps=max(1, settings.pretrain_steps // 10),
                                base_lr=settings.pretrain_lr * 256 / settings.source_batch, save_every=100)
        pretrain(data, folder, preset="tiny", config_overrides=settings.model, recipe=recipe, sampling_rate=1,
                 min_crop_scale=1.0, seed=seed, resume=resume, force=not resume, progress=stages.hooks.step)
    stages.end()
    return encoder


def _source_model(folder: Path, encoder: Path, data, settings: DemoSettings, seed: int, stages: Stages,
                  ) -> Path:
    """Supervised finetuning on the source task, then the float16 export the experiments score and prune."""
    from .train import Recipe, finetune

    released = folder / "model-float16"
    done = (released / "config.json").is_file()
    stages.start("source", None if done else f"finetuning on the source task for {settings.source_steps} steps, "
                                             f"then exporting it in float16")
    if not done:
        recipe = Recipe(batch_size=settings.source_batch, max_steps=settings.source_steps,
                        warmup_steps=max(1, settings.source_steps // 10),
                        base_lr=settings.source_lr * 256 / settings.source_batch, layer_decay=1.0,
                        drop_path=settings.source_drop_path, classifier_dropout=0.0, save_every=200)
        if not (folder / "gardener.json").is_file():  # trained before, only the export was interrupted
            resume = (folder / "checkpoints").is_dir()
            finetune(encoder, folder, data, recipe, seed=seed, resume=resume, force=not resume,
                     progress=stages.hooks.step, **_CLIP)
        half_precision_copy(folder / "model", released)
    stages.end()
    return released


def half_precision_copy(model_dir: Path, out: Path) -> Path:
    """A float16 copy of an HF model directory (as VideoMAE's released checkpoints are stored), with its
    preprocessor config and a manifest naming the float32 original."""
    import shutil

    import torch
    from transformers import AutoModelForVideoClassification

    from .manifest import manifest

    model = AutoModelForVideoClassification.from_pretrained(model_dir)
    with atomic_dir(out, force=True) as tmp:
        model.to(torch.float16).save_pretrained(tmp)
        processor = model_dir / "preprocessor_config.json"
        if processor.is_file():
            shutil.copy2(processor, tmp / processor.name)
        files = sorted(model_dir.glob("*.safetensors"))
        record = manifest("float16-export", files, {"model": str(model_dir.resolve())})
        write_text(tmp / "gardener.json", json.dumps(record, indent=2) + "\n")
    return out


def _target_recipe(settings: DemoSettings):
    from .train import Recipe

    return Recipe(batch_size=settings.target_batch, max_steps=settings.target_steps,
                  warmup_steps=max(1, settings.target_steps // 10),
                  base_lr=settings.target_lr * 256 / settings.target_batch, min_lr=0.0, layer_decay=0.7,
                  drop_path=0.0, classifier_dropout=0.0, save_every=1000)
