"""`gardener demo --task image|text`: the study on an image classifier and on a language model, in miniature.

As the video demo does for VideoMAE, each makes its data on the spot (textures as PNG files; a small formal
language as text, with its tokenizer), trains a tiny model of 8 blocks from a config (a ViT classifier; a
LLaMA), and runs the study on it: one scoring pass, the oracle (each block removed, then the experiment's
finetuning: a fresh head and a short finetuning for images, a short healing for text), the pruning-ratio
sweep of every criterion against random orders, a second, cheaper oracle (images: the classifier healed for
a few steps with its own head; text: the plain remove-one-block perplexity, no training), how the two oracles
agree, and the report. Every stage is cached in the output folder, as the video demo's are.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .demo_stages import Hooks, Stages, claim
from .experiments.launch import Launch


@dataclass(frozen=True)
class TaskDemo:
    """The sizes of a task demo's stages (learning rates per 256 samples, as the recipes take them)."""

    task: str  # "image" or "text"
    samples: int  # training images per class, or training documents
    test_samples: int  # test images per class, or test documents
    depth: int = 8
    hidden: int = 64
    train_steps: int = 800
    train_lr: float = 0.5
    batch: int = 32
    job_steps: int = 30  # every oracle and sweep job's finetuning
    job_lr: float = 0.1
    second_oracle_steps: int = 10  # images: healing steps; text: 0, the removal alone
    ratios: str = "25,50,75"
    random_seeds: int = 10  # random orders: their spread is part of the random row's interval
    calib: int = 32  # images or sequences the calibration criteria read
    seq_len: int = 64  # text only
    noise: float = 80.0  # images only: the textures' pixel noise (standard deviation, 0-255), which sets how hard
    # they are to tell apart (at 18 a trained ViT is right on 99 % and no removal is separable from another)


IMAGE = TaskDemo("image", samples=400, test_samples=100, train_lr=0.016, job_lr=0.016)
TEXT = TaskDemo("text", samples=400, test_samples=100, train_steps=400, batch=16, job_steps=10,
                second_oracle_steps=0)
QUICK = {"image": replace(IMAGE, samples=40, test_samples=20, train_steps=80, job_steps=5, second_oracle_steps=3,
                          ratios="50", random_seeds=2, calib=8),
         "text": replace(TEXT, samples=80, test_samples=20, train_steps=60, job_steps=3, ratios="50",
                         random_seeds=2, calib=8)}
TASK = {"image": "image-classification", "text": "causal-lm"}
LABELS = {"data": "writing data", "train": "training the model", "experiments": "oracle and sweep",
          "second": "second oracle", "report": "report"}


def run_task_demo(out: Path, task: str, quick: bool, seed: int, force: bool, launch: Launch,
                  say: Callable[[str], None], hooks: Hooks = Hooks()) -> Path | None:
    """The study on one tiny model of `task` in `out`: its report, or None while its jobs wait in a queue."""
    settings = QUICK[task] if quick else {"image": IMAGE, "text": TEXT}[task]
    claim(out, {"task": task, "quick": quick, "seed": seed, "settings": asdict(settings)}, force)
    stages = Stages(out, say, 5, hooks, LABELS)
    data = _data(out / "data", settings, seed, stages)
    model = _train(out / "train", data, settings, seed, stages)
    return _study(out, model, data, settings, seed, launch, stages)


def _data(root: Path, settings: TaskDemo, seed: int, stages: Stages):
    """Textures in class folders (train/ and val/) or the formal language's text and tokenizer."""
    from .data.synthetic_images import write_images
    from .data.synthetic_text import write_text_corpus
    from .train import DataOptions

    done = (root / "gardener.json").is_file()
    what = (f"writing {settings.samples} + {settings.test_samples} textures per class" if settings.task == "image"
            else f"writing {settings.samples} + {settings.test_samples} documents of a formal language")
    stages.start("data", None if done else f"{what} to {root}")
    if not done:
        if settings.task == "image":
            write_images(root, per_class=settings.samples, test_per_class=settings.test_samples, size=32, seed=seed,
                         force=True, noise=settings.noise)
        else:
            write_text_corpus(root, documents=settings.samples, test_documents=settings.test_samples, seed=seed,
                              force=True)
    stages.end()
    if settings.task == "image":
        return DataOptions(root, workers=0)
    return DataOptions(root / "train.jsonl", eval_data=root / "test.jsonl", workers=0)


def _train(folder: Path, data, settings: TaskDemo, seed: int, stages: Stages) -> Path:
    """A tiny model of `settings.depth` blocks made from a config (seeded) and trained on the data from scratch."""
    model = folder / "model"
    done = (folder / "gardener.json").is_file()
    kind = "ViT classifier" if settings.task == "image" else "LLaMA"
    stages.start("train", None if done else f"training a {settings.depth}-block {kind} for {settings.train_steps} "
                                            f"steps from scratch")
    if not done:
        start = folder.parent / "init"
        _initial(start, data, settings, seed)
        resume = (folder / "checkpoints").is_dir()
        recipe = _recipe(settings, settings.train_steps, settings.train_lr, warmup=max(1, settings.train_steps // 10))
        _finetune(settings)(start, folder, data.data, recipe, eval_data=data.eval_data, seed=seed, resume=resume,
                            force=not resume, progress=stages.hooks.step, **_sizes(settings))
    stages.end()
    return model


def _initial(path: Path, data, settings: TaskDemo, seed: int) -> None:
    """The untrained model: a ViT encoder (its head comes with the data's classes) or a LLaMA with the
    language's tokenizer beside it."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    shutil.rmtree(path, ignore_errors=True)
    if settings.task == "image":
        config = T.ViTConfig(image_size=32, patch_size=4, hidden_size=settings.hidden, num_hidden_layers=settings.depth,
                             num_attention_heads=4, intermediate_size=2 * settings.hidden)
        T.ViTModel(config, add_pooling_layer=False).save_pretrained(path)
        return
    from .data.synthetic_text import VOCABULARY

    config = T.LlamaConfig(hidden_size=settings.hidden, intermediate_size=2 * settings.hidden,
                           num_hidden_layers=settings.depth, num_attention_heads=4, num_key_value_heads=2,
                           vocab_size=len(VOCABULARY), max_position_embeddings=2 * settings.seq_len)
    T.LlamaForCausalLM(config).save_pretrained(path)
    for name in (Path(data.data).parent / "tokenizer").iterdir():
        shutil.copy2(name, path / name.name)


def _recipe(settings: TaskDemo, steps: int, lr: float, warmup: int = 1):
    from .train.image import ImageRecipe
    from .train.lm import LMRecipe

    if settings.task == "image":
        return ImageRecipe(batch_size=settings.batch, max_steps=steps, base_lr=lr, warmup_steps=warmup,
                           layer_decay=1.0, clip_grad=1.0, save_every=1000)
    return LMRecipe(batch_size=settings.batch, max_steps=steps, base_lr=lr, warmup_steps=warmup, save_every=1000)


def _finetune(settings: TaskDemo) -> Callable[..., dict]:
    from .train.image import finetune_images
    from .train.lm import finetune_lm

    if settings.task == "image":
        return lambda *a, **k: finetune_images(*a, workers=0, **k)
    return finetune_lm


def _sizes(settings: TaskDemo) -> dict:
    return {"seq_len": settings.seq_len} if settings.task == "text" else {}


def _study(out: Path, model: Path, data, settings: TaskDemo, seed: int, launch: Launch, stages: Stages
           ) -> Path | None:
    """The sweep with its oracle, the second oracle, how the oracles agree, and the report."""
    from . import criteria
    from .demo_task_notes import note
    from .experiments.launchers import run_to_end
    from .experiments.protocol import prepare
    from .experiments.sweep import run_sweep
    from .report.experiment import write_report
    from .report.oracles import between_parts
    from .scoring import CalibOptions, ScoreSettings

    clip = {"seq_len": settings.seq_len} if settings.task == "text" else {"size": None}
    stages.start("experiments", f"oracle and pruning-ratio sweep ({settings.job_steps} finetuning steps per job), "
                                f"calibration criteria on {settings.calib} training samples (cached per job)")
    exp = prepare(model, out / "run", data, _recipe(settings, settings.job_steps, settings.job_lr), clip, seed,
                  launch=launch, task=TASK[settings.task])
    calib = CalibOptions(data.data, calib_clips=settings.calib, calib_seq_len=settings.seq_len)
    swept = run_to_end(exp, lambda: run_sweep(
        exp, criteria.sweep_criteria() + criteria.needing_data(), settings.ratios, settings.random_seeds,
        ScoreSettings(calib=calib), progress=stages.hooks.job, job_progress=stages.hooks.step), stages.say)
    stages.end()
    between = _second_oracle(out, exp, model, data, settings, seed, launch, stages)
    if swept is None or between is None:
        stages.say(f"{out}: jobs wait in the queue (`gardener status {out / 'run'}`, `gardener status "
                   f"{out / 'second'}`); run the same command again once they are done to write the report")
        return None
    stages.start("report", "writing the report")
    report = write_report(out / "run", out=out / "report.md", note=note(settings, out),
                          after_oracles=between_parts(between))
    stages.end()
    return report


def _second_oracle(out: Path, full_exp, model: Path, data, settings: TaskDemo, seed: int, launch: Launch,
                   stages: Stages) -> dict | None:
    """The cheaper oracle in OUT/second (healing with the classifier's own head; for text the removal alone),
    and its agreement with the full one with what each cost; None while the jobs of either wait."""
    from .experiments.agreement import oracle_agreement
    from .experiments.launchers import run_to_end
    from .experiments.oracle import run_sensitivity
    from .experiments.protocol import prepare
    from .experiments.results import HEALING, ORACLE, oracle_cost

    steps = settings.second_oracle_steps
    stages.start("second", "each block removed, measured without training" if steps == 0 else
                 f"healing oracle: each block removed from the trained classifier, healed for {steps} steps")
    exp = prepare(model, out / "second", data, full_exp.recipe, full_exp.clip, seed, heal_steps=steps, launch=launch,
                  task=full_exp.settings.task)
    second = run_to_end(exp, lambda: run_sensitivity(exp, progress=stages.hooks.job, job_progress=stages.hooks.step,
                                                     heal_steps=steps), stages.say)
    stages.end()
    full_table = full_exp.run.path / "sensitivity.json"
    if second is None or not full_table.is_file():
        return None
    full = json.loads(full_table.read_text())
    return {**oracle_agreement(full, second["table"]), "cost": {"full": oracle_cost(full_exp.run, ORACLE),
                                                                "healing": oracle_cost(exp.run, HEALING)}}
