"""Benchmark: pruning a VideoMAE-B-sized HF checkpoint to 50 %, and what it buys at inference.

In one run, on a random VideoMAE-B (101 classes) saved with `save_pretrained` in float16
and in float32:
  (a) copying its model.safetensors (shutil.copyfile), the reference;
  (b) `prune_checkpoint(..., Cut(blocks=...))`: key surgery alone (6 of 12 blocks, explicit);
  (c) `prune_checkpoint(..., Cut(ratio=0.5))`: entropy scoring + surgery + GFLOPs, as `gardener prune`
      runs by default (with `allow_round_off`: on float32 weights the entropy ranking is round-off, which
      prune refuses otherwise; the work timed is the same);
  (d) peak RSS of a separate `gardener prune --ratio 0.5 --allow-round-off` process;
  (e) CPU forward latency, batch 1, of the unpruned and the pruned model loaded with stock
      `from_pretrained`, against the ideal ratio from GFLOPs for the same input.

    python bench/prune_bench.py [--workdir bench/_work] [--repeat 5] [--frames 16 --size 112]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from _common import best_of, child_peak_rss_mb
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from transformers.utils import logging as hf_logging

from gardener import manifest
from gardener.cost import InputSpec, gflops
from gardener.pruning import Cut, WriteOptions, prune_checkpoint

TIME_TARGET, RSS_TARGET_MB = 3.0, 1536


def build(path: Path, dtype: torch.dtype) -> Path:
    if not (path / "model.safetensors").exists():
        torch.manual_seed(0)
        VideoMAEForVideoClassification(VideoMAEConfig(num_labels=101)).to(dtype).save_pretrained(path)
    return path


def cold_hash(fn):
    """Run fn with gardener's per-process digest cache emptied, as a fresh `gardener` process runs."""
    def run():
        manifest._DIGESTS.clear()
        return fn()
    return run


def prune_times(src: Path, workdir: Path, repeat: int) -> dict:
    weights = src / "model.safetensors"
    workdir = workdir / f"{src.name}_out"
    workdir.mkdir(exist_ok=True)
    copy_s, _ = best_of(lambda: shutil.copyfile(weights, workdir / "copy.safetensors"), repeat)

    def surgery():
        return prune_checkpoint(src, workdir / "pruned_blocks", Cut(blocks=(2, 4, 6, 8, 10, 12)), write=WriteOptions(force=True))

    def by_ratio():
        return prune_checkpoint(src, workdir / "pruned", Cut(ratio=0.5, allow_round_off=True),
                                write=WriteOptions(force=True))

    surgery_s, _ = best_of(cold_hash(surgery), repeat)
    ratio_s, info = best_of(cold_hash(by_ratio), repeat)
    rss = child_peak_rss_mb(["prune", str(src), "--ratio", "0.5", "-o", str(workdir / "pruned_rss"), "--force",
                             "--allow-round-off"])
    return {"file_mb": weights.stat().st_size / 2**20, "copy_s": copy_s, "surgery_s": surgery_s,
            "ratio_s": ratio_s, "surgery_x_copy": surgery_s / copy_s, "ratio_x_copy": ratio_s / copy_s,
            "peak_rss_mb": rss, "removed": info["removed_blocks"]}


def latencies(paths: list[Path], spec: InputSpec, repeat: int) -> list[float]:
    """Median seconds of one batch-1 CPU forward pass per model, the models run alternately.

    Alternating (after two warm-up rounds) keeps drift in the machine's speed out of the ratio.
    """
    models = [VideoMAEForVideoClassification.from_pretrained(p, image_size=spec.size, num_frames=spec.frames,
                                                             attn_implementation="sdpa").eval() for p in paths]
    video = torch.randn(1, spec.frames, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(repeat + 2):
            for model, seen in zip(models, times):
                start = time.perf_counter()
                model(video)
                if i >= 2:
                    seen.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    args.workdir.mkdir(parents=True, exist_ok=True)
    half = prune_times(build(args.workdir / "videomae_b_f16", torch.float16), args.workdir, args.repeat)
    src = build(args.workdir / "videomae_b_f32", torch.float32)
    times = prune_times(src, args.workdir, args.repeat)
    spec = InputSpec(args.frames, args.size)
    config = json.loads((src / "config.json").read_text())
    pruned_config = json.loads((args.workdir / f"{src.name}_out" / "pruned" / "config.json").read_text())
    flops = (gflops(config, spec), gflops(pruned_config, spec))
    lat = latencies([src, args.workdir / f"{src.name}_out" / "pruned"], spec, 3 * args.repeat)
    row = {"float16": half, "float32": times, "gflops": flops, "latency_s": lat, "latency_ratio": lat[1] / lat[0],
           "gflops_ratio": flops[1] / flops[0], "threads": torch.get_num_threads(), "spec": vars(spec)}
    print(f"# prune_bench {date.today()} on {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}, torch {torch.__version__}, {row['threads']} threads")
    print("| dtype | weight file (MB) | copy (s) | prune, explicit blocks (s) | x copy | prune --ratio 0.5 (s) "
          "| x copy | target | peak RSS (MB) | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("float16", "float32"):
        r = row[name]
        print(f"| {name} | {r['file_mb']:.0f} | {r['copy_s']:.3f} | {r['surgery_s']:.3f} | {r['surgery_x_copy']:.2f} "
              f"| {r['ratio_s']:.3f} | {r['ratio_x_copy']:.2f} | <= {TIME_TARGET} | {r['peak_rss_mb']:.0f} "
              f"| < {RSS_TARGET_MB} |")
    print()
    print("| input | GFLOPs unpruned | GFLOPs pruned | GFLOPs ratio | latency unpruned (s) | latency pruned (s) "
          "| latency ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 1x{spec.frames}x3x{spec.size}x{spec.size} | {flops[0]:.1f} | {flops[1]:.1f} | {row['gflops_ratio']:.3f} "
          f"| {lat[0]:.3f} | {lat[1]:.3f} | {row['latency_ratio']:.3f} |")
    print(f"removed blocks (entropy): float16 {half['removed']}, float32 {times['removed']}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
