"""Benchmark: the spectral criteria on a VideoMAE-B-sized checkpoint (12 blocks x 6 matrices).

For the float32 and float16 copies that score_bench.py builds, this measures in one run:
  (a) gardener.score(path, SPECTRAL): the six spectral criteria, which share one float32 SVD
      per matrix (72 matrices: q, k, v, attention output, MLP in and out per block);
  (b) the same with the power-law fits left out (spectral_entropy, stable_rank, log_spectral_norm):
      the SVDs alone, roughly;
  (c) a plain numpy reference: np.linalg.svd(W, compute_uv=False) of every matrix in float64,
      one after another (what a script without gardener would do), and the largest relative
      difference of the float32 stable rank from it.

    python bench/spectral_bench.py [--workdir bench/_work] [--repeat 3]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from score_bench import build, kernels

import gardener
from _common import best_of, per_dtype_main, print_table
from gardener.checkpoint import open_checkpoint

SPECTRAL = gardener.criteria.names("spectral")
NO_FITS = ["spectral_entropy", "stable_rank", "log_spectral_norm"]


def numpy_reference(path: Path) -> list[float]:
    """Mean stable rank per block from float64 SVDs, one matrix at a time."""
    ckpt = open_checkpoint(path)
    out = []
    for names in kernels(ckpt):
        ranks = []
        for n in names:
            s = np.linalg.svd(np.asarray(ckpt.read(n), dtype=np.float64), compute_uv=False)
            ranks.append(float(np.sum(s * s) / s[0] ** 2))
        out.append(float(np.mean(ranks)))
    return out


def bench(dtype_name: str, workdir: Path, repeat: int) -> dict:
    path = workdir / f"videomae_b_{dtype_name}.safetensors"
    if not path.exists():
        build(path, np.float16 if dtype_name == "float16" else np.float32)
    matrices = sum(len(b) for b in kernels(open_checkpoint(path)))
    def all_six():
        gardener.criteria.spectral._alpha_of.cache_clear()  # time the power-law fits every repeat
        return gardener.score(path, SPECTRAL, primary="stable_rank")

    t_all, result = best_of(all_six, repeat)
    t_nofit, _ = best_of(lambda: gardener.score(path, NO_FITS, primary="stable_rank"), repeat)
    t_ref, ref = best_of(lambda: numpy_reference(path), 1)
    diff = float(np.max(np.abs(np.array(result.scores["stable_rank"]) / np.array(ref) - 1)))
    return {"dtype": dtype_name, "matrices": matrices, "spectral_all_s": t_all, "spectral_no_fits_s": t_nofit,
            "numpy_float64_svd_s": t_ref, "stable_rank_rel_diff": diff,
            "alpha_first_blocks": [round(a, 3) for a in result.scores["alpha"][:3]]}


def main() -> None:
    _, rows = per_dtype_main(__doc__, "spectral_bench", bench, 3)
    print_table(["dtype", "matrices", "6 spectral criteria (s)", "without the alpha fits (s)",
                 "numpy float64 SVD loop (s)", "stable rank vs float64 (max rel diff)"],
                [[r["dtype"], str(r["matrices"]), f"{r['spectral_all_s']:.2f}", f"{r['spectral_no_fits_s']:.2f}",
                  f"{r['numpy_float64_svd_s']:.2f}", f"{r['stable_rank_rel_diff']:.1e}"] for r in rows])


if __name__ == "__main__":
    main()
