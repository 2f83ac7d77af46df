"""Tasks: what a pruned model is healed and judged on (video classification, causal language modelling, ...).

A task is registered like a criterion or a model family: its name, which checkpoints it fits (by the model
class their config.json names), its metric with the direction that is better, and its evaluation. Commands
infer the task from the checkpoint where exactly one fits; `--task` names it otherwise.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import GardenerError


@dataclass(frozen=True)
class Metric:
    """What a task's evaluation reports first, and which way is better."""

    name: str  # the key of the evaluation's result: "top1", "perplexity"
    label: str  # as tables and figures name it
    better: str  # "higher" or "lower"
    unit: str = "samples"  # what the test set counts: "videos", "images", "sequences"
    percent: bool = False  # shown in percent (an accuracy), else as it is (a perplexity)

    @property
    def removes(self) -> str:
        """Which end of an oracle's scores (this metric after removing a block) is removed first: the block
        whose removal leaves the best value."""
        return "highest" if self.better == "higher" else "lowest"

    def worse_by(self, value: float, reference: float) -> float:
        """How much worse `value` is than `reference` (negative: better), in the metric's own units."""
        return reference - value if self.better == "higher" else value - reference

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "better": self.better, "unit": self.unit,
                "percent": self.percent}

    def __post_init__(self):
        if self.better not in ("higher", "lower"):
            raise ValueError(f"metric {self.name}: better must be 'higher' or 'lower', not {self.better!r}")


@dataclass(frozen=True)
class Task:
    """One registered task. `fits` says from a model class name (config.json's `architectures[0]`) whether
    the task trains and evaluates such a checkpoint; `evaluate` is "module:function" (imported when used)."""

    name: str
    description: str
    metric: Metric
    fits: Callable[[str], bool]
    evaluate: str
    job: str = ""  # "module:function" that finetunes and evaluates one experiment job (experiments/task_jobs.py)

    def evaluator(self) -> Callable[..., dict]:
        module, function = self.evaluate.split(":")
        return getattr(importlib.import_module(module), function)

    def job_runner(self) -> Callable[..., dict]:
        """The function that trains and evaluates one pruned model of an experiment (sensitivity, sweep)."""
        if not self.job:
            raise GardenerError(f"task {self.name}: the experiments have no path for it (sensitivity and sweep run "
                                f"{', '.join(n for n, t in _REGISTRY.items() if t.job)})")
        module, function = self.job.split(":")
        return getattr(importlib.import_module(module), function)


_REGISTRY: dict[str, Task] = {}


def register(task: Task, replace: bool = False) -> Task:
    """Add a task; a name that is taken is an error unless `replace`."""
    if task.name in _REGISTRY and not replace:
        raise GardenerError(f"task {task.name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[task.name] = task
    return task


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Task:
    if name not in _REGISTRY:
        raise GardenerError(f"unknown task {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def architecture_of(model_dir: str | Path) -> str:
    """The model class a transformers folder's config.json names ('' when it names none)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise GardenerError(f"{model_dir}: not a transformers model folder (no config.json); a task trains and "
                            f"evaluates a model that from_pretrained loads")
    return next(iter(json.loads(config.read_text()).get("architectures") or []), "")


def infer(model_dir: str | Path, name: str | None = None) -> Task:
    """The task of a checkpoint: the one named (which must fit it), or the only registered one that fits."""
    architecture = architecture_of(model_dir)
    what = f"a {architecture}" if architecture else "a model of no named class"
    fitting = _fitting(architecture)
    if name is not None:
        task = get(name)
        if architecture and not task.fits(architecture):  # a config.json naming no class: the user's word
            raise GardenerError(f"--task {name}: does not fit {model_dir} ({what}); tasks that fit it: "
                                f"{', '.join(fitting) or 'none'}")
        return task
    if len(fitting) != 1:
        found = "no registered task" if not fitting else "several tasks: " + ", ".join(fitting)
        raise GardenerError(f"{model_dir}: {what} fits {found}; name one with --task (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[fitting[0]]


def _fitting(architecture: str) -> list[str]:
    return [t.name for t in _REGISTRY.values() if architecture and t.fits(architecture)]


register(Task("video-classification", "video clips to classes (VideoMAE; the paper's Step 4)",
              Metric("top1", "top-1 accuracy", "higher", "videos", True),
              lambda cls: cls.startswith("VideoMAE"), "gardener.train.evaluation:evaluate_model",
              "gardener.experiments.task_jobs:video_job"))
# bare image encoders AutoModelForImageClassification puts a head on
IMAGE_ENCODERS = ("ViTModel", "DeiTModel", "Dinov2Model", "SwinModel", "Swinv2Model", "BeitModel")
register(Task("image-classification", "images to classes (ViT, DeiT, DINOv2, Swin, BEiT; a classifier or an encoder)",
              Metric("top1", "top-1 accuracy", "higher", "images", True),
              lambda cls: cls.endswith("ForImageClassification") or cls in IMAGE_ENCODERS,
              "gardener.train.image:evaluate_image_model", "gardener.experiments.task_jobs:image_job"))
register(Task("causal-lm", "next-token prediction on text packed into sequences (LLaMA- and GPT-2-style)",
              Metric("perplexity", "perplexity", "lower", "sequences"),
              lambda cls: cls.endswith(("ForCausalLM", "LMHeadModel")), "gardener.tasks.causal_lm:evaluate_causal_lm",
              "gardener.experiments.task_jobs:text_job"))
