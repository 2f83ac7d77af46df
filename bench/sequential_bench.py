"""Benchmark: calibration criteria on LLaMA-shaped checkpoints, the whole model against block by block and offloaded.

Random LLaMA checkpoints (hidden 512, MLP 1408, 8 heads, 2 key/value heads, vocabulary 32000, bf16) of 4, 8 and 16
blocks, and calibration sets of 16, 32 and 64 sequences of 128 tokens (batches of 8). For each pair, a separate
process runs `gardener score DIR --criteria block_influence,angular_distance --calib-data SET` as the whole model
(float32, in memory), with `--calib-sequential` (one block at a time), and with `--calib-device-map auto
--calib-max-memory cpu=MEM` (Accelerate's big-model inference: what does not fit in MEM of CPU memory waits on disk);
a wrapper reads its peak RSS. Each run's scores are compared with the whole model's (largest relative difference).

    python bench/sequential_bench.py [--workdir bench/_work] [--depths 4,8,16] [--sizes 16,32,64] [--cpu-memory 200MB]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

from _common import print_table
from large_bench import measured

HIDDEN, MLP, HEADS, KV_HEADS, VOCAB, TOKENS = 512, 1408, 8, 2, 32000, 128


def build(path: Path, depth: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if not (path / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=depth,
                             num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, vocab_size=VOCAB)
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


def calibration_set(path: Path, count: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(count)
    lines = [json.dumps({"input_ids": rng.integers(2, VOCAB, TOKENS).tolist()}) for _ in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(model: Path, data: Path, count: int, out: Path, flags: list[str]) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "gardener", "score", str(model), "--criteria", "block_influence,angular_distance",
           "--criterion", "block_influence", "--calib-data", str(data), "--calib-clips", str(count),
           "--calib-batch", "8", "--json", str(out), "--force", *flags]
    seconds, rss = measured(cmd)
    return seconds, rss, {n: c["scores"] for n, c in json.loads(out.read_text())["criteria"].items()}


def difference(a: dict, b: dict) -> float:
    return max(abs(x - y) / max(abs(x), 1e-12) for n in a for x, y in zip(a[n], b[n]))


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--depths", default="4,8,16")
    parser.add_argument("--sizes", default="16,32,64")
    parser.add_argument("--cpu-memory", default="200MB", help="--calib-max-memory cpu= of the offloaded runs")
    args = parser.parse_args()
    offload = ["--calib-device-map", "auto", "--calib-max-memory", f"cpu={args.cpu_memory}"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in [int(d) for d in args.depths.split(",")]:
        model = build(args.workdir / f"calib_llama_{depth}", depth)
        for count in [int(c) for c in args.sizes.split(",")]:
            data = calibration_set(args.workdir / f"calib_{count}.jsonl", count)
            whole = run(model, data, count, args.workdir / "whole.json", [])
            seq = run(model, data, count, args.workdir / "sequential.json", ["--calib-sequential"])
            off = run(model, data, count, args.workdir / "offloaded.json", offload)
            rows.append((depth, count, whole, seq, off, max(difference(whole[2], seq[2]), difference(whole[2], off[2]))))
            print(f"# {depth} blocks, {count} sequences done", file=sys.stderr, flush=True)
    print(f"# sequential_bench {date.today()} on {platform.machine()}, python {platform.python_version()}, torch "
          f"{torch.__version__}, transformers {transformers.__version__}")
    print_table(["blocks", "sequences", "whole model (s, RSS MB)", "block by block (s, RSS MB)",
                 f"offloaded, cpu={args.cpu_memory} (s, RSS MB)", "largest relative difference"],
                [[str(depth), str(count), *(f"{r[0]:.1f}, {r[1]:.0f}" for r in (whole, seq, off)), f"{diff:.1e}"]
                 for depth, count, whole, seq, off, diff in rows])

if __name__ == "__main__":
    main()
