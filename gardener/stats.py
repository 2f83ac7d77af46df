"""Honest statistics for accuracies and rankings.

An accuracy measured on n test clips is uncertain by about 1/sqrt(n); a ranking of blocks by
such accuracies is only as good as their differences are beyond that. This module holds the
few rules every report uses: Wilson intervals, "separable" as non-overlapping intervals,
rank statistics that treat ties as ties, and a bootstrap interval on a ranking's agreement
with the oracle that resamples the oracle's test clips and seeds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 %
RESAMPLES = 1000


def wilson(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `accuracy` measured on `n` trials."""
    if n <= 0:
        return (math.nan, math.nan)
    p = min(1.0, max(0.0, float(accuracy)))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if p == 0 else max(0.0, centre - half), 1.0 if p == 1 else min(1.0, centre + half))


def separable(a: Sequence[float], b: Sequence[float]) -> bool:
    """Two intervals that do not overlap: the difference is beyond the noise of either measurement."""
    if any(math.isnan(x) for x in (*a, *b)):
        return False
    return a[1] < b[0] or b[1] < a[0]


def importance(scores: Sequence[float], removes: str) -> np.ndarray:
    """Scores turned so that larger means more important (kept longer)."""
    values = np.asarray(scores, dtype=float)
    return values if removes == "lowest" else -values


def average_ranks(scores: Sequence[float], removes: str) -> list[float]:
    """Importance ranks (1 = most important) with tied scores sharing their average rank."""
    from scipy import stats

    values = importance(scores, removes)
    values = np.where(np.isnan(values), -np.inf, values)  # NaN: least important, as in ranking.ranks
    return [float(r) for r in stats.rankdata(-values, method="average")]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rho of two importance vectors (ties averaged); NaN when either is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    from scipy import stats

    return float(stats.spearmanr(a, b).statistic)


def _rank_rows(matrix: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis of a 2-D array (ascending)."""
    from scipy import stats

    return stats.rankdata(matrix, method="average", axis=-1)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row of x with the matching row of y (NaN where a row is constant)."""
    rx, ry = _rank_rows(x), _rank_rows(y)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(-1) / np.where(denom > 0, denom, 1), np.nan)


def oracle_resamples(correct: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap accuracies of each oracle job: (resamples, blocks).

    `correct` is (blocks, seeds, videos) of 0/1: whether each finetuning seed of each
    single-block removal got each test video right. Each resample draws the test videos with
    replacement (the same draw for every block, as they share the test split) and, per block,
    the seeds with replacement, so the interval covers both the test set and the training noise.
    With `weights` (the same shape), a resample's value is the ratio sum(correct) / sum(weights) of the
    drawn samples instead of their mean: a text's loss per token, from each sequence's summed loss and tokens.
    """
    correct = np.asarray(correct, dtype=np.float64 if weights is not None else np.float32)
    blocks, seeds, videos = correct.shape
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, blocks))
    for k in range(resamples):
        pick = rng.integers(0, videos, videos)
        counts = np.bincount(pick, minlength=videos).astype(np.float32) / videos  # weights of each video
        accuracy = correct @ counts if weights is None else (correct @ counts) / (np.asarray(weights) @ counts)
        chosen = rng.integers(0, seeds, (blocks, seeds))
        out[k] = np.take_along_axis(accuracy, chosen, axis=1).mean(1)
    return out


def _central(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` range of the finite values (NaN, NaN when there are none)."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (math.nan, math.nan)
    tail = 100 * (1 - level) / 2
    return (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))


def rho_interval(criterion: Sequence[float], oracle: Sequence[float], resampled: np.ndarray,
                 level: float = 0.95, removes: str = "highest") -> tuple[float, float]:
    """Basic bootstrap interval of Spearman rho between a criterion's importance and the oracle.

    `oracle` holds the oracle's accuracies after removal (lower = more important) and `resampled`
    the same per resample. The basic interval (2 rho - the upper and lower percentiles) corrects
    the shift of the resampled rhos: resampling reorders blocks whose accuracies are within noise
    of each other, which moves rho away from its estimate in one direction. `removes` "lowest" is an oracle
    whose higher values after removal mark more important blocks (a perplexity: `resampled` may then hold
    any increasing function of it, e.g. the loss per token).
    """
    crit, sign = np.asarray(criterion, float), (-1.0 if removes == "highest" else 1.0)
    estimate = spearman(crit, sign * np.asarray(oracle, float))
    low, high = _central(_row_spearman(np.broadcast_to(crit, resampled.shape), sign * resampled), level)
    if math.isnan(estimate) or math.isnan(low):
        return (math.nan, math.nan)
    return (max(-1.0, 2 * estimate - high), min(1.0, 2 * estimate - low))


RANDOM_ORDERS = 20000


def random_rho(oracle: Sequence[float], orders: int = RANDOM_ORDERS, seed: int = 0, level: float = 0.95,
               removes: str = "highest") -> dict:
    """Where the Spearman rho of a uniformly random block order with the oracle falls: its mean and the
    central `level` range over `orders` random orders (ties in the oracle as ties)."""
    oracle = importance(oracle, removes)
    rng = np.random.default_rng(seed + 1)
    rho = _row_spearman(rng.random((orders, len(oracle))), np.broadcast_to(oracle, (orders, len(oracle))))
    low, high = _central(rho, level)
    return {"mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else math.nan, "interval": [low, high],
            "orders": int(np.isfinite(rho).sum())}


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], resamples: int = RESAMPLES,
                   seed: int = 0, level: float = 0.95) -> list[float]:
    """A bootstrap interval of sum(numerators) / sum(denominators) that draws the units with replacement: the
    loss per token of a text, whose units are its sequences (tokens of one sequence are not independent)."""
    num, den = np.asarray(numerators, float), np.asarray(denominators, float)
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    for k in range(resamples):
        counts = np.bincount(rng.integers(0, len(num), len(num)), minlength=len(num))
        ratios[k] = (counts @ num) / (counts @ den)
    return list(_central(ratios, level))


def interval_of(accuracy: float, videos: int | None) -> list[float] | None:
    """The Wilson interval of an accuracy as a list, or None when the test-set size is unknown."""
    return list(wilson(accuracy, videos)) if videos else None


def runs_interval(accuracies: Sequence[float], videos: int | None, level: float = 0.95) -> list[float] | None:
    """An interval for the mean accuracy of several runs (e.g. random orders): the wider, on each side,
    of the t-interval over the runs and the Wilson interval from the test-set size, so that it
    covers both how much the runs differ and the test-set sampling."""
    values = np.asarray(accuracies, float)
    return spread_interval(values, interval_of(float(values.mean()), videos), (0.0, 1.0), level)


def spread_interval(values: Sequence[float], test: list[float] | None, bounds: tuple[float, float],
                    level: float = 0.95) -> list[float] | None:
    """The interval of the mean of several runs' values: the wider, on each side, of the t-interval over the
    runs and `test` (the mean's interval from the test-set sampling), within `bounds`."""
    from scipy import stats

    values = np.asarray(values, float)
    if len(values) < 2:
        return test
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    low, high = values.mean() - half, values.mean() + half
    if test is None:
        return [max(bounds[0], low), min(bounds[1], high)]
    return [max(bounds[0], min(low, test[0])), min(bounds[1], max(high, test[1]))]


def perplexity_interval(nll: np.ndarray, tokens: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> list[float]:
    """A bootstrap interval of the mean over runs of each run's perplexity exp(sum nll / sum tokens), where
    `nll` and `tokens` are (runs, sequences): each resample draws the test sequences with replacement, one
    draw shared by the runs (they share the test text; tokens of one sequence are not independent)."""
    nll, tokens = np.atleast_2d(np.asarray(nll, float)), np.atleast_2d(np.asarray(tokens, float))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for k in range(resamples):
        counts = np.bincount(rng.integers(0, nll.shape[1], nll.shape[1]), minlength=nll.shape[1])
        means[k] = np.exp((nll @ counts) / (tokens @ counts)).mean()
    return list(_central(means, level))


def pack_correct(flags: Sequence[bool | int]) -> str:
    """Per-video right/wrong flags as a compact string of 0 and 1 (for result files)."""
    return "".join("1" if f else "0" for f in flags)


def unpack_correct(text: str) -> np.ndarray:
    """The flags of `pack_correct` back as an array of 0 and 1."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """The t-interval of the mean of a few values (N - 1 degrees of freedom); None below 2 values."""
    from scipy import stats

    values = np.asarray(values, float)
    if len(values) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def pooled_interval(values: Sequence[float], halves: Sequence[float], level: float = 0.95) -> list[float] | None:
    """An interval for the mean of per-model values that covers both how much the models differ (the
    t-interval over them) and each model's own noise (`halves`: the half-widths of the models' own
    95 % intervals, which bound the mean's within-model noise at sqrt(sum h^2) / N): the wider of the
    two on each side. None below 2 values."""
    between = t_interval(values, level)
    if between is None:
        return None
    mean, within = float(np.mean(values)), math.sqrt(sum(h * h for h in halves)) / len(values)
    return [min(between[0], mean - within), max(between[1], mean + within)]


def pooled_random_rho(oracles: Sequence[Sequence[float]], orders: int = RANDOM_ORDERS, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Where the mean rho over N models falls when each model's ranking is a uniformly random order: draw
    `orders` random rhos against each model's own oracle (as `random_rho` does), average them across
    models draw by draw, and take the central `level` range."""
    draws = []
    for k, oracle in enumerate(oracles):
        oracle = np.asarray(oracle, float)
        rng = np.random.default_rng([seed, k, 1])
        draws.append(_row_spearman(rng.random((orders, len(oracle))), np.broadcast_to(-oracle, (orders, len(oracle)))))
    mean = np.mean(draws, axis=0)
    low, high = _central(mean, level)
    return {"mean": float(np.nanmean(mean)), "interval": [low, high], "orders": orders, "models": len(draws)}
