"""Benchmark: calibration scoring of a VideoMAE-B classifier (12 blocks, hidden 768, 16 x 224 x 224 clips).

Writes a randomly initialised VideoMAE-B classifier and UCF101-like videos (320x240 .avi, 125
frames), then times gardener.score with the calibration criteria:
  (a) block_influence + angular_distance: one forward pass over --clips clips (default 64);
  (b) skip_loss: one pass per block plus the full model, over --skip-clips clips (default 8:
      13 passes of VideoMAE-B are slow on a CPU; the cost grows linearly with the clips).
Prints seconds per stage, clips/s, and the device. Weights are random: the times, not the
scores, are the point.

    python bench/calib_bench.py [--workdir bench/_work] [--clips 64] [--skip-clips 8]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import transformers as T

import gardener
from gardener.scoring import CalibOptions
from gardener.data.synthetic import make_dataset

CLASSES = ("move_up", "move_down", "grow", "shrink")


def setup(work: Path) -> tuple[Path, Path]:
    model_dir, data = work / "videomae-b-classifier", work / "calib-videos"
    if not (data / "videos").is_dir():
        make_dataset(data, classes=CLASSES, per_class=2, frames=125, ucf101_like=True, seed=0)
    if not (model_dir / "config.json").is_file():
        config = T.VideoMAEConfig(num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
                                  label2id={c: i for i, c in enumerate(CLASSES)})  # VideoMAE-B's defaults
        torch.manual_seed(0)
        T.VideoMAEForVideoClassification(config).save_pretrained(model_dir)
    return model_dir, data / "videos"


def timed(model_dir: Path, data: Path, criteria: str, clips: int) -> tuple[float, dict]:
    start = time.perf_counter()
    result = gardener.score(model_dir, criteria, primary=criteria.split(",")[0],
                            calib=CalibOptions(data, calib_clips=clips, calib_batch=8))
    return time.perf_counter() - start, result.meta["calibration"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--skip-clips", type=int, default=8)
    args = parser.parse_args()
    model_dir, data = setup(args.workdir)
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    print(f"VideoMAE-B classifier, 16x224x224 clips, device {device}, torch {torch.__version__}")
    print("| criteria | clips | total s | forward-pass s | clips/s (pass) |")
    print("| --- | --- | --- | --- | --- |")
    for criteria, clips in (("block_influence,angular_distance", args.clips), ("skip_loss", args.skip_clips)):
        total, record = timed(model_dir, data, criteria, clips)
        key = "hidden_states" if "skip_loss" not in criteria else "skip_loss"
        seconds = record["seconds"][key]
        passes = 1 if key == "hidden_states" else 13  # skip_loss: the full model and each of 12 blocks skipped
        print(f"| {criteria} | {record['clips']} | {total:.1f} | {seconds:.1f} | "
              f"{record['clips'] * passes / seconds:.2f} |")


if __name__ == "__main__":
    main()
