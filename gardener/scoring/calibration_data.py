"""Calibration data as model inputs: the checkpoint's model, and a few clips or token sequences in batches.

What the calibration pass (`calibration.py`) runs the model on; the checks that fail before any
model loads live here too.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from ..errors import GardenerError
from .placement import attention_of, check_placement, placement_kwargs
from .settings import LAST_OUTPUTS, TOKENS, CalibOptions


# the model classes whose task loss skip_loss reads (by the end of the class name, or the whole name)
TASK_LOSS_ENDINGS = ("ForCausalLM", "LMHeadModel", "Classification")
TASK_LOSS_CLASSES = ("VideoMAEForPreTraining", "ViTMAEForPreTraining")
NEEDS_TASK_LOSS = ("it needs a classifier of the data's classes, a masked pretraining model (VideoMAE, ViTMAE) or a "
                   "causal language model")


def architectures_of(path: str | Path) -> list[str]:
    """The model classes config.json names; an error, before any work, where there is no config.json."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise GardenerError(f"{path}: calibration criteria run the model's forward pass, which needs a transformers "
                            f"model directory with config.json (this checkpoint has none); save the model with "
                            f"save_pretrained (or `gardener convert` an original VideoMAE) first")
    return json.loads(config_file.read_text()).get("architectures") or []


def task_loss_problem(path: str | Path) -> str | None:
    """Why skip_loss cannot run on this model, from config.json alone (None: its class has a task loss)."""
    name = next(iter(architectures_of(path)), "")
    if name.endswith(TASK_LOSS_ENDINGS) or name in TASK_LOSS_CLASSES:
        return None
    return f"a {name} has no task loss" if name else "its config.json names no architecture"


def load_model(path: str | Path, options: CalibOptions | None = None, offload: Path | None = None,
               device_map: dict | None = None):
    """The checkpoint's `transformers` model (its own architecture, eval mode) on the best device: float32 with eager
    attention (training and evaluation), or as a calibration pass's `options` ask: SDPA attention where the class
    has it, their dtype, and where `device_map` ({module: device}, see `device_map_of`) places it, the `offload`
    folder for "disk"."""
    import torch

    path = Path(path)
    cls = model_class(path)
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # gardener's own output stays one line per event
    placing = logging.getLogger("accelerate.big_modeling")  # "offloaded to the disk": the record says where
    level, _ = placing.level, placing.setLevel(logging.ERROR)
    try:
        if options is None:
            model = cls.from_pretrained(path, attn_implementation="eager").float()
        else:
            model = cls.from_pretrained(path, attn_implementation=attention_of(cls),
                                        **placement_kwargs(options, offload, device_map))
    finally:
        hf_logging.set_verbosity(verbosity)
        placing.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
    if device_map is not None:
        return model.eval()  # Accelerate's hooks move each block's inputs to where it runs
    return model.eval().to("cuda" if torch.cuda.is_available() else "cpu")


def model_class(path: Path):
    """The transformers class config.json's `architectures` names, or the one-line error."""
    import transformers

    architectures = architectures_of(path)
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise GardenerError(f"{path / 'config.json'}: names no transformers architecture this version has "
                            f"({architectures or 'none'}); cannot run its forward pass")
    return cls


def check_data(options: CalibOptions) -> Path:
    """The calibration data's path, or the one-line error saying what is missing (before any model loads)."""
    if options.calib_data is None:
        raise GardenerError("calibration criteria run the model on data: give --calib-data (any dataset `finetune` "
                            "accepts; for text models a .txt file or a .jsonl of text or input_ids)")
    if not Path(options.calib_data).exists():
        raise GardenerError(f"--calib-data {options.calib_data}: no such file or folder")
    if min(options.calib_clips, options.calib_batch, options.span) < 1 or options.calib_seq_len < 2:
        raise GardenerError("--calib-clips, --calib-batch and --span must be at least 1, --calib-seq-len at least 2")
    if options.tokens is not None and options.tokens not in TOKENS:
        raise GardenerError(f"--tokens {options.tokens!r}: expected one of {', '.join(TOKENS)}")
    if options.last_output not in LAST_OUTPUTS:
        raise GardenerError(f"--last-output {options.last_output!r}: expected one of {', '.join(LAST_OUTPUTS)}")
    check_placement(options)
    return Path(options.calib_data)


def calibration_batches(model, path: Path, options: CalibOptions, seed: int, notes: list[str] | None = None
                        ) -> list[dict]:
    """The calibration set as model inputs, deterministic for a seed: {inputs, labels, mask, items} batches.

    `mask` (B, tokens) marks the real tokens of token models (None: every token is real); `items`
    counts the distinct videos or sequences read. What deserves a warning goes to `notes`.
    """
    from ..families import input_kind

    check_data(options)
    notes = [] if notes is None else notes
    kind = input_kind(getattr(model.config, "model_type", ""))
    if kind == "tokens":
        return _token_batches(model.config, path, options, seed, notes)
    if kind == "image" and _holds_images(Path(options.calib_data)):
        return _image_batches(model.config, path, options, seed)
    return _video_batches(model.config, path, kind, options, seed)


def _holds_images(root: Path) -> bool:
    """Whether a calibration folder holds class folders of images (else it is read as videos)."""
    from ..data.images import IMAGE_SUFFIXES

    return root.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*") if p.is_file())


def _image_batches(config, path: Path, options: CalibOptions, seed: int) -> list[dict]:
    """An image model's calibration set from class folders of images (their training split): one centre crop
    each, at the model's size and normalisation."""
    import torch

    from ..data.images import ImageSpec, eval_view, read_image_splits
    from ..train.evaluate import normalisation, to_model_input

    try:
        split, _ = read_image_splits(Path(options.calib_data), None, 0.2, seed)
    except GardenerError as exc:
        raise GardenerError(str(exc).replace("--data", "--calib-data")) from None
    chosen = np.random.default_rng([seed, 11]).permutation(len(split))[:options.calib_clips].tolist()
    views = torch.from_numpy(np.stack([eval_view(split.paths[i], ImageSpec(config.image_size)) for i in chosen]))
    mean, std = normalisation(path)
    pixels = to_model_input(views, mean, std)
    label_ids = _model_labels(config, split.classes, [split.labels[i] for i in chosen])
    return [{"inputs": {"pixel_values": pixels[i:i + options.calib_batch]}, "mask": None, "items": len(chosen),
             "labels": None if label_ids is None else label_ids[i:i + options.calib_batch]}
            for i in range(0, len(pixels), options.calib_batch)]


def _video_batches(config, path: Path, kind: str, options: CalibOptions, seed: int) -> list[dict]:
    import torch

    from ..data import ClipSpec, EvalClips, probe_all, read_split
    from ..train.evaluate import normalisation, to_model_input

    try:
        split = read_split(options.calib_data, "train", seed=seed)
    except GardenerError as exc:
        raise GardenerError(str(exc).replace("--data", "--calib-data")) from None
    split, infos = probe_all(split, 4, strict=False)
    if not len(split):
        raise GardenerError(f"--calib-data {options.calib_data}: no readable video")
    chosen = np.random.default_rng([seed, 11]).permutation(len(split))[:options.calib_clips].tolist()
    per_video = math.ceil(options.calib_clips / len(split))
    frames = 1 if kind == "image" else config.num_frames
    spec = ClipSpec(frames=frames, size=config.image_size, test_clips=per_video, test_crops=1)
    dataset = EvalClips(split.subset(chosen), [infos[i] for i in chosen], spec)
    views, labels = [], []
    for item in (dataset[i] for i in range(len(dataset))):
        views += list(item["pixel_values"])
        labels += [item["labels"]] * len(item["pixel_values"])
    mean, std = normalisation(path)
    pixels = to_model_input(torch.stack(views[:options.calib_clips]), mean, std)  # (N, T, C, H, W)
    if kind == "image":
        pixels = pixels[:, 0]  # (N, C, H, W)
    label_ids = _model_labels(config, split.classes, labels[:options.calib_clips])
    videos = len(chosen)
    return [{"inputs": {"pixel_values": pixels[i:i + options.calib_batch]}, "mask": None, "items": videos,
             "labels": None if label_ids is None else label_ids[i:i + options.calib_batch]}
            for i in range(0, len(pixels), options.calib_batch)]


def _model_labels(config, classes: list[str], labels: list[int]):
    """The data's labels in the model's numbering (by class name), or None when they do not all match."""
    import torch

    label2id = {str(k): v for k, v in (getattr(config, "label2id", None) or {}).items()}
    if not all(classes[y] in label2id for y in labels):
        return None
    return torch.tensor([label2id[classes[y]] for y in labels])


def _token_batches(config, model_dir: Path, options: CalibOptions, seed: int, notes: list[str]) -> list[dict]:
    """Token sequences (from text or ids), each read once, batched by equal length so that no padding is added."""
    import torch

    from ..data.text import read_sequences

    path = Path(options.calib_data)
    rows = read_sequences(path, Path(model_dir), options.calib_seq_len, getattr(config, "vocab_size", None))
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    longest = max(len(r.ids) for r in rows)
    if isinstance(limit, int) and longest > limit:
        raise GardenerError(f"--calib-data {path}: a sequence of {longest} tokens is longer than the model's "
                            f"{limit} positions; give shorter sequences (--calib-seq-len for text)")
    if options.calib_clips > len(rows):
        notes.append(f"--calib-clips {options.calib_clips}: {path} holds {len(rows)} sequences; all {len(rows)} are "
                     f"read, none twice")
    order = np.random.default_rng([seed, 11]).permutation(len(rows))[:options.calib_clips]
    by_length: dict[int, list] = {}
    for i in order:
        by_length.setdefault(len(rows[i].ids), []).append(rows[i])
    batches = []
    for _, group in sorted(by_length.items()):
        for i in range(0, len(group), options.calib_batch):
            part = group[i:i + options.calib_batch]
            mask = torch.tensor([r.mask for r in part])
            inputs = {"input_ids": torch.tensor([r.ids for r in part]), "attention_mask": mask}
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            if bool(((positions != torch.arange(mask.shape[1])) & (mask == 1)).any()):  # left padding
                inputs["position_ids"] = positions  # real tokens at the positions they hold unpadded
            batches.append({"inputs": inputs, "labels": None, "mask": mask, "items": len(order)})
    return batches
