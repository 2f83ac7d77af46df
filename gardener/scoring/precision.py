"""Is exact-value entropy meaningful on this checkpoint? The same blocks under every precision view.

Exact-value entropy counts repeated numbers. On half-precision weights many values repeat and
the count separates blocks; on float32 nearly every value is distinct, the entropy is close to
ln N for every block of equal size, and the ranking is decided by round-off. This report puts
the distinct-value counts, the stored dtype and the entropy ranking under each `--dtype` view
side by side, with the rank correlation between views, and says in one line which case holds.
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpoint, open_checkpoint
from ..values import VIEW_TAGS, VIEWS

ALL_DISTINCT = 0.99  # at least this share of distinct values in every block: entropy ~ ln N
WEAK_AGREEMENT = 0.5  # a Spearman rho below this between views: the ranking depends on the view


def precision_report(path: str | Path | Checkpoint, *, stack: str | None = None, block_pattern: str | None = None,
                     params: str = "2d", workers: int | None = None) -> dict:
    """Entropy, distinct values and ranks of each block under each precision view, and a verdict."""
    from scipy import stats

    from .run import score

    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    results = {}
    for view in VIEWS:
        if view != "stored" and results["stored"].stored_dtypes == [VIEW_TAGS[view]]:
            continue  # the stored values already are this view
        results[view] = score(ckpt, ["entropy"], dtype=view, stack=stack, block_pattern=block_pattern,
                              params=params, workers=workers)
    stored = results["stored"]
    views = {view: {"entropy": r.scores["entropy"], "distinct": [b.distinct for b in r.blocks],
                    "ranks": r.ranks("entropy"), "removal_order": r.removal_order("entropy")}
             for view, r in results.items()}
    names = list(views)
    rho = {a: {b: float(stats.spearmanr(views[a]["ranks"], views[b]["ranks"]).statistic) if a != b else 1.0
               for b in names} for a in names}
    sizes = [b.n_params for b in stored.blocks]
    share = [d / n for d, n in zip(views["stored"]["distinct"], sizes)]
    low_rho = min((rho["stored"][v] for v in names if v != "stored"), default=1.0)
    all_distinct = min(share) >= ALL_DISTINCT
    if all_distinct:
        verdict = (f"not meaningful at the stored precision: at least {100 * min(share):.1f} % of the values in "
                   f"every block are distinct, so entropy is about ln N and its ranking is round-off; use "
                   f"--dtype float16 or bfloat16, or a precision-free criterion (spectral_entropy, stable_rank, alpha)")
    elif low_rho < WEAK_AGREEMENT:
        verdict = (f"depends on the precision view (Spearman rho down to {low_rho:.2f} between views): say "
                   f"which --dtype a ranking used, or prefer a precision-free criterion")
    else:
        verdict = (f"meaningful: values repeat ({100 * min(share):.1f}-{100 * max(share):.1f} % distinct per block) "
                   f"and the views agree (Spearman rho >= {low_rho:.2f})")
    return {"source": str(ckpt.path), "stack": stored.stack, "stored_dtypes": stored.stored_dtypes,
            "blocks": [b.number for b in stored.blocks], "n_params": sizes, "distinct_share": share,
            "views": views, "spearman": rho, "meaningful": not all_distinct and low_rho >= WEAK_AGREEMENT,
            "verdict": verdict}
