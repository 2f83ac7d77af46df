"""Pure ranking rules: from per-block scores and a direction to importance ranks and removal order.

Rank 1 is the most important block. Ties break by block position: of two blocks with equal
scores, the earlier one ranks as more important, so the later one is removed first. A NaN
score ranks as least important.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def importance_order(scores: Sequence[float], removes: str) -> list[int]:
    """0-based block positions, most important first."""
    if removes not in ("lowest", "highest"):
        raise ValueError(f"removes must be 'lowest' or 'highest', not {removes!r}")
    sign = -1.0 if removes == "lowest" else 1.0

    def key(i: int) -> tuple[float, int]:
        s = scores[i]
        return (math.inf if math.isnan(s) else sign * s, i)

    return sorted(range(len(scores)), key=key)


def ranks(scores: Sequence[float], removes: str) -> list[int]:
    """Importance rank of each block (1 = most important), in block order."""
    out = [0] * len(scores)
    for rank, pos in enumerate(importance_order(scores, removes), start=1):
        out[pos] = rank
    return out


def removal_order(scores: Sequence[float], removes: str) -> list[int]:
    """0-based block positions in the order they would be removed (least important first)."""
    return importance_order(scores, removes)[::-1]


def tie_groups(scores: Sequence[float]) -> list[list[int]]:
    """0-based positions of blocks whose scores are exactly equal (NaN with NaN), groups of two or more."""
    groups: dict[object, list[int]] = {}
    for i, s in enumerate(scores):
        groups.setdefault("nan" if math.isnan(s) else float(s), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
