"""Calibration: a few clips (or token sequences) through the model, for the peers' data-aware criteria.

ShortGPT's block influence, Gromov et al.'s angular distance and SLEB's skip loss all score blocks
from a forward pass over a small calibration set instead of from the weights alone. One pass keeps
every block's input hidden state; the cosine statistics of every pair of positions are summed per
batch, so memory holds one batch, not the set. The input a model takes comes from its registered
family (`model_types`: video, image or tokens).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GardenerError


@dataclass(frozen=True)
class CalibOptions:
    """Where the calibration data is and how much of it a calibration pass reads."""

    calib_data: Path | None = None  # any dataset `finetune` accepts; token models: a .jsonl of input_ids
    calib_clips: int = 64  # clips (or sequences) in the pass
    span: int = 1  # blocks per span for angular_distance (Gromov et al. remove n contiguous blocks)
    calib_batch: int = 8

    def inputs(self) -> list[tuple[str, Path]]:
        """The paths an output must not touch."""
        return [("the calibration data", self.calib_data)] if self.calib_data else []


def load_model(path: str | Path):
    """The checkpoint's `transformers` model (its own architecture, float32, eval mode) on the best device."""
    import torch
    import transformers

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise GardenerError(f"{path}: calibration criteria run the model's forward pass, which needs a transformers "
                            f"model directory with config.json (this checkpoint has none); save the model with "
                            f"save_pretrained (or `gardener convert` an original VideoMAE) first")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise GardenerError(f"{config_file}: names no transformers architecture this version has "
                            f"({architectures or 'none'}); cannot run its forward pass")
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # gardener's own output stays one line per event
    try:
        model = cls.from_pretrained(path, attn_implementation="eager").float().eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def check_data(options: CalibOptions) -> Path:
    """The calibration data's path, or the one-line error saying what is missing (before any model loads)."""
    if options.calib_data is None:
        raise GardenerError("calibration criteria run the model on data: give --calib-data (any dataset `finetune` "
                            "accepts; a .jsonl of input_ids for text models)")
    if not Path(options.calib_data).exists():
        raise GardenerError(f"--calib-data {options.calib_data}: no such file or folder")
    if options.calib_clips < 1 or options.calib_batch < 1 or options.span < 1:
        raise GardenerError("--calib-clips, --calib-batch and --span must be at least 1")
    return Path(options.calib_data)


def calibration_batches(model, path: Path, options: CalibOptions, seed: int) -> list[dict]:
    """The calibration set as model inputs, deterministic for a seed: lists of {inputs, labels} batches."""
    from .families import input_kind

    check_data(options)
    kind = input_kind(getattr(model.config, "model_type", ""))
    if kind == "tokens":
        return _token_batches(Path(options.calib_data), options, seed)
    return _video_batches(model.config, path, kind, options, seed)


def _video_batches(config, path: Path, kind: str, options: CalibOptions, seed: int) -> list[dict]:
    import torch

    from .data import ClipSpec, EvalClips, probe_all, read_split
    from .train.evaluate import normalisation, to_model_input

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
    return [{"inputs": {"pixel_values": pixels[i:i + options.calib_batch]},
             "labels": None if label_ids is None else label_ids[i:i + options.calib_batch]}
            for i in range(0, len(pixels), options.calib_batch)]


def _model_labels(config, classes: list[str], labels: list[int]):
    """The data's labels in the model's numbering (by class name), or None when they do not all match."""
    import torch

    label2id = {str(k): v for k, v in (getattr(config, "label2id", None) or {}).items()}
    if not all(classes[y] in label2id for y in labels):
        return None
    return torch.tensor([label2id[classes[y]] for y in labels])


def _token_batches(path: Path, options: CalibOptions, seed: int) -> list[dict]:
    """Token sequences from a .jsonl of {"input_ids": [...]}, batched by equal length (no padding)."""
    import torch

    if path.suffix != ".jsonl" or not path.is_file():
        raise GardenerError(f"--calib-data {path}: a text model takes a .jsonl file of {{\"input_ids\": [...]}} lines")
    try:
        rows = [json.loads(line)["input_ids"] for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError) as exc:
        raise GardenerError(f"--calib-data {path}: every line must be a JSON object with input_ids ({exc})") from None
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        raise GardenerError(f"--calib-data {path}: no sequence of at least 2 tokens")
    order = np.random.default_rng([seed, 11]).permutation(len(rows))
    chosen = [rows[i] for i in np.resize(order, options.calib_clips)]
    by_length: dict[int, list] = {}
    for row in chosen:
        by_length.setdefault(len(row), []).append(row)
    return [{"inputs": {"input_ids": torch.tensor(group[i:i + options.calib_batch])}, "labels": None}
            for _, group in sorted(by_length.items()) for i in range(0, len(group), options.calib_batch)]


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


def _hidden_of(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


class CalibrationPass:
    """A model, its calibration batches and the stack under study; statistics computed once, on demand.

    `angles[i][j]` (i < j) is the mean over tokens and clips of arccos(cos(h_i, h_j)) / pi, and
    `one_minus_cos[i][j]` the mean of 1 - cos(h_i, h_j), where h_i is the input of block i
    (0-based) and h_depth the output of the last block.
    """

    def __init__(self, path: str | Path, options: CalibOptions, stack: str | None = None, seed: int = 0):
        import torch

        from .blocks import choose_stack

        torch.manual_seed(seed)
        check_data(options)
        self.path, self.options, self.seed = Path(path), options, seed
        self.model = load_model(self.path)
        names = [name for name, _ in self.model.named_parameters()]
        named = stack is not None and any(n.startswith(f"{stack}.") for n in names)
        self.stack = choose_stack(names, stack if named else None, where=str(self.path))  # else the default
        self.blocks = self.model.get_submodule(self.stack.name)
        self.batches = calibration_batches(self.model, self.path, options, seed)
        self.clips = sum(len(next(iter(b["inputs"].values()))) for b in self.batches)
        self.seconds: dict[str, float] = {}

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @cached_property
    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        import torch

        start, depth = time.monotonic(), self.depth
        angle_sum, cos_sum, count = np.zeros((depth + 1, depth + 1)), np.zeros((depth + 1, depth + 1)), 0
        for batch in self.batches:
            hidden = self._hidden_states(batch)
            count += hidden[0].shape[0] * hidden[0].shape[1]
            for i in range(depth):
                for j in range(i + 1, depth + 1):
                    cos = torch.nn.functional.cosine_similarity(hidden[i], hidden[j], dim=-1).clamp(-1, 1)
                    angle_sum[i, j] += float((torch.arccos(cos) / math.pi).sum())
                    cos_sum[i, j] += float((1 - cos).sum())
        self.seconds["hidden_states"] = time.monotonic() - start
        return angle_sum / count, cos_sum / count

    @property
    def angles(self) -> np.ndarray:
        return self._pairs[0]

    @property
    def one_minus_cos(self) -> np.ndarray:
        return self._pairs[1]

    def _hidden_states(self, batch: dict) -> list:
        """[input of block 0, ..., input of the last block, its output], each (B, tokens, D), float32."""
        import torch

        kept: list = []
        hooks = [block.register_forward_pre_hook(lambda m, a, k: kept.append(_hidden_of(a, k).float()),
                                                 with_kwargs=True) for block in self.blocks]
        hooks.append(self.blocks[-1].register_forward_hook(lambda m, a, o: kept.append(_first(o).float())))
        try:
            with torch.no_grad():
                self._base_forward(batch)
        finally:
            for hook in hooks:
                hook.remove()
        return [h.reshape(h.shape[0], -1, h.shape[-1]) for h in kept]

    def _base_forward(self, batch: dict):
        """The forward that reaches every block on every patch: the base model (no head, no masking)."""
        base = getattr(self.model, "base_model", self.model)
        inputs = {k: v.to(self.model.device) for k, v in batch["inputs"].items()}
        if getattr(base.config, "model_type", "") != "vit_mae":
            return base(**inputs)
        ratio, base.config.mask_ratio = base.config.mask_ratio, 0.0  # every patch, as at finetuning time
        try:
            return base(**inputs, noise=torch_noise(base.config, len(inputs["pixel_values"]), self.seed,
                                                      self.model.device))
        finally:
            base.config.mask_ratio = ratio

    @cached_property
    def skip_losses(self) -> list[float]:
        """The task loss with each block bypassed (its output replaced by its input), minus the full model's."""
        start = time.monotonic()
        full = self._mean_loss(None)
        out = [self._mean_loss(block) - full for block in self.blocks]
        self.seconds["skip_loss"] = time.monotonic() - start
        return out

    def _mean_loss(self, skipped) -> float:
        import torch

        hook = None
        if skipped is not None:
            hook = skipped.register_forward_hook(lambda m, a, k, o: _with_first(o, _hidden_of(a, k)), with_kwargs=True)
        try:
            total = 0.0
            with torch.no_grad():
                for batch in self.batches:
                    size = len(next(iter(batch["inputs"].values())))
                    total += float(self._loss(batch)) * size
            return total / self.clips
        finally:
            if hook is not None:
                hook.remove()

    def _loss(self, batch: dict):
        from .train.pretrain import tube_mask

        import torch

        inputs = {k: v.to(self.model.device) for k, v in batch["inputs"].items()}
        name = type(self.model).__name__
        if name.endswith("ForCausalLM"):
            return self.model(**inputs, labels=inputs["input_ids"]).loss
        if name == "VideoMAEForPreTraining":
            generator = torch.Generator().manual_seed(self.seed)
            mask = tube_mask(len(inputs["pixel_values"]), self.model.config, 0.9, generator)
            return self.model(**inputs, bool_masked_pos=mask.to(self.model.device)).loss
        if name == "ViTMAEForPreTraining":
            noise = torch_noise(self.model.config, len(inputs["pixel_values"]), self.seed, self.model.device)
            return self.model(**inputs, noise=noise).loss
        if name.endswith("Classification") and batch["labels"] is not None:
            logits = self.model(**inputs).logits
            return torch.nn.functional.cross_entropy(logits.float(), batch["labels"].to(logits.device))
        why = ("its labels are not the calibration data's classes" if name.endswith("Classification")
               else f"a {name} has no task loss")
        raise GardenerError(f"skip_loss on {self.path}: {why}; it needs a classifier of the data's classes, a masked "
                            f"pretraining model (VideoMAE, ViTMAE) or a causal language model")

    def summary(self) -> dict[str, Any]:
        """What the pass read and cost, and the span statistics a contiguous prune chooses from."""
        out = {"data": str(self.options.calib_data), "clips": self.clips, "span": self.options.span,
               "stack": self.stack.name, "device": str(self.model.device), "seed": self.seed,
               "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        if "hidden_states" in self.seconds:
            out["angles"] = self.angles.round(6).tolist()
        return out


def torch_noise(config, batch: int, seed: int, device):
    """ViTMAE's masking noise, fixed by the seed."""
    import torch

    patches = (config.image_size // config.patch_size) ** 2
    return torch.rand(batch, patches, generator=torch.Generator().manual_seed(seed)).to(device)


def contiguous_span(angles: list[list[float]], count: int) -> list[int]:
    """Gromov et al.: the `count` contiguous blocks (1-based) whose input and output are most alike."""
    depth = len(angles) - 1
    if not 1 <= count < depth:
        raise GardenerError(f"cannot remove {count} contiguous blocks of {depth}")
    start = min(range(depth - count + 1), key=lambda i: (angles[i][i + count], i))
    return list(range(start + 1, start + count + 1))
