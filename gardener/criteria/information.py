"""Information criteria: the paper's exact-value entropy and its relatives."""
from __future__ import annotations

import numpy as np

from ..joint_counts import joint_sum_clogc_matrix
from ..values import BlockValues
from ._registry import BlockSummary, Context, register


@register("entropy", removes="lowest", exact_value=True)
def entropy(values: BlockValues, ctx: Context) -> float:
    """Exact-value (weight-number) entropy in nats: the paper's Gardener criterion."""
    return values.counts().entropy()


@register("efficiency", removes="lowest", exact_value=True)
def efficiency(values: BlockValues, ctx: Context) -> float:
    """Entropy divided by its maximum ln N: how close to all-distinct the values are."""
    return values.counts().entropy() / float(np.log(values.n))


@register("value_entropy", removes="lowest")
def value_entropy(values: BlockValues, ctx: Context) -> float:
    """Entropy of |w| normalised to sum 1, as scipy.stats.entropy(abs(w))."""
    m = values.moments
    if m.sum_abs == 0:
        return 0.0
    return float(np.log(m.sum_abs) - m.sum_abs_log_abs / m.sum_abs)


@register("hist_entropy", removes="lowest")
def hist_entropy(values: BlockValues, ctx: Context) -> float:
    """Entropy of a fixed-bin histogram over the block's range; meaningful on float32 weights."""
    counts = values.histogram(ctx.bins)[0]
    p = counts[counts > 0] / values.n
    return float(-np.sum(p * np.log(p)))


@register("mutual_information", removes="highest", exact_value=True, scope="model", needs_counts=True)
def mutual_information(blocks: list[BlockSummary], ctx: Context) -> list[float]:
    """Mean over other blocks of H(a) + H(b) - H(a concat b): high means redundant."""
    if len(blocks) == 1:
        return [0.0]
    ent = np.array([b.counts.entropy() for b in blocks])
    sizes = np.array([b.n for b in blocks], dtype=np.float64)
    pair_n = sizes[:, None] + sizes[None, :]
    joint = np.log(pair_n) - joint_sum_clogc_matrix([b.counts for b in blocks]) / pair_n
    mi = ent[:, None] + ent[None, :] - joint
    np.fill_diagonal(mi, 0.0)
    return list(mi.sum(axis=1) / (len(blocks) - 1))
