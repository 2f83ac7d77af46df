"""Benchmark: training clips/s the data pipeline delivers, with no model, in steady state.

Reads UCF101-like files (`make-data --ucf101-like`: 320x240 .avi, MPEG-4 Part 2 with B-frames,
25 fps, 5 s) through gardener's own DataLoader (`TrainClips`, `EpochSampler`, `make_loader`,
`collate`): decode up to the last needed frame, convert only the sampled frames, random-resized
crop to 224, flip. Warm-up batches are dropped, then batches are counted for at least --seconds.
Prints clips/s in all and per core (clips/s divided by min(workers, cores)), and, for the
profile, the time per clip of each stage in one process.

    python bench/data_bench.py [--workers 2] [--seconds 30] [--frames 16] [--rate 4] [--size 224] [--num-sample 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from gardener.data import ClipSpec, EpochSampler, TrainClips, probe_all, read_split
from gardener.data.clips import random_resized_crop, train_indices
from gardener.data.synthetic import make_dataset
from gardener.data.video import read_frames
from gardener.train.loop import make_loader
from gardener.train.state import collate


def data(workdir: Path, videos: int) -> Path:
    root = workdir / "ucf101_like"
    if not root.exists():
        make_dataset(root, classes=("move_up", "move_down", "grow", "shrink"), per_class=videos // 4, frames=125,
                     seed=0, ucf101_like=True)
    return root


def steady_rate(loader, batch: int, seconds: float, warmup: int = 3) -> tuple[float, int, float]:
    """Clips/s over at least `seconds` after `warmup` batches; also the clips and seconds counted."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        clips += len(next(iterator)["labels"])
    elapsed = time.perf_counter() - start
    return clips / elapsed, clips, elapsed


def stages(split, infos, spec: ClipSpec, count: int = 40) -> dict[str, float]:
    """Milliseconds per clip of each stage, in this process, one thread."""
    times = {"decode to the last needed frame, sampled frames to RGB": 0.0, "random-resized crop to size": 0.0,
             "flip": 0.0}
    for k in range(count):
        index = k % len(split)
        rng = np.random.default_rng(k)
        start = time.perf_counter()
        frames = read_frames(split.paths[index], train_indices(infos[index].frames, spec, rng), infos[index])
        middle = time.perf_counter()
        clip = random_resized_crop(torch.from_numpy(frames).permute(0, 3, 1, 2), spec, rng)
        end = time.perf_counter()
        clip.flip(-1).contiguous()
        times["decode to the last needed frame, sampled frames to RGB"] += middle - start
        times["random-resized crop to size"] += end - middle
        times["flip"] += time.perf_counter() - end
    return {name: 1000 * value / count for name, value in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-sample", type=int, default=1, help="augmented clips per decoded video")
    args = parser.parse_args()
    import av

    torch.set_num_threads(1)
    root = data(args.workdir, args.videos)
    split, infos = probe_all(read_split(root / "videos", "train", split_dir=root / "splits"))
    spec = ClipSpec(frames=args.frames, sampling_rate=args.rate, size=args.size)
    profile = stages(split, infos, spec)
    loader = make_loader(TrainClips(split, infos, spec, seed=0, num_sample=args.num_sample),
                         EpochSampler(len(split), args.batch, 0),
                         args.workers, 0, collate)
    rate, clips, seconds = steady_rate(loader, args.batch, args.seconds)
    cores = min(max(1, args.workers), os.cpu_count() or 1)
    print(f"# data_bench {date.today()} on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"decoder PyAV {av.__version__} (FFmpeg {av.library_versions['libavcodec']} libavcodec)")
    print(f"clips {args.frames}x{args.size}x{args.size}, stride {args.rate}, from {len(split)} UCF101-like .avi "
          f"files (320x240 MPEG-4 Part 2, B-frames, 25 fps, 125 frames)")
    print(f"--workers {args.workers} --num-sample {args.num_sample}: {rate:.1f} clips/s ({rate / cores:.1f} per "
          f"core) over {seconds:.0f} s, {clips} clips after 3 warm-up batches")
    print("one process, per clip: " + "; ".join(f"{name} {ms:.1f} ms" for name, ms in profile.items())
          + f" = {1000 / sum(profile.values()):.0f} clips/s")


if __name__ == "__main__":
    main()
