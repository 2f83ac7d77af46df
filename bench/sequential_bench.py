"""Benchmark: calibration criteria on LLaMA-shaped checkpoints, the whole model against block by block.

Random LLaMA checkpoints (hidden 512, MLP 1408, 8 heads, 2 key/value heads, vocabulary 32000, bf16) of 4, 8 and 16
blocks, and calibration sets of 16, 32 and 64 sequences of 128 tokens (batches of 8). For each pair, a separate
process runs `gardener score DIR --criteria block_influence,angular_distance --calib-data SET` as the whole model
(float32, in memory) and with `--calib-sequential` (one block at a time); a wrapper reads its peak RSS. The two
runs' scores are compared (largest relative difference).

    python bench/sequential_bench.py [--workdir bench/_work] [--depths 4,8,16] [--sizes 16,32,64]
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


def run(model: Path, data: Path, count: int, out: Path, sequential: bool) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "gardener", "score", str(model), "--criteria", "block_influence,angular_distance",
           "--criterion", "block_influence", "--calib-data", str(data), "--calib-clips", str(count),
           "--calib-batch", "8", "--json", str(out), "--force"] + (["--calib-sequential"] if sequential else [])
    seconds, rss = measured(cmd)
    return seconds, rss, {n: c["scores"] for n, c in json.loads(out.read_text())["criteria"].items()}


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--depths", default="4,8,16")
    parser.add_argument("--sizes", default="16,32,64")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in [int(d) for d in args.depths.split(",")]:
        model = build(args.workdir / f"calib_llama_{depth}", depth)
        for count in [int(c) for c in args.sizes.split(",")]:
            data = calibration_set(args.workdir / f"calib_{count}.jsonl", count)
            whole = run(model, data, count, args.workdir / "whole.json", False)
            seq = run(model, data, count, args.workdir / "sequential.json", True)
            diff = max(abs(a - b) / max(abs(a), 1e-12) for n in whole[2] for a, b in zip(whole[2][n], seq[2][n]))
            rows.append((depth, count, whole, seq, diff))
            print(f"# {depth} blocks, {count} sequences done", file=sys.stderr, flush=True)
    print(f"# sequential_bench {date.today()} on {platform.machine()}, python {platform.python_version()}, torch "
          f"{torch.__version__}, transformers {transformers.__version__}")
    print_table(["blocks", "sequences", "whole model (s)", "whole model RSS (MB)", "block by block (s)",
                 "block by block RSS (MB)", "largest relative difference"],
                [[str(depth), str(count), f"{whole[0]:.1f}", f"{whole[1]:.0f}", f"{seq[0]:.1f}", f"{seq[1]:.0f}",
                  f"{diff:.1e}"] for depth, count, whole, seq, diff in rows])

if __name__ == "__main__":
    main()
