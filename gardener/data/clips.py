"""Clips as VideoMAE samples them, as uint8 tensors: one random clip for training, a grid of
evenly spaced clips x spatial crops for evaluation.

Every random choice of a training sample comes from a generator seeded by (seed, epoch, video),
so a sample is the same whichever worker decodes it and whether or not the run was resumed.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import GardenerError
from .sources import VideoSplit
from .video import VideoError, VideoInfo, probe, read_frames

log = logging.getLogger("gardener.data")


@dataclass(frozen=True)
class ClipOptions:
    """How a command cuts clips from videos; None takes the model's own frames and size."""

    frames: int | None = None
    size: int | None = None
    sampling_rate: int = 4  # stride between sampled frames
    test_clips: int = 5  # evenly spaced clips per video at evaluation
    test_crops: int = 3  # spatial crops per clip at evaluation
    min_crop_scale: float = 0.08  # smallest random-resized-crop area in training

    def evaluation(self) -> dict:
        """The options evaluation takes (all but the training crop)."""
        return {k: v for k, v in asdict(self).items() if k != "min_crop_scale"}


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut: frames per clip, the stride between them, the output size, eval views."""

    frames: int = 16
    sampling_rate: int = 4
    size: int = 224
    test_clips: int = 5
    test_crops: int = 3
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def __post_init__(self):
        from ..settings import check_number

        for name in ("frames", "sampling_rate", "size", "test_clips", "test_crops"):
            check_number("--" + name.replace("_", "-"), getattr(self, name), 1)
        check_number("--min-crop-scale", self.scale[0], 0, self.scale[1], above=True)


def train_indices(num_frames: int, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """One clip from a random start; frames past the end loop back to the start."""
    span = spec.frames * spec.sampling_rate
    start = int(rng.integers(0, max(1, num_frames - span + 1)))
    return (start + np.arange(spec.frames) * spec.sampling_rate) % num_frames


def eval_indices(num_frames: int, spec: ClipSpec) -> list[np.ndarray]:
    """`test_clips` clips with evenly spaced starts covering the video."""
    span = spec.frames * spec.sampling_rate
    last = max(0, num_frames - span)
    starts = np.linspace(0, last, spec.test_clips).round().astype(int) if spec.test_clips > 1 else [last // 2]
    return [(s + np.arange(spec.frames) * spec.sampling_rate) % num_frames for s in starts]


def _resize(clip, height: int, width: int):
    """uint8 (T, C, H, W) -> uint8 (T, C, height, width), bilinear with antialiasing, computed on the
    uint8 values themselves (PyTorch's uint8 kernel: about 13x faster here than going through float,
    which was most of a clip's cost; BENCHMARKS.md)."""
    import torch.nn.functional as F

    if clip.shape[-2:] == (height, width):
        return clip
    return F.interpolate(clip, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def random_resized_crop(clip, spec: ClipSpec, rng: np.random.Generator):
    """The same random area/aspect crop on every frame, resized to size x size (torchvision's rule)."""
    height, width = clip.shape[-2:]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*spec.scale)
        aspect = math.exp(rng.uniform(math.log(spec.ratio[0]), math.log(spec.ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            break
    else:  # fall back to a centre crop of the allowed aspect
        side = min(height, width)
        h = w = side
        top, left = (height - h) // 2, (width - w) // 2
    return _resize(clip[..., top:top + h, left:left + w], spec.size, spec.size)


def short_side_crops(clip, size: int, crops: int) -> list:
    """Resize the short side to `size`, then `crops` size x size crops spread along the long side."""
    height, width = clip.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    clip = _resize(clip, new_h, new_w)
    if crops == 1:
        offsets = [((new_h - size) // 2, (new_w - size) // 2)]
    elif new_w >= new_h:
        offsets = [((new_h - size) // 2, int(x)) for x in np.linspace(0, new_w - size, crops).round()]
    else:
        offsets = [(int(y), (new_w - size) // 2) for y in np.linspace(0, new_h - size, crops).round()]
    return [clip[..., y:y + size, x:x + size] for y, x in offsets]


def probe_all(split: VideoSplit, workers: int = 4, strict: bool = False) -> tuple[VideoSplit, list[VideoInfo]]:
    """Probe every video; unreadable ones are dropped (and listed in `skipped`), or fail with strict."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(_try_probe, split.paths))
    bad = [(path, r) for path, r in zip(split.paths, results) if isinstance(r, str)]
    if bad and strict:
        raise GardenerError(f"{len(bad)} unreadable video(s) (--strict): {bad[0][0]} ({bad[0][1]})")
    if bad:
        shown = "; ".join(f"{p.name} ({why})" for p, why in bad[:5])
        log.warning("skipping %d unreadable video(s) of %d: %s%s", len(bad), len(split), shown,
                    " ..." if len(bad) > 5 else "")
    keep = [i for i, r in enumerate(results) if not isinstance(r, str)]
    if not keep:
        raise GardenerError(f"{split.source}: none of its {len(split)} videos can be read")
    clean = split.subset(keep)
    clean.skipped += [{"path": str(p), "reason": why} for p, why in bad]
    return clean, [results[i] for i in keep]


_PROBED: dict[tuple, VideoInfo | str] = {}  # (path, size, mtime) -> info: a sweep probes each file once


def _try_probe(path) -> VideoInfo | str:
    try:
        stat = os.stat(path)
    except OSError as exc:
        return f"cannot open: {exc}"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _PROBED:
        try:
            info = probe(path)
            _PROBED[key] = info if info.frames > 0 else "no frames"
        except VideoError as exc:
            _PROBED[key] = str(exc)
    return _PROBED[key]


class TrainClips:
    """Map-style dataset of training clips; the key encodes (epoch, video) as epoch * len + video.

    With `num_sample` > 1 (VideoMAE's repeated augmentation), one decoded clip gives that many
    differently cropped and flipped samples: (num_sample, T, C, H, W) and as many labels.
    """

    def __init__(self, split: VideoSplit, infos: list[VideoInfo], spec: ClipSpec, seed: int = 0,
                 num_sample: int = 1):
        if num_sample < 1:
            raise GardenerError(f"--num-sample {num_sample}: expected at least 1")
        self.split, self.infos, self.spec, self.seed, self.num_sample = split, infos, spec, seed, num_sample

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int) -> dict:
        import torch

        epoch, index = divmod(int(key), len(self.split))
        rng = np.random.default_rng([self.seed, epoch, index])
        info = self.infos[index]
        frames = read_frames(self.split.paths[index], train_indices(info.frames, self.spec, rng), info)
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # T, C, H, W
        samples = []
        for _ in range(self.num_sample):
            clip = random_resized_crop(video, self.spec, rng)
            if self.spec.flip and rng.random() < 0.5:
                clip = clip.flip(-1)
            samples.append(clip.contiguous())
        label = self.split.labels[index]
        if self.num_sample == 1:
            return {"pixel_values": samples[0], "labels": label}
        return {"pixel_values": torch.stack(samples), "labels": [label] * self.num_sample}


class EvalClips:
    """Map-style dataset of every view of a video: (clips x crops, T, C, size, size) uint8."""

    def __init__(self, split: VideoSplit, infos: list[VideoInfo], spec: ClipSpec):
        self.split, self.infos, self.spec = split, infos, spec

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        import torch

        info = self.infos[index]
        clips = eval_indices(info.frames, self.spec)
        frames = read_frames(self.split.paths[index], np.concatenate(clips), info)
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)
        views = []
        for k in range(len(clips)):
            clip = video[k * self.spec.frames:(k + 1) * self.spec.frames]
            views += short_side_crops(clip, self.spec.size, self.spec.test_crops)
        return {"pixel_values": torch.stack(views), "labels": self.split.labels[index], "index": index}


class EpochSampler:
    """Endless batches of TrainClips keys: a permutation per epoch from (seed, epoch).

    A global batch holds `batch_size` x `world` videos and process `rank` takes every
    world-th of them. Starting at any batch is slicing the permutation, so a resumed run
    decodes nothing it skips.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.start_batch = size, batch_size, seed, start_batch
        self.rank, self.world = rank, world
        if self.batches_per_epoch == 0:
            raise GardenerError(f"{size} training samples make no batch of {batch_size * world}; "
                                f"lower --batch-size")

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world)

    def __iter__(self):
        batch, whole = self.start_batch, self.batch_size * self.world
        while True:
            epoch, position = divmod(batch, self.batches_per_epoch)
            order = np.random.default_rng([self.seed, epoch, 7]).permutation(self.size)
            chunk = order[position * whole:(position + 1) * whole][self.rank::self.world]
            yield [int(epoch * self.size + i) for i in chunk]
            batch += 1
