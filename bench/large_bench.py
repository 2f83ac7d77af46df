"""Benchmark: scoring and pruning LLaMA-shaped checkpoints of growing depth, memory and time against a floor.

Random bf16 checkpoints of TinyLlama-1.1B's width (hidden 2048, MLP 5632, 32 heads, 4 key/value heads, vocabulary
32000) saved as transformers saves them (500 MB shards and an index) at 1x, 2x and 4x its depth (22, 44, 88
blocks). Every measurement is a separate process whose peak RSS a wrapper reads (getrusage of its children):
  (a) `gardener score DIR --criteria entropy`;
  (b) the read floor: a process that reads every tensor of the blocks once (safetensors' safe_open, a sum of each);
  (c) `gardener prune DIR --ratio 0.5 -o OUT`, against (d) `cp -r DIR` (the copy a prune cannot beat).
The page cache is warmed first (a second run on a laptop); the best of --repeat runs is kept, and the largest RSS.

    python bench/large_bench.py [--workdir bench/_work] [--depths 22,44,88] [--repeat 2] [--all-criteria]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HIDDEN, MLP, HEADS, KV_HEADS, VOCAB = 2048, 5632, 32, 4, 32000
SHARD_BYTES = 500 * 2**20

FLOOR = """
import sys, torch
from safetensors import safe_open
from pathlib import Path
total = 0.0
for shard in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(shard), "pt") as f:
        for name in f.keys():
            if ".layers." in name:
                total += float(f.get_tensor(name).sum(dtype=torch.float32))
print(total)
"""

SVD_FLOOR = """
import sys, torch
from safetensors import safe_open
from pathlib import Path
for shard in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(shard), "pt") as f:
        for name in f.keys():
            if ".layers." in name and name.endswith("proj.weight"):
                torch.linalg.svdvals(f.get_tensor(name).float())
"""


def config(depth: int) -> dict:
    """A LlamaForCausalLM config of TinyLlama's width and `depth` blocks."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": MLP, "num_hidden_layers": depth, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "torch_dtype": "bfloat16", "tie_word_embeddings": False}


def tensors(depth: int):
    """(name, shape) of every tensor, in the order transformers saves them."""
    kv = HIDDEN // HEADS * KV_HEADS
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(depth):
        p = f"model.layers.{i}."
        for name, shape in [("self_attn.q_proj.weight", (HIDDEN, HIDDEN)), ("self_attn.k_proj.weight", (kv, HIDDEN)),
                            ("self_attn.v_proj.weight", (kv, HIDDEN)), ("self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                            ("mlp.gate_proj.weight", (MLP, HIDDEN)), ("mlp.up_proj.weight", (MLP, HIDDEN)),
                            ("mlp.down_proj.weight", (HIDDEN, MLP)), ("input_layernorm.weight", (HIDDEN,)),
                            ("post_attention_layernorm.weight", (HIDDEN,))]:
            yield p + name, shape
    yield "model.norm.weight", (HIDDEN,)
    yield "lm_head.weight", (VOCAB, HIDDEN)


def build(path: Path, depth: int, seed: int = 0) -> Path:
    """Random weights (normal, std 0.02, norms 1) in bf16, in 500 MB shards with an index."""
    import torch
    from safetensors.torch import save_file

    if (path / "model.safetensors.index.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    shards, shard, size = [], {}, 0
    for name, shape in tensors(depth):
        t = torch.ones(shape, dtype=torch.bfloat16) if len(shape) == 1 else \
            (torch.randn(shape) * 0.02).to(torch.bfloat16)
        if shard and size + t.numel() * 2 > SHARD_BYTES:
            shards.append(shard)
            shard, size = {}, 0
        shard[name], size = t, size + t.numel() * 2
    shards.append(shard)
    weight_map, total = {}, 0
    for k, part in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, str(path / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
        total += sum(t.numel() * 2 for t in part.values())
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (path / "config.json").write_text(json.dumps(config(depth), indent=1))
    return path


def measured(cmd: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `cmd` run as a child of a wrapper process."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], "
            "check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); t = time.perf_counter() - t; "
            "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True).stdout
    seconds, kb = out.split()
    return float(seconds), int(kb) / 1024


def best(cmd: list[str], repeat: int, before=None) -> tuple[float, float]:
    """The fastest time and the largest peak RSS of `repeat` runs (`before` runs ahead of each, untimed)."""
    runs = []
    for _ in range(repeat):
        if before:
            before()
        runs.append(measured(cmd))
    return min(t for t, _ in runs), max(m for _, m in runs)


def bench(depth: int, workdir: Path, repeat: int) -> dict:
    src = build(workdir / f"llama_{depth}", depth)
    size_gb = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 1e9
    gardener = [sys.executable, "-m", "gardener"]
    out, copy = workdir / f"llama_{depth}_pruned", workdir / f"llama_{depth}_copy"
    subprocess.run(["cat", *map(str, src.glob("*.safetensors"))], check=True, stdout=subprocess.DEVNULL)  # warm
    floor = best([sys.executable, "-c", FLOOR, str(src)], repeat)
    score = best([*gardener, "score", str(src), "--criteria", "entropy"], repeat)
    prune = best([*gardener, "prune", str(src), "--ratio", "0.5", "-o", str(out)], repeat,
                 before=lambda: shutil.rmtree(out, ignore_errors=True))
    cp = best(["cp", "-r", str(src), str(copy)], repeat, before=lambda: shutil.rmtree(copy, ignore_errors=True))
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(copy, ignore_errors=True)
    hashing = best([sys.executable, "-c", "import hashlib, sys, pathlib; [hashlib.file_digest(open(f, 'rb'), "
                    "'sha256') for f in sorted(pathlib.Path(sys.argv[1]).glob('*.safetensors'))]", str(src)], repeat)
    return {"sha256_s": hashing[0], "depth": depth, "checkpoint_gb": round(size_gb, 2), "floor_s": floor[0], "floor_rss_mb": floor[1],
            "score_s": score[0], "score_rss_mb": score[1], "prune_s": prune[0], "prune_rss_mb": prune[1],
            "copy_s": cp[0]}


def all_criteria(depth: int, workdir: Path) -> dict:
    """`score --criteria all` with 2 and with 1 block at a time, and one float32 SVD of every block matrix."""
    src = build(workdir / f"llama_{depth}", depth)
    gardener = [sys.executable, "-m", "gardener", "score", str(src), "--criteria", "all"]
    return {"depth": depth, "all_s": measured(gardener), "all_one_block_s": measured([*gardener, "--workers", "1"]),
            "svd_floor_s": measured([sys.executable, "-c", SVD_FLOOR, str(src)])}


def main() -> None:
    import numpy as np
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--depths", default="22,44,88")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--all-criteria", action="store_true", help="also time every criterion on the first depth")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in [int(d) for d in args.depths.split(",")]:
        start = time.perf_counter()
        rows.append(bench(depth, args.workdir, args.repeat))
        print(f"# depth {depth}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(f"# large_bench {date.today()} on {platform.machine()}, python {platform.python_version()}, numpy "
          f"{np.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
    print("| blocks | checkpoint (GB) | read floor (s) | score entropy (s) | x floor | floor RSS (MB) | "
          "score RSS (MB) | prune 50 % (s) | cp -r (s) | x copy | prune RSS (MB) |")
    print("|" + "---|" * 11)
    for r in rows:
        print(f"| {r['depth']} | {r['checkpoint_gb']} | {r['floor_s']:.2f} | {r['score_s']:.2f} | "
              f"{r['score_s'] / r['floor_s']:.2f} | {r['floor_rss_mb']:.0f} | {r['score_rss_mb']:.0f} | "
              f"{r['prune_s']:.2f} | {r['copy_s']:.2f} | {r['prune_s'] / r['copy_s']:.1f} | {r['prune_rss_mb']:.0f} |")
    print("| blocks | sha256 of the input (s) |\n|---|---|")
    for r in rows:
        print(f"| {r['depth']} | {r['sha256_s']:.2f} |")
    if args.all_criteria:
        first = all_criteria(rows[0]["depth"], args.workdir)
        print("| blocks | score --criteria all (s, RSS MB) | --workers 1 (s, RSS MB) | one SVD per matrix (s) |")
        print("|---|---|---|---|")
        print(f"| {first['depth']} | {first['all_s'][0]:.0f}, {first['all_s'][1]:.0f} | "
              f"{first['all_one_block_s'][0]:.0f}, {first['all_one_block_s'][1]:.0f} | {first['svd_floor_s'][0]:.0f} |")
        rows.append(first)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
