"""Is exact-value entropy meaningful on this checkpoint? The same blocks under every precision view.

Exact-value entropy counts repeated numbers. On half-precision weights many values repeat and
the count separates blocks; on float32 nearly every value is distinct, the entropy is close to
ln N for every block of equal size, and the ranking is decided by round-off. This report puts
the distinct-value counts, the stored dtype and the entropy ranking under each `--dtype` view
side by side, with the rank correlation between views, and says in one line which case holds:
round-off by the rule scoring's warning and prune use (`roundoff.entropy_meaningful`).
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpoint, open_checkpoint
from ..values import VIEW_TAGS, VIEWS
from . import roundoff

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
                    # each block's share as the verdict prints shares (tables show these, not their own rounding)
                    "distinct_shown": [roundoff.percent(b.distinct / b.n_params) if b.distinct is not None else "-"
                                       for b in r.blocks],
                    "ranks": r.ranks("entropy"), "removal_order": r.removal_order("entropy")}
             for view, r in results.items()}
    names = list(views)
    rho = {a: {b: float(stats.spearmanr(views[a]["ranks"], views[b]["ranks"]).statistic) if a != b else 1.0
               for b in names} for a in names}
    sizes = [b.n_params for b in stored.blocks]
    share = [d / n for d, n in zip(views["stored"]["distinct"], sizes)]
    low_rho = min((rho["stored"][v] for v in names if v != "stored"), default=1.0)
    round_off = stored.round_off("entropy")
    return {"source": str(ckpt.path), "stack": stored.stack, "stored_dtypes": stored.stored_dtypes,
            "blocks": [b.number for b in stored.blocks], "n_params": sizes, "distinct_share": share,
            "distinct_shown": [roundoff.percent(x) for x in share],  # as the verdict prints them
            "views": views, "spearman": rho, "meaningful": round_off is None and low_rho >= WEAK_AGREEMENT,
            "verdict": _verdict(round_off, share, low_rho, stored.stored_dtypes)}


def _verdict(round_off: float | None, share: list[float], low_rho: float, stored_dtypes: list[str]) -> str:
    """The report's one line: round-off when `ScoreResult.round_off` says so (the rule of scoring's warning
    and of prune, `roundoff.entropy_meaningful`), else whether the views agree."""
    if round_off is not None:
        return (f"not meaningful at the stored precision: {roundoff.share_clause(round_off)}, so entropy is about "
                f"ln N and its ranking is round-off; use {roundoff.remedies(stored_dtypes)}")
    if low_rho < WEAK_AGREEMENT:
        return (f"depends on the precision view: {roundoff.share_clause(min(share))}, but the views rank the "
                f"blocks otherwise (Spearman rho down to {low_rho:.2f}): say which --dtype a ranking used, or prefer "
                f"a precision-free criterion")
    return (f"meaningful: values repeat: {roundoff.share_clause(min(share))}, {roundoff.percent(max(share))} in the "
            f"most distinct one, and the views agree (Spearman rho >= {low_rho:.2f})")
