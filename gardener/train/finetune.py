"""Finetuning a VideoMAE classifier with Accelerate: one CPU, one GPU, or many via `accelerate launch`.

Accelerate owns devices, processes, mixed precision and the checkpoint format (model,
optimizer, RNG states). What makes a resumed run continue on the same trajectory is kept
deterministic here: the lr is a function of the step, the sampler and every augmentation are
functions of (seed, epoch, video), so resuming at step k needs only the step and the states.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data import ClipSpec, EpochSampler, EvalClips, TrainClips, VideoSplit, probe_all, read_split
from ..errors import GardenerError
from ..fileio import atomic_dir, write_text
from ..manifest import manifest
from .evaluate import metrics, normalisation, predict, to_model_input, write_eval_outputs
from .recipe import Recipe, param_groups
from .regularize import add_classifier_dropout, add_drop_path, mix_batch
from .loop import Loop, autocast_dtype, make_accelerator, make_loader, make_optimizer, maybe_compile, restore, \
    run_steps
from .state import Log, begin, check_out, collate, finished, split_digest

log = logging.getLogger("gardener.train")


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


def load_splits(options: DataOptions, seed: int, need_train: bool = True):
    """Train and test splits, probed (unreadable files skipped or, with strict, an error)."""
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


def _videomae_config(model_dir: Path):
    from transformers import AutoConfig

    if not (Path(model_dir) / "config.json").is_file():
        raise GardenerError(f"{model_dir}: not a transformers model directory (no config.json)")
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "videomae":
        raise GardenerError(f"{model_dir}: a {config.model_type!r} model; expected a VideoMAE directory")
    return config


def load_classifier(model_dir: Path, classes: list[str], recipe: Recipe, size: int | None = None):
    """VideoMAEForVideoClassification from any HF VideoMAE directory, with a fresh head for `classes`."""
    import torch
    from transformers import VideoMAEForVideoClassification
    from transformers.utils import logging as hf_logging

    from ..fixed_tables import fast_tables

    model_dir = Path(model_dir)
    config = _videomae_config(model_dir)
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
    with torch.no_grad():  # a fresh, small head (VideoMAE's init_scale 0.001)
        torch.nn.init.trunc_normal_(model.classifier.weight, std=0.02)
        model.classifier.weight.mul_(0.001)
        model.classifier.bias.zero_()
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def finetune(model_dir: str | Path, out: str | Path, data: DataOptions, recipe: Recipe | None = None, *,
             frames: int | None = None, size: int | None = None, sampling_rate: int = 4, test_clips: int = 5,
             test_crops: int = 3, min_crop_scale: float = 0.08, seed: int = 0, resume: bool = False, force: bool = False,
             callbacks: list[Callable[[int, float], None]] | None = None, progress: Callable | None = None,
             arguments: dict | None = None, plots: bool = True) -> dict:
    """Finetune on `data`, evaluate on its test split, save the model; returns the run's manifest.
    `plots=False` leaves out confusion.png (experiments run dozens of jobs and read only the numbers)."""
    import torch
    from accelerate.utils import set_seed

    from ..checkpoint import open_checkpoint

    recipe = recipe or Recipe()
    out, model_dir = Path(out), Path(model_dir)
    # a finished run is left exactly as it is
    if resume and (done := finished(out, "finetune", {"recipe": recipe.to_dict(), "seed": seed})) is not None:
        return {**done, "already_finished": True}
    start = check_out(out, resume, force)  # every check comes before the first training step
    config = _videomae_config(model_dir)
    spec = clip_spec_for(config, frames, size, sampling_rate=sampling_rate, test_clips=test_clips,
                         test_crops=test_crops, scale=(min_crop_scale, 1.0))
    (train, train_infos), (test, test_infos) = load_splits(data, seed)
    require_classes(train)
    accelerator = make_accelerator()
    dtype = autocast_dtype(accelerator, recipe.bf16)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    sampler = EpochSampler(len(train), recipe.batch_size, seed, 0, rank, world)
    per_epoch = max(1, sampler.batches_per_epoch // recipe.grad_accum)
    total = recipe.total_steps(per_epoch)
    warmup = recipe.warmup(per_epoch, total)
    identity = {"model": model_identity(model_dir), "data": {"train": split_digest(train), "test": split_digest(test)},
                "recipe": recipe.to_dict(), "clip": asdict(spec), "seed": seed, "world_size": world}
    resumes = begin(out, identity, start, total, main)
    accelerator.wait_for_everyone()
    set_seed(seed)
    model = load_classifier(model_dir, train.classes, recipe, spec.size)
    handles = add_drop_path(model, recipe.drop_path) + add_classifier_dropout(model, recipe.classifier_dropout)
    peak, final = recipe.peak_lr(world), recipe.final_lr(world)
    optimizer = make_optimizer(model, param_groups(model, recipe, peak), peak, recipe.betas, accelerator)
    model, optimizer = accelerator.prepare(maybe_compile(model, recipe.compile), optimizer)
    step, best = restore(accelerator, out, start)
    sampler.start_batch = step * recipe.grad_accum
    loader = make_loader(TrainClips(train, train_infos, spec, seed, recipe.num_sample), sampler, data.workers, seed,
                         collate)
    mean, std = normalisation(model_dir)
    device = accelerator.device

    def loss_fn(batch, step, micro):
        pixels = to_model_input(batch["pixel_values"].to(device, non_blocking=True), mean, std)
        labels = batch["labels"].to(device)
        if recipe.mix:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + micro)
            pixels, targets = mix_batch(pixels, labels, len(train.classes), recipe, generator)
            logits = model(pixel_values=pixels).logits.float()
            return torch.sum(-targets * logits.log_softmax(-1), dim=-1).mean(), len(labels)
        logits = model(pixel_values=pixels).logits.float()
        return torch.nn.functional.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing), len(labels)

    def after_step(step, best):
        if not recipe.eval_every or step % recipe.eval_every or step == total:
            return best
        result = _evaluate(accelerator, model, test, test_infos, spec, mean, std, data.workers, dtype)
        logbook.write({"step": step, "eval": {k: result[k] for k in ("top1", "top5", "uar")}})
        if best is None or result["top1"] > best["top1"]:
            best = {"step": step, "top1": result["top1"]}
            _save_model(accelerator, model, out / "best", model_dir, force=True)
        return best

    logbook = Log(out / "log.jsonl", main, start)
    loop = Loop(accelerator, model, optimizer, iter(loader), total, warmup, peak, final, per_epoch, out, logbook,
                recipe.grad_accum, recipe.clip_grad, recipe.save_every, recipe.keep_last, callbacks or [], progress,
                dtype)
    best = run_steps(loop, step, best, loss_fn, after_step)
    step = total
    for handle in handles:
        handle.remove()
    result = _evaluate(accelerator, model, test, test_infos, spec, mean, std, data.workers, dtype)
    if best is None or result["top1"] > best["top1"] or not recipe.eval_every:
        best = {"step": step, "top1": result["top1"]}
    _save_model(accelerator, model, out / "model", model_dir, force=True)
    info = manifest("finetune", open_checkpoint(model_dir).files, {k: (str(v) if isinstance(v, Path) else v) for k, v in (arguments or {}).items()})
    info.update({"model": str(model_dir.resolve()), "recipe": recipe.to_dict(), "clip": asdict(spec),
                 "data": {"train": train.source, "test": test.source, "train_videos": len(train),
                          "test_videos": len(test), "classes": train.classes,
                          "skipped": train.skipped + test.skipped},
                 "seed": seed, "world_size": world, "steps": total, "warmup_steps": warmup,
                 "total_batch": recipe.total_batch(world),
                 "clips_per_step": recipe.total_batch(world) * recipe.num_sample, "peak_lr": peak,
                 "final": _public(result),
                 "best": best, "resumes": resumes})
    if main:  # the run's own files: a resumed run that stopped while writing them rewrites them
        write_eval_outputs(out, result, test.paths, {"model": str(out / "model")}, plot=plots, force=True)
        write_text(out / "gardener.json", json.dumps(info, indent=2) + "\n", force=True)
    accelerator.wait_for_everyone()
    return info


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("probs", "labels", "index")}


def _evaluate(accelerator, model, split, infos, spec, mean, std, workers, dtype=None) -> dict:
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
            accelerator.unwrap_model(model).save_pretrained(tmp)
            processor = Path(model_dir) / "preprocessor_config.json"
            if processor.is_file():
                shutil.copy2(processor, tmp / processor.name)
    accelerator.wait_for_everyone()


def evaluate_model(model_dir: str | Path, data: DataOptions, *, frames: int | None = None, size: int | None = None,
                   sampling_rate: int = 4, test_clips: int = 5, test_crops: int = 3, seed: int = 0,
                   out: str | Path | None = None, force: bool = False, arguments: dict | None = None) -> dict:
    """Multi-clip multi-crop evaluation of a saved classifier on the test split of `data`.

    The data's class names must be among the model's `id2label`; labels follow the model's
    numbering. With `out`, the folder gets eval.json, predictions.csv and the confusion matrix.
    """
    from transformers import VideoMAEForVideoClassification

    from ..checkpoint import open_checkpoint
    from ..fileio import check_writable
    from ..fixed_tables import fast_tables

    model_dir = Path(model_dir)
    config = _videomae_config(model_dir)
    spec = clip_spec_for(config, frames, size, sampling_rate=sampling_rate, test_clips=test_clips,
                         test_crops=test_crops)
    if out is not None:
        check_writable(Path(out), force)
    _, (test, infos) = load_splits(data, seed, need_train=False)
    names = [config.id2label[i] for i in range(config.num_labels)]
    unknown = [c for c in test.classes if c not in names]
    if unknown:
        raise GardenerError(f"{model_dir}: the model's classes ({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}) "
                            f"do not include {unknown[0]!r} of the data ({len(unknown)} unknown)")
    remap = [names.index(c) for c in test.classes]
    test = VideoSplit(test.paths, [remap[label] for label in test.labels], names, test.source, test.skipped)
    accelerator = make_accelerator()
    extra = {"image_size": spec.size} if spec.size != config.image_size else {}
    with fast_tables():
        model = VideoMAEForVideoClassification.from_pretrained(model_dir, attn_implementation="sdpa", **extra)
    model = accelerator.prepare(model.float())  # a float16 checkpoint is evaluated in float32
    mean, std = normalisation(model_dir)
    result = _evaluate(accelerator, model, test, infos, spec, mean, std, data.workers)
    info = manifest("evaluate", open_checkpoint(model_dir).files,
                    {k: (str(v) if isinstance(v, Path) else v) for k, v in (arguments or {}).items()})
    info.update({"model": str(model_dir.resolve()), "data": test.source, "clip": asdict(spec),
                 "skipped": test.skipped, "seed": seed})
    if out is not None and accelerator.is_main_process:
        with atomic_dir(out, force) as tmp:
            write_eval_outputs(tmp, result, test.paths, {"manifest": info})
    result["manifest"] = info
    result["paths"] = [str(p) for p in test.paths]
    return result
