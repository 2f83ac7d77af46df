"""Benchmark: entropy-scoring a VideoMAE-B-sized checkpoint, against the authors' method and a floor.

For float32 and float16 copies of one random VideoMAE-B-shaped checkpoint (12 blocks, hidden
768, MLP 3072, HF key names) this measures in one run:
  (a) gardener.score(path, ["entropy"]): all 12 blocks;
  (b) the authors' notebook method: per block, concatenate the 2-D kernels into float64 and
      pandas value_counts (reference scores; every gardener score must equal them to 1e-9);
  (c) a bandwidth floor: one numpy.sum pass over the same memory-mapped tensors;
and the peak RSS of a separate `gardener score --criteria entropy` process.

    python bench/score_bench.py [--workdir bench/_work] [--repeat 5]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

import gardener
from _common import best_of, child_peak_rss_mb, per_dtype_main, print_table
from gardener.blocks import block_tensors, select_stack
from gardener.checkpoint import open_checkpoint

HIDDEN, MLP, DEPTH = 768, 3072, 12
TARGETS = {"float16": 0.3, "float32": 1.5}


def build(path: Path, dtype: type, seed: int = 0) -> Path:
    """A VideoMAE-B-shaped HF checkpoint with trunc-normal(0.02)-like weights."""
    rng = np.random.default_rng(seed)
    state = {"videomae.embeddings.patch_embeddings.projection.weight":
             (rng.standard_normal((HIDDEN, 3, 2, 16, 16)) * 0.02).astype(dtype)}
    for i in range(DEPTH):
        p = f"videomae.encoder.layer.{i}."
        std = 0.02 * (1 + 0.05 * i)  # blocks differ a little, as trained ones do
        shapes = {"attention.attention.query.weight": (HIDDEN, HIDDEN), "attention.attention.key.weight": (HIDDEN, HIDDEN),
                  "attention.attention.value.weight": (HIDDEN, HIDDEN), "attention.output.dense.weight": (HIDDEN, HIDDEN),
                  "intermediate.dense.weight": (MLP, HIDDEN), "output.dense.weight": (HIDDEN, MLP)}
        for name, shape in shapes.items():
            state[p + name] = np.clip(rng.standard_normal(shape) * std, -2 * std, 2 * std).astype(dtype)
        for name, size in {"attention.attention.q_bias": HIDDEN, "attention.attention.v_bias": HIDDEN,
                           "attention.output.dense.bias": HIDDEN, "intermediate.dense.bias": MLP,
                           "output.dense.bias": HIDDEN, "layernorm_before.weight": HIDDEN,
                           "layernorm_after.weight": HIDDEN}.items():
            state[p + name] = (rng.standard_normal(size) * 0.01).astype(dtype)
    save_file(state, str(path))
    return path


def kernels(ckpt) -> list[list[str]]:
    """The 2-D kernels of each block, found without computing anything."""
    return [block_tensors(ckpt, b) for b in select_stack(ckpt).blocks]


def notebook_reference(path: Path) -> list[float]:
    """The authors' method: float64 concatenation of the kernels, pandas value_counts, natural log."""
    ckpt = open_checkpoint(path)
    scores = []
    for names in kernels(ckpt):
        w = np.concatenate([np.asarray(ckpt.read(n), dtype=np.float64).ravel() for n in names])
        p = pd.Series(w).value_counts().to_numpy() / w.size
        scores.append(float(-(p * np.log(p)).sum()))
    return scores


def numpy_floor(path: Path) -> float:
    ckpt = open_checkpoint(path)
    names = [n for block in kernels(ckpt) for n in block]
    return float(sum(np.sum(ckpt.read(n)) for n in names))


def bench(dtype_name: str, workdir: Path, repeat: int) -> dict:
    path = workdir / f"videomae_b_{dtype_name}.safetensors"
    if not path.exists():
        build(path, np.float16 if dtype_name == "float16" else np.float32)
    gardener.score(path, ["entropy"])  # warm the page cache, as a second run on a laptop would be
    t_ours, ours = best_of(lambda: gardener.score(path, ["entropy"]), repeat)
    t_all, _ = best_of(lambda: gardener.score(path, "all"), 1)
    t_ref, ref = best_of(lambda: notebook_reference(path), 1)
    t_floor, _ = best_of(lambda: numpy_floor(path), repeat)
    diff = float(np.max(np.abs(np.array(ours.scores["entropy"]) - np.array(ref))))
    rss = child_peak_rss_mb(["score", str(path), "--criteria", "entropy"])
    return {"dtype": dtype_name, "file_mb": round(path.stat().st_size / 2**20), "gardener_entropy_s": t_ours,
            "gardener_all_criteria_s": t_all, "notebook_s": t_ref, "numpy_sum_s": t_floor,
            "speedup_vs_notebook": t_ref / t_ours, "ratio_to_floor": t_ours / t_floor,
            "max_abs_diff": diff, "peak_rss_mb": rss,
            "target_s": TARGETS[dtype_name], "distinct_per_block": [b.distinct for b in ours.blocks][:3]}


def main() -> None:
    _, rows = per_dtype_main(__doc__, "score_bench", bench, 5)
    print_table(["dtype", "gardener entropy (s)", "target", "all criteria (s)", "notebook (s)", "speed-up",
                 "numpy.sum floor (s)", "x floor", "max abs diff", "peak RSS (MB)"],
                [[r["dtype"], f"{r['gardener_entropy_s']:.3f}", f"<= {r['target_s']}",
                  f"{r['gardener_all_criteria_s']:.2f}", f"{r['notebook_s']:.2f}", f"{r['speedup_vs_notebook']:.0f}x",
                  f"{r['numpy_sum_s']:.3f}", f"{r['ratio_to_floor']:.1f}", f"{r['max_abs_diff']:.1e}",
                  f"{r['peak_rss_mb']:.0f}"] for r in rows])


if __name__ == "__main__":
    main()
