"""Finetuning a VideoMAE classifier with Accelerate: one CPU, one GPU, or many via `accelerate launch`.

Here: what to train on (data options, splits, clips checked against the model) and the
finetuning job (its classifier, its loss, its evaluations and exports); evaluation.py evaluates
a saved classifier. run.py's `train_run` does the rest of a run, as it does for pretraining.
"""
from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

from ..data import ClipSpec, EvalClips, TrainClips, VideoSplit, probe_all, read_split
from ..errors import GardenerError
from ..fileio import atomic_dir
from ..settings import check_number
from .distill import Distill, Teacher
from .lora import Lora, merged, trainable, unused_adapters, with_adapters
from .evaluate import metrics, normalisation, predict, to_model_input, write_eval_outputs
from .loop import Run
from .recipe import Recipe
from .regularize import add_classifier_dropout, add_drop_path, mix_batch
from .run import TrainingJob, RunOptions, conclude, run_facts, run_manifest, train_run
from .state import split_digest
from .tracking import track

log = logging.getLogger("gardener.train")
EVAL_LOGGED = ("top1", "top5", "uar")  # the metrics of an evaluation during the run, in log.jsonl and trackers


@dataclass
class DataOptions:
    """Where the videos are and how to read them."""

    data: Path
    split_dir: Path | None = None
    fold: int = 1
    eval_data: Path | None = None
    val_fraction: float = 0.2
    strict: bool = False
    workers: int = 2

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The paths an output must not touch."""
        return [("the data", self.data), ("the split folder", self.split_dir), ("the test data", self.eval_data)]

    def check(self) -> DataOptions:
        check_number("--workers", self.workers, 0)
        check_number("--fold", self.fold, 1)
        check_number("--val-fraction", self.val_fraction, 0, 1, above=True, below=True)
        return self


def load_splits(options: DataOptions, seed: int, need_train: bool = True):
    """Train and test splits, probed (unreadable files skipped or, with strict, an error)."""
    options.check()
    kwargs = dict(split_dir=options.split_dir, fold=options.fold, val_fraction=options.val_fraction, seed=seed)
    train = read_split(options.data, "train", **kwargs) if need_train else None
    test = read_split(options.eval_data or options.data, "test", **kwargs)
    if train is not None and train.classes != test.classes:
        raise GardenerError(f"the train and test splits name different classes ({len(train.classes)} vs "
                            f"{len(test.classes)}: {train.classes[:3]} ... vs {test.classes[:3]} ...)")
    probed = [probe_all(s, options.workers + 2, options.strict) if s is not None else (None, None)
              for s in (train, test)]
    return probed[0], probed[1]


def require_classes(train: VideoSplit) -> None:
    """A classifier needs two classes or more, each with a training video (after unreadable ones
    were skipped)."""
    if len(train.classes) < 2:
        found = f"one class ({train.classes[0]})" if train.classes else "no class"
        raise GardenerError(f"{train.source}: {found}; finetuning a classifier needs at least two")
    present = set(train.labels)
    empty = [c for label, c in enumerate(train.classes) if label not in present]
    if empty:
        raise GardenerError(f"{train.source}: class {empty[0]!r} has no training video"
                            + (f" ({len(empty)} such classes)" if len(empty) > 1 else ""))


def model_identity(model_dir: Path) -> dict:
    """The weight files of a model by name, size and sha256 (where the folder is does not matter)."""
    from ..checkpoint import open_checkpoint
    from ..manifest import file_record

    return {"files": [{**file_record(f), "path": Path(f).name} for f in open_checkpoint(model_dir).files]}


def clip_spec_for(config, frames: int | None, size: int | None, **views) -> ClipSpec:
    """Frames and size checked against the model: same frame count, size a multiple of the patch."""
    frames = config.num_frames if frames is None else frames
    size = config.image_size if size is None else size
    if frames != config.num_frames:
        raise GardenerError(f"--frames {frames}: the model is built for {config.num_frames}-frame clips")
    if frames % config.tubelet_size:
        raise GardenerError(f"--frames {frames}: not a multiple of the model's tubelet size {config.tubelet_size}")
    if size % config.patch_size:
        raise GardenerError(f"--size {size}: not a multiple of the model's patch size {config.patch_size}")
    return ClipSpec(frames=frames, size=size, **views)


def videomae_config(model_dir: Path):
    from transformers import AutoConfig

    if not (Path(model_dir) / "config.json").is_file():
        raise GardenerError(f"{model_dir}: not a transformers model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (ValueError, KeyError, OSError) as exc:  # an unknown model_type, a config transformers cannot read
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise GardenerError(f"{model_dir}/config.json: transformers cannot read it ({first})") from None
    if config.model_type != "videomae":
        raise GardenerError(f"{model_dir}: a {config.model_type!r} model; expected a VideoMAE directory")
    return config


def load_classifier(model_dir: Path, classes: list[str], recipe: Recipe, size: int | None = None,
                    keep_head: bool = False):
    """VideoMAEForVideoClassification from any HF VideoMAE directory, with a fresh head for `classes`;
    with `keep_head`, the directory's own finetuned head (its classes must be `classes`, in any order), so
    that a few steps continue from the finetuned model instead of from a random head (the healing oracle)."""
    import torch
    from transformers import VideoMAEForVideoClassification
    from transformers.utils import logging as hf_logging

    from ..fixed_tables import fast_tables

    model_dir = Path(model_dir)
    config = videomae_config(model_dir)
    rows = _head_rows(config, classes, model_dir) if keep_head else None
    # an encoder from pretraining gets VideoMAE's finetuning head: mean pooling and a fresh fc_norm
    from_encoder = "VideoMAEForVideoClassification" not in (config.architectures or [])
    extra = {"use_mean_pooling": True} if from_encoder else {}
    if size is not None and size != config.image_size:
        extra["image_size"] = size  # fixed sinusoidal positions: any multiple of the patch works
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with fast_tables():
            model = VideoMAEForVideoClassification.from_pretrained(
                model_dir, num_labels=len(classes), id2label=dict(enumerate(classes)),
                label2id={c: i for i, c in enumerate(classes)}, ignore_mismatched_sizes=True,
                attn_implementation="sdpa", **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.float()  # float32 master weights, whatever the checkpoint stores (released VideoMAEs are float16)
    with torch.no_grad():
        if rows is not None:  # the kept head, its rows in the data's class order
            model.classifier.weight.copy_(model.classifier.weight[rows])
            model.classifier.bias.copy_(model.classifier.bias[rows])
        else:  # a fresh, small head (VideoMAE's init_scale 0.001)
            torch.nn.init.trunc_normal_(model.classifier.weight, std=0.02)
            model.classifier.weight.mul_(0.001)
            model.classifier.bias.zero_()
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _head_rows(config, classes: list[str], model_dir: Path) -> list[int]:
    """For each class of the data, the row of the checkpoint's classifier that scores it; the checkpoint
    must be a classifier of exactly these classes."""
    if "VideoMAEForVideoClassification" not in (config.architectures or []):
        raise GardenerError(f"{model_dir}: has no classifier head to keep (a pretrained encoder); give a "
                            f"classifier finetuned on this data")
    names = [config.id2label[i] for i in range(config.num_labels)]
    if sorted(names) != sorted(classes):
        raise GardenerError(f"{model_dir}: its head classifies {len(names)} classes ({', '.join(names[:3])} ...), "
                            f"the data has {len(classes)} ({', '.join(classes[:3])} ...); give a classifier "
                            f"finetuned on this data")
    return [names.index(c) for c in classes]


@dataclass
class FinetuneJob(TrainingJob):
    """Finetuning a VideoMAE classifier: a fresh head on `model_dir` (or its own, `keep_head`), cross-entropy
    (or mixup/cutmix), evaluation on the test split every `eval_every` steps and at the end."""

    kind: ClassVar[str] = "finetune"
    model_dir: Path
    data: DataOptions
    recipe: Recipe
    seed: int
    frames: int | None  # None: the model's
    size: int | None  # None: the model's
    views: dict  # sampling_rate, test_clips, test_crops and the crop scale of ClipSpec
    arguments: dict | None = None
    keep_head: bool = False  # continue with the checkpoint's own head (its classes must be the data's)
    distill: Distill | None = None  # heal by distillation from this teacher, a classifier of the data's classes
    lora: Lora | None = None  # train LoRA adapters (and the head) only, merged back at the end

    def load(self) -> TrainClips:
        if self.lora is not None:
            self.lora.check()
        if self.distill is not None:
            self.distill.check()
        self.spec = clip_spec_for(videomae_config(self.model_dir), self.frames, self.size, **self.views)
        (self.train, train_infos), (self.test, self.test_infos) = load_splits(self.data, self.seed)
        require_classes(self.train)
        if self.distill is not None:  # a teacher of the data's classes, said before the run starts
            teacher = Path(self.distill.teacher)
            _head_rows(videomae_config(teacher), self.train.classes, teacher)
        self.mean, self.std = normalisation(self.model_dir)
        return TrainClips(self.train, train_infos, self.spec, self.seed, self.recipe.num_sample)

    def inputs(self) -> list[tuple[str, Path | None]]:
        return [("the model", self.model_dir), *self.data.inputs(),
                ("the teacher", self.distill.teacher if self.distill else None)]

    def identity(self) -> dict:
        return {"model": model_identity(self.model_dir),
                "data": {"train": split_digest(self.train), "test": split_digest(self.test)},
                **self.healing_identity(model_identity)}

    def build_model(self):
        if self.distill is not None:  # its head's rows in the data's class order, as the student's
            self.teacher = Teacher(load_classifier(Path(self.distill.teacher), self.train.classes, self.recipe,
                                                   self.spec.size, keep_head=True))
        model = load_classifier(self.model_dir, self.train.classes, self.recipe, self.spec.size, self.keep_head)
        self.handles = add_drop_path(model, self.recipe.drop_path) + add_classifier_dropout(
            model, self.recipe.classifier_dropout)
        if self.lora is not None:  # the head (and a fresh pooling norm) train whole
            model = with_adapters(model, self.lora, tuple(n for n in ("fc_norm", "classifier")
                                                          if getattr(model, n, None) is not None))
        self.parameters = trainable(model)
        return model

    def loss(self, run: Run, batch: dict, step: int, micro: int) -> tuple:
        """Cross-entropy with label smoothing, or soft-target cross-entropy on a mixup/cutmix batch; with a
        teacher, mixed with (or replaced by) the KL to its predictions of the same clips."""
        import torch

        pixels = to_model_input(batch["pixel_values"].to(run.device, non_blocking=True), self.mean, self.std)
        labels = batch["labels"].to(run.device)
        if self.recipe.mix:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + micro)
            pixels, targets = mix_batch(pixels, labels, len(self.train.classes), self.recipe, generator)
            logits = run.model(pixel_values=pixels).logits.float()
            loss = torch.sum(-targets * logits.log_softmax(-1), dim=-1).mean()
        else:
            logits = run.model(pixel_values=pixels).logits.float()
            loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=self.recipe.label_smoothing)
        if self.distill is None:
            return loss, len(labels)
        loss, kl = self.distill.loss(loss, logits, self.teacher.logits(run.device, pixel_values=pixels))
        return loss, len(labels), {"kl": kl}

    def after_step(self, run: Run) -> Callable[[int, dict | None], dict | None]:
        return partial(self._evaluate_every, run)

    def _evaluate_every(self, run: Run, step: int, best: dict | None) -> dict | None:
        """Every `eval_every` steps (the last step excepted: the final evaluation follows), evaluate and
        keep the best model so far in OUT/best."""
        if not self.recipe.eval_every or step % self.recipe.eval_every or step == run.schedule.total:
            return best
        result = self._evaluate(run)
        run.logbook.write({"step": step, "eval": {k: result[k] for k in EVAL_LOGGED}})
        if best is None or result["top1"] > best["top1"]:
            best = {"step": step, "top1": result["top1"]}
            if run.guard is not None:
                run.guard()
            _save_model(run.accelerator, run.model, run.out / "best", self.model_dir, force=True)
        return best

    def _evaluate(self, run: Run) -> dict:
        return evaluate_split(run.accelerator, run.model, self.test, self.test_infos, self.spec, self.mean, self.std,
                         self.data.workers, run.autocast)

    def exports(self, run: Run, best: dict | None) -> dict:
        """The final evaluation (without drop path), OUT/model, eval.json, predictions.csv, confusion.csv."""
        for handle in self.handles:
            handle.remove()
        if self.lora is not None:  # the adapters added into the weights: a plain model from here on
            self.parameters["unused_adapters"] = unused_adapters(run.accelerator.unwrap_model(run.model))
            run.model = merged(run.accelerator.unwrap_model(run.model))
        result = self._evaluate(run)
        track(run.accelerator, {"step": run.schedule.total, "eval": {k: result[k] for k in EVAL_LOGGED}})
        if best is None or result["top1"] > best["top1"] or not self.recipe.eval_every:
            best = {"step": run.schedule.total, "top1": result["top1"]}
        _save_model(run.accelerator, run.model, run.out / "model", self.model_dir, force=True)
        info = self._manifest(run, _public(result), best)
        return conclude(run, info, lambda: write_eval_outputs(run.out, result, self.test.paths,
                                                              {"model": str(run.out / "model")}))

    def _manifest(self, run: Run, final: dict, best: dict) -> dict:
        from ..checkpoint import open_checkpoint

        train, test, recipe, world = self.train, self.test, self.recipe, run.world
        info = run_manifest("finetune", open_checkpoint(self.model_dir).files, self.arguments)
        info.update({"model": str(self.model_dir.resolve()), "recipe": recipe.to_dict(), "clip": asdict(self.spec),
                     "data": {"train": train.source, "test": test.source, "train_videos": len(train),
                              "test_videos": len(test), "classes": train.classes,
                              "skipped": train.skipped + test.skipped},
                     **run_facts(run, self.seed), "total_batch": recipe.total_batch(world),
                     "clips_per_step": recipe.total_batch(world) * recipe.num_sample,
                     "peak_lr": run.schedule.peak, "final": final, "best": best, "resumes": run.resumes,
                     "head": "kept" if self.keep_head else "fresh",
                     **self.healing_record()})
        return info


def finetune(model_dir: str | Path, out: str | Path, data: DataOptions, recipe: Recipe | None = None, *,
             frames: int | None = None, size: int | None = None, sampling_rate: int = 4, test_clips: int = 5,
             test_crops: int = 3, min_crop_scale: float = 0.08, seed: int = 0, resume: bool = False, force: bool = False,
             callbacks: list[Callable[[int, float], None]] | None = None, progress: Callable | None = None,
             arguments: dict | None = None, keep_head: bool = False, report_to: str = "none", lock: bool = True,
             guard: Callable[[], None] | None = None, distill: Distill | None = None,
             lora: Lora | None = None) -> dict:
    """Finetune on `data`, evaluate on its test split, save the model; returns the run's manifest.

    The classifier head is fresh, unless `keep_head`: then `model_dir` must be a classifier of the
    data's classes, and its head is trained on (as the healing oracle needs). `report_to`
    ("tensorboard", "wandb") also logs the run's steps and evaluations to that tracker. `distill` heals by
    distillation from a teacher (train/distill.py); `lora` trains LoRA adapters and the head only, merged back
    into a plain checkpoint at the end (train/lora.py).

    The run folder is locked while the run writes it (`lock`; a queued job's claim is its lock instead);
    `guard()`, when given, is called before each step writes and stops the run by raising.

    The run folder gets data only (eval.json, predictions.csv, confusion.csv, log.jsonl, ...);
    `gardener.report.figures.draw_eval_figures(out)` draws confusion.png from it, as the
    `finetune` command does.
    """
    views = {"sampling_rate": sampling_rate, "test_clips": test_clips, "test_crops": test_crops,
             "scale": (min_crop_scale, 1.0)}
    job = FinetuneJob(Path(model_dir), data, recipe or Recipe(), seed, frames, size, views, arguments, keep_head,
                      distill, lora)
    return train_run(job, Path(out), RunOptions(resume, force, data.workers, callbacks or [], progress,
                                                report_to=report_to, lock=lock, guard=guard))


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("probs", "labels", "index")}


def evaluate_split(accelerator, model, split, infos, spec, mean, std, workers, dtype=None) -> dict:
    """Each process predicts every world-th video (under `dtype` autocast, if any); the main process
    gathers and scores them."""
    import numpy as np

    world, rank = accelerator.num_processes, accelerator.process_index
    dataset = EvalClips(split, infos, spec)
    indices = list(range(rank, len(dataset), world))
    part = predict(accelerator.unwrap_model(model), dataset, workers=workers, device=accelerator.device,
                   mean=mean, std=std, indices=indices, autocast_dtype=dtype)
    parts = accelerator.gather_for_metrics([part], use_gather_object=True) if world > 1 else [part]
    probs = np.concatenate([p["probs"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    order = np.concatenate([p["index"] for p in parts])
    keep = np.unique(order, return_index=True)[1]
    result = metrics(probs[keep], labels[keep], split.classes)
    seconds = max(p["seconds"] for p in parts)
    result.update({"views": int(sum(p["views"] for p in parts)), "seconds": seconds,
                   "clips_per_s": sum(p["views"] for p in parts) / seconds if seconds else None,
                   "probs": probs[keep], "labels": labels[keep], "index": order[keep]})
    return result


def _save_model(accelerator, model, path: Path, model_dir: Path, force: bool) -> None:
    """save_pretrained (stock-loadable) plus the preprocessor config, written atomically."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(path, force=force) as tmp:
            plain = accelerator.unwrap_model(model)
            if hasattr(plain, "merge_and_unload"):  # LoRA mid-run (best/): a merged copy, training goes on
                plain = copy.deepcopy(plain).merge_and_unload()
            plain.save_pretrained(tmp)
            processor = Path(model_dir) / "preprocessor_config.json"
            if processor.is_file():
                shutil.copy2(processor, tmp / processor.name)
    accelerator.wait_for_everyone()
