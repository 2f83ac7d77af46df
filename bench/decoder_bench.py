"""Benchmark: which decoder reads a training clip fastest, one core, no DataLoader.

For each UCF101-like file (`make-data --ucf101-like`, made by bench/data_bench.py), read the 16
frames of a training clip at stride 4 from a random start, as uint8 RGB: PyAV as gardener does
(`read_frames`: decode to the last needed frame, convert only the sampled ones), decord's
`get_batch` (one thread) when decord is installed, and torchcodec's CPU decoder when it loads.

    python bench/decoder_bench.py [--workdir bench/_work] [--clips 200]
"""
from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from gardener.data import ClipSpec
from gardener.data.clips import train_indices
from gardener.data.video import probe, read_frames


def pyav(paths, infos, plans):
    for k, (index, frames) in enumerate(plans):
        read_frames(paths[index], frames, infos[index])


def decord_reader(paths, infos, plans):
    import decord

    for index, frames in plans:
        decord.VideoReader(str(paths[index]), num_threads=1).get_batch(list(frames)).asnumpy()


def torchcodec_reader(paths, infos, plans):
    from torchcodec.decoders import VideoDecoder

    for index, frames in plans:
        VideoDecoder(str(paths[index]), seek_mode="approximate").get_frames_at(indices=[int(f) for f in frames])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--clips", type=int, default=200)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    paths = sorted((args.workdir / "ucf101_like" / "videos").rglob("*.avi"))
    if not paths:
        raise SystemExit("no UCF101-like files: run bench/data_bench.py first")
    infos = [probe(p) for p in paths]
    spec = ClipSpec(frames=16, sampling_rate=4, size=224)
    rng = np.random.default_rng(0)
    plans = [(k % len(paths), train_indices(infos[k % len(paths)].frames, spec, rng)) for k in range(args.clips)]
    print(f"# decoder_bench {date.today()} on {platform.machine()}, one thread, {len(paths)} files, "
          f"{args.clips} clips of 16 frames at stride 4 (320x240 MPEG-4 Part 2)")
    for name, reader in (("PyAV (gardener's read_frames)", pyav), ("decord get_batch", decord_reader),
                         ("torchcodec (CPU)", torchcodec_reader)):
        try:
            reader(paths, infos, plans[:2])  # warm-up, and whether it is installed and loads
        except (ImportError, OSError, RuntimeError) as exc:
            print(f"{name}: not measured ({exc.__class__.__name__}: {str(exc).splitlines()[0][:100]})")
            continue
        start = time.perf_counter()
        reader(paths, infos, plans)
        seconds = time.perf_counter() - start
        print(f"{name}: {1000 * seconds / len(plans):.1f} ms per clip, {len(plans) / seconds:.0f} clips/s")


if __name__ == "__main__":
    main()
