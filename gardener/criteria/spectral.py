"""Spectral criteria: statistics of each weight matrix's singular values, one score per block.

They read the shape of what a block learned, not how its numbers are stored, so casting the
weights between float32 and float16 leaves them (nearly) unchanged, unlike the exact-value
entropy. Each 2-D matrix of the block is scored on its own, then the block's matrices are
aggregated (`--aggregate`: mean, min, max, or a mean weighted by parameter count).

Pruning directions follow heavy-tailed self-regularisation: training pulls a matrix away from
the flat, Marchenko-Pastur spectrum of random weights towards a few strong directions and a
heavy tail. A block whose matrices still look random (high spectral entropy, high stable
rank, large alpha) has learned the least and is removed first. The spectral norm, like the
paper's magnitude baselines, bounds how much the block can change the residual stream: small
is removed first.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .. import spectra
from ..values import BlockValues
from ._registry import Context, check_aggregate, register


def aggregate(values: list[float], sizes: list[int], how: str) -> float:
    """One block score from its matrices' scores: mean, min, max, or weighted (by parameter count)."""
    v = np.asarray(values, dtype=np.float64)
    if how == "mean":
        return float(v.mean())
    if how == "min":
        return float(v.min())
    if how == "max":
        return float(v.max())
    check_aggregate(how)
    return float(np.average(v, weights=np.asarray(sizes, dtype=np.float64)))  # weighted


def _per_matrix(values: BlockValues, ctx: Context, stat) -> float:
    scored = [(stat(s), n) for _, n, s in values.spectra]
    finite = [(v, n) for v, n in scored if math.isfinite(v)]
    if not finite:
        return math.nan
    return aggregate([v for v, _ in finite], [n for _, n in finite], ctx.aggregate)


@register("spectral_entropy", removes="highest")
def spectral_entropy(values: BlockValues, ctx: Context) -> float:
    """Entropy of the normalised singular values: high is flat, random-like, removed first."""
    return _per_matrix(values, ctx, spectra.spectral_entropy)


@register("effective_rank", removes="highest")
def effective_rank(values: BlockValues, ctx: Context) -> float:
    """exp(spectral entropy), the effective rank: many equal directions is removed first."""
    return _per_matrix(values, ctx, lambda s: math.exp(spectra.spectral_entropy(s)))


@register("stable_rank", removes="highest")
def stable_rank(values: BlockValues, ctx: Context) -> float:
    """||W||_F^2 / ||W||_2^2: no dominant direction (high) is removed first."""
    return _per_matrix(values, ctx, spectra.stable_rank)


@lru_cache(maxsize=512)
def _alpha_of(singular_bytes: bytes) -> float:
    """One power-law fit per matrix, shared by alpha and alpha_weighted."""
    s = np.frombuffer(singular_bytes, dtype=np.float64)
    return spectra.fit_power_law(spectra.eigenvalues(s)).alpha


@register("alpha", removes="highest")
def alpha(values: BlockValues, ctx: Context) -> float:
    """Power-law exponent of the eigenvalue tail (MLE, KS-chosen xmin): light tail removed first."""
    return _per_matrix(values, ctx, lambda s: _alpha_of(s.tobytes()))


@register("alpha_weighted", removes="highest")
def alpha_weighted(values: BlockValues, ctx: Context) -> float:
    """alpha x log10(largest eigenvalue), WeightWatcher's alpha-hat: high is removed first."""
    return _per_matrix(values, ctx, lambda s: _alpha_of(s.tobytes()) * spectra.log_spectral_norm(s))


@register("log_spectral_norm", removes="lowest")
def log_spectral_norm(values: BlockValues, ctx: Context) -> float:
    """log10 of the largest eigenvalue of W^T W: a small block update is removed first."""
    return _per_matrix(values, ctx, spectra.log_spectral_norm)
