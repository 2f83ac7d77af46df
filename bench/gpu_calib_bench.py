"""Benchmark for a GPU machine: calibration of a model larger than the GPU memory it is given, and bfloat16 there.

A random bf16 LLaMA checkpoint of TinyLlama's width (large_bench's builder; 22 blocks: 2.2 GB) and a calibration set
of random token ids. In this process, each run from a fresh CUDA peak, `gardener.score(..., block_influence,
angular_distance)`:
  (a) the whole model on the GPU in bfloat16 (it fits): the reference;
  (b) `device_map="auto"` with `--gpu-memory` of the GPU (less than the model's weights): the rest in CPU memory;
  (c) block by block (`sequential`) in bfloat16: one block's weights on the GPU at a time;
  (d) block by block in float32.
For each: seconds, peak GPU memory (torch.cuda.max_memory_allocated), and the largest relative difference of its
scores from (a)'s ((d) against float32 is the bfloat16 round-off). Without a GPU it runs the same on the CPU (a dry
run of the script: peak GPU memory reads 0).

    python bench/gpu_calib_bench.py [--workdir bench/_work] [--depth 22] [--sequences 32] [--seq-len 512]
                                    [--gpu-memory 1GiB]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

from _common import print_table
from large_bench import build, tensors
from sequential_bench import difference

CRITERIA = ["block_influence", "angular_distance"]


def calibration_set(path: Path, count: int, length: int, vocab: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(count)
    path.write_text("".join(json.dumps({"input_ids": rng.integers(2, vocab, length).tolist()}) + "\n"
                            for _ in range(count)))
    return path


def measure(model: Path, data: Path, args, **options) -> tuple[float, float, dict]:
    """Seconds, peak GPU memory (MB) and scores of one calibration run."""
    import torch

    import gardener
    from gardener.scoring import CalibOptions

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    calib = CalibOptions(calib_data=data, calib_clips=args.sequences, calib_batch=8, calib_seq_len=args.seq_len,
                         **options)
    start = time.perf_counter()
    result = gardener.score(model, CRITERIA, primary=None, calib=calib)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return seconds, peak, result.scores


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--depth", type=int, default=22)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--gpu-memory", default="1GiB", help="what the device-map run may hold on GPU 0")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = build(args.workdir / f"llama_{args.depth}", args.depth)
    weights_gb = sum(2 * int(torch.tensor(shape).prod()) for _, shape in tensors(args.depth)) / 2**30
    data = calibration_set(args.workdir / f"gpu_calib_{args.sequences}.jsonl", args.sequences, args.seq_len, 32000)
    gpu = torch.cuda.is_available()
    runs = {"whole model, bfloat16": measure(model, data, args, calib_dtype="bfloat16")}
    runs[f"device map auto, GPU 0 limited to {args.gpu_memory}, bfloat16"] = measure(
        model, data, args, calib_dtype="bfloat16", device_map="auto",
        max_memory=f"0={args.gpu_memory},cpu=100GiB" if gpu else "cpu=100GiB")
    runs["block by block, bfloat16"] = measure(model, data, args, calib_dtype="bfloat16", sequential=True)
    runs["block by block, float32"] = measure(model, data, args, sequential=True)
    reference = runs["whole model, bfloat16"][2]
    device = torch.cuda.get_device_name() if gpu else f"CPU ({platform.machine()}, dry run)"
    print(f"# gpu_calib_bench {date.today()} on {device}; python {platform.python_version()}, torch "
          f"{torch.__version__}, transformers {transformers.__version__}; {args.depth} blocks ({weights_gb:.2f} GiB "
          f"in bf16), {args.sequences} sequences of {args.seq_len} tokens")
    print_table(["run", "seconds", "peak GPU memory (MB)", "largest relative difference from the whole model"],
                [[name, f"{s:.1f}", f"{peak:.0f}", f"{difference(reference, scores):.1e}"]
                 for name, (s, peak, scores) in runs.items()])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
