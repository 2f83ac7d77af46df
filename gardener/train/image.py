"""Healing an image classifier: the image-classification task's finetuning and evaluation.

The same run skeleton as video finetuning (`run.train_run`: checkpoints, exact `--resume`, the lock, the log) on
images as users hold them (`gardener.data.images`), any transformers image backbone `AutoModelForImageClassification`
builds a classifier from (ViT, DeiT, DINOv2, Swin, BEiT, ...: a fresh head on a bare encoder, or the checkpoint's
own with `keep_head`), cross-entropy with label smoothing, and top-1 / top-5 with Wilson intervals at the end.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..data.images import ImageSpec, ImageSplit, TrainImages, check_readable, eval_view, read_image_splits
from ..errors import GardenerError
from ..fileio import atomic_dir
from ..stats import interval_of
from .distill import Distill, Teacher
from .evaluate import metrics, normalisation, to_model_input, write_eval_outputs
from .loop import Run
from .lora import Lora, merged, trainable, unused_adapters, with_adapters
from .recipe import RecipeBase
from .run import RunOptions, TrainingJob, conclude, run_facts, run_manifest, train_run


@dataclass
class ImageRecipe(RecipeBase):
    """Finetuning settings for an image classifier (MAE's and DeiT's finetuning; lr per 256 images)."""

    batch_size: int = 32  # images per process per micro-batch
    grad_accum: int = 1
    epochs: float | None = None
    max_steps: int | None = None
    base_lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.75
    label_smoothing: float = 0.1
    clip_grad: float | None = None
    bf16: bool = True  # on GPU only
    compile: bool = False
    save_every: int = 500
    keep_last: int = 2


def image_size_of(model_dir: Path) -> int:
    """The square input size the model was made for (config.image_size, or its preprocessor's crop size)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    size = config.get("image_size")
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not isinstance(size, int):
        raise GardenerError(f"{model_dir}: its config.json gives no image_size; is it an image model?")
    return size


def load_image_classifier(model_dir: Path, classes: list[str], keep_head: bool = False):
    """AutoModelForImageClassification from `model_dir`: a fresh, small head for `classes`, or with `keep_head`
    the checkpoint's own (its classes must be `classes`), in float32."""
    import torch
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    labels = {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
              "label2id": {c: i for i, c in enumerate(classes)}}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        if keep_head:
            model = AutoModelForImageClassification.from_pretrained(model_dir)
            own = [model.config.id2label[i] for i in range(model.config.num_labels)]
            if own != list(classes):
                raise GardenerError(f"{model_dir}: its head classifies {', '.join(own[:3])} ...; the data's classes "
                                    f"are {', '.join(classes[:3])} ... (in this order); give a classifier finetuned "
                                    f"on this data")
            return _frozen_mask_token(model.float())
        model = AutoModelForImageClassification.from_pretrained(model_dir, ignore_mismatched_sizes=True, **labels)
    except ValueError as exc:  # a class AutoModelForImageClassification has no classifier for
        raise GardenerError(f"{model_dir}: transformers builds no image classifier from it "
                            f"({' '.join(str(exc).split())[:160]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = head or getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Linear):
        with torch.no_grad():
            torch.nn.init.trunc_normal_(head.weight, std=2e-5)  # a small fresh head (MAE's finetuning)
            head.bias.zero_()
    return _frozen_mask_token(model.float())


def _frozen_mask_token(model):
    """A masked-image-modelling token (DINOv2's, BEiT's) takes no part in classification: frozen, so that every
    trainable parameter gets a gradient (DDP requires it)."""
    for name, param in model.named_parameters():
        if name.endswith("mask_token"):
            param.requires_grad_(False)
    return model


def evaluate_images(model, split: ImageSplit, spec: ImageSpec, mean, std, batch: int = 64, dtype=None) -> dict:
    """Top-1 (with its Wilson interval), top-5, UAR, per-class recall and the confusion matrix of `model` on
    `split`, one centre crop per image."""
    import torch

    device = next(model.parameters()).device
    probs = []
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for start in range(0, len(split), batch):
            views = torch.from_numpy(np.stack([eval_view(p, spec) for p in split.paths[start:start + batch]]))
            logits = model(pixel_values=to_model_input(views.to(device), mean, std)).logits.float()
            probs.append(logits.softmax(-1).cpu().numpy())
    probs = np.concatenate(probs)
    labels = np.asarray(split.labels)
    result = metrics(probs, labels, split.classes)
    result["images"] = result.pop("videos")
    result["top1_interval"] = interval_of(result["top1"], result["images"])
    result["top5_interval"] = interval_of(result["top5"], result["images"])
    return {**result, "probs": probs, "labels": labels, "index": np.arange(len(labels))}


@dataclass
class ImageFinetuneJob(TrainingJob):
    """Finetuning an image classifier on `data`, evaluated on its test split."""

    kind: ClassVar[str] = "finetune"
    model_dir: Path
    data: Path
    eval_data: Path | None
    recipe: ImageRecipe
    seed: int
    size: int | None = None  # None: the model's
    val_fraction: float = 0.2
    arguments: dict | None = None
    keep_head: bool = False
    distill: Distill | None = None
    lora: Lora | None = None
    split_seed: int | None = None  # the held-out share's seed (None: `seed`); an experiment's jobs share one

    def load(self) -> TrainImages:
        from ..tasks import infer

        infer(self.model_dir, "image-classification")
        for extra in (self.distill, self.lora):
            if extra is not None:
                extra.check()
        native = image_size_of(self.model_dir)
        if self.size is not None and self.size != native:
            raise GardenerError(f"--size {self.size}: {self.model_dir} takes images of {native} px (its position "
                                f"embeddings are made for them); leave --size out")
        self.spec = ImageSpec(native)
        self.train, self.test = read_image_splits(self.data, self.eval_data, self.val_fraction,
                                                  self.seed if self.split_seed is None else self.split_seed)
        check_readable(self.train, self.test)
        if self.distill is not None:  # a teacher of the data's classes, said before the run starts
            _teacher_classes(Path(self.distill.teacher), self.train.classes)
        self.mean, self.std = normalisation(self.model_dir)
        return TrainImages(self.train, self.spec, self.seed)

    def inputs(self) -> list[tuple[str, Path | None]]:
        return [("the model", self.model_dir), ("the data", self.data), ("the test data", self.eval_data),
                ("the teacher", self.distill.teacher if self.distill else None)]

    def identity(self) -> dict:
        from .finetune import model_identity

        digest = {name: {"images": [str(p) for p in s.paths], "labels": s.labels, "classes": s.classes}
                  for name, s in (("train", self.train), ("test", self.test))}
        return {"model": model_identity(self.model_dir), "data": digest, **self.healing_identity(model_identity)}

    def build_model(self):
        if self.distill is not None:
            self.teacher = Teacher(load_image_classifier(Path(self.distill.teacher), self.train.classes, True))
        model = load_image_classifier(self.model_dir, self.train.classes, self.keep_head)
        if self.lora is not None:
            heads = tuple(n for n in ("classifier", "head", "fc_norm") if getattr(model, n, None) is not None)
            model = with_adapters(model, self.lora, heads)
        self.parameters = trainable(model)
        return model

    def loss(self, run: Run, batch: dict, step: int, micro: int) -> tuple:
        import torch

        pixels = to_model_input(batch["pixel_values"].to(run.device, non_blocking=True), self.mean, self.std)
        labels = batch["labels"].to(run.device)
        logits = run.model(pixel_values=pixels).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=self.recipe.label_smoothing)
        if self.distill is None:
            return loss, len(labels)
        loss, kl = self.distill.loss(loss, logits, self.teacher.logits(run.device, pixel_values=pixels))
        return loss, len(labels), {"kl": kl}

    def exports(self, run: Run, best: dict | None) -> dict:
        """The test split's evaluation, OUT/model (with the preprocessor config), eval.json, predictions.csv."""
        model = run.accelerator.unwrap_model(run.model)
        if self.lora is not None:
            self.parameters["unused_adapters"] = unused_adapters(model)
        model = merged(model)
        result = evaluate_images(model, self.test, self.spec, self.mean, self.std, dtype=run.autocast)
        _save(run, model, self.model_dir)
        info = run_manifest("finetune", _files(self.model_dir), self.arguments)
        public = {k: v for k, v in result.items() if k not in ("probs", "labels", "index", "confusion")}
        info.update({"task": "image-classification", "model": str(self.model_dir.resolve()),
                     "recipe": self.recipe.to_dict(), "image": asdict(self.spec), **run_facts(run, self.seed),
                     "data": {"train": self.train.source, "test": self.test.source, "train_images": len(self.train),
                              "test_images": len(self.test), "classes": self.train.classes},
                     "final": public, "resumes": run.resumes, "head": "kept" if self.keep_head else "fresh",
                     **self.healing_record()})
        return conclude(run, info, lambda: write_eval_outputs(run.out, result, self.test.paths,
                                                              {"model": str(run.out / "model")}))


def _teacher_classes(teacher: Path, classes: list[str]) -> None:
    config = json.loads((teacher / "config.json").read_text())
    own = [config.get("id2label", {}).get(str(i)) for i in range(len(config.get("id2label", {})))]
    if own != list(classes):
        raise GardenerError(f"--distill-from {teacher}: its head classifies {', '.join(map(str, own[:3])) or 'nothing'}"
                            f" ...; the data's classes are {', '.join(classes[:3])} ... (in this order); give a "
                            f"classifier finetuned on this data")


def _files(model_dir: Path) -> list[Path]:
    from ..checkpoint import open_checkpoint

    return open_checkpoint(model_dir).files


def _save(run: Run, model, model_dir: Path) -> None:
    run.accelerator.wait_for_everyone()
    if run.main:
        with atomic_dir(run.out / "model", force=True) as tmp:
            model.save_pretrained(tmp)
            if (model_dir / "preprocessor_config.json").is_file():
                shutil.copy2(model_dir / "preprocessor_config.json", tmp / "preprocessor_config.json")
    run.accelerator.wait_for_everyone()


def finetune_images(model_dir: str | Path, out: str | Path, data: str | Path, recipe: ImageRecipe | None = None, *,
                    eval_data: str | Path | None = None, size: int | None = None, val_fraction: float = 0.2,
                    seed: int = 0, resume: bool = False, force: bool = False, callbacks: list | None = None,
                    progress=None, arguments: dict | None = None, keep_head: bool = False, workers: int = 2,
                    report_to: str = "none", lock: bool = True, guard=None, distill: Distill | None = None,
                    lora: Lora | None = None, split_seed: int | None = None) -> dict:
    """Finetune (heal) an image classifier on `data`, evaluate it on the test split, save it; the run's manifest."""
    job = ImageFinetuneJob(Path(model_dir), Path(data), Path(eval_data) if eval_data else None,
                           recipe or ImageRecipe(), seed, size, val_fraction, arguments, keep_head, distill, lora,
                           split_seed)
    return train_run(job, Path(out), RunOptions(resume, force, workers, callbacks or [], progress,
                                                report_to=report_to, lock=lock, guard=guard))


def evaluate_image_model(model_dir: str | Path, data: str | Path, *, eval_data: str | Path | None = None,
                         size: int | None = None, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """A saved image classifier on the test split of `data` (its classes must be the model's, by name)."""
    from transformers import AutoModelForImageClassification

    model_dir = Path(model_dir)
    _, test = read_image_splits(Path(data), Path(eval_data) if eval_data else None, val_fraction, seed)
    import torch

    model = AutoModelForImageClassification.from_pretrained(model_dir).float()
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    unknown = [c for c in test.classes if c not in names]
    if unknown:
        raise GardenerError(f"{model_dir}: the model's classes do not include {unknown[0]!r} of the data")
    remap = [names.index(c) for c in test.classes]
    test = ImageSplit(test.paths, [remap[k] for k in test.labels], names, test.source)
    mean, std = normalisation(model_dir)
    result = evaluate_images(model, test, ImageSpec(size or image_size_of(model_dir)), mean, std)
    return {**result, "paths": test.paths, "source": test.source}


def evaluate_images_into(model_dir: str | Path, data: str | Path, out: str | Path | None, *, size: int | None = None,
                         val_fraction: float = 0.2, seed: int = 0, force: bool = False,
                         arguments: dict | None = None) -> dict:
    """`evaluate_image_model`, and with `out` a folder of eval.json (with its manifest), predictions.csv and
    confusion.csv, checked before any work and written whole or not at all."""
    from ..fileio import check_output

    model_dir, data = Path(model_dir), Path(data)
    if out is not None:
        check_output(Path(out), [("the model", model_dir), ("the data", data)], force)
    result = evaluate_image_model(model_dir, data, size=size, val_fraction=val_fraction, seed=seed)
    info = run_manifest("evaluate", _files(model_dir), arguments)
    info.update({"model": str(model_dir.resolve()), "data": result.pop("source"), "seed": seed})
    paths = result.pop("paths")
    if out is not None:
        with atomic_dir(Path(out), force) as tmp:
            write_eval_outputs(tmp, result, paths, {"manifest": info})
    return {**result, "manifest": info}
