"""Magnitude and shape statistics of a block's weights (the paper's baselines)."""
from __future__ import annotations

import math

from ..values import BlockValues
from ._registry import Context, register


@register("l1", removes="lowest")
def l1(values: BlockValues, ctx: Context) -> float:
    """L1 norm: sum |w|."""
    return values.moments.sum_abs


@register("l2", removes="lowest")
def l2(values: BlockValues, ctx: Context) -> float:
    """L2 norm: sqrt(sum w^2)."""
    return math.sqrt(values.moments.sum_sq)


@register("mean", removes="lowest")
def mean(values: BlockValues, ctx: Context) -> float:
    """Mean absolute weight (L1 / N, so the same order as L1)."""
    return values.moments.sum_abs / values.n


@register("variance", removes="lowest")
def variance(values: BlockValues, ctx: Context) -> float:
    """Variance of |w| (population variance, as numpy)."""
    return values.moments.abs_central2 / values.n


@register("std", removes="lowest")
def std(values: BlockValues, ctx: Context) -> float:
    """Standard deviation of |w|."""
    return math.sqrt(values.moments.abs_central2 / values.n)


@register("kurtosis", removes="highest")
def kurtosis(values: BlockValues, ctx: Context) -> float:
    """Fisher excess kurtosis of w (scipy default): a peaked block counts as less important."""
    m = values.moments
    m2 = m.central2 / m.n
    if m2 == 0:
        return math.nan
    return (m.central4 / m.n) / (m2 * m2) - 3.0


@register("max", removes="lowest")
def max_abs(values: BlockValues, ctx: Context) -> float:
    """Largest absolute weight."""
    return values.moments.max_abs
