"""Honest statistics: Wilson intervals, separability, ties as ties, bootstrap intervals on rank agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gardener.stats import (Z95, average_ranks, oracle_resamples, pack_correct, random_rho, rho_interval,
                            runs_interval, separable, spearman, unpack_correct, wilson)


def _wilson_by_solving(successes: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson interval from its definition: the p whose normal test does not reject the observed
    proportion, i.e. the roots of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    p_hat = successes / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return ((-b - root) / (2 * a), (-b + root) / (2 * a))


@pytest.mark.parametrize("successes,n", [(93, 100), (0, 50), (50, 50), (1, 3), (2871, 3200), (40, 80)])
def test_wilson_interval_equals_the_roots_of_its_defining_equation(successes, n):
    lo, hi = wilson(successes / n, n)
    want = _wilson_by_solving(successes, n, Z95)
    assert lo == pytest.approx(want[0], abs=1e-12) and hi == pytest.approx(want[1], abs=1e-12)
    assert 0 <= lo <= successes / n <= hi <= 1
    assert Z95 == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)


def test_wilson_narrows_with_the_test_set_and_is_unknown_without_one():
    assert np.diff(wilson(0.9, 100))[0] > np.diff(wilson(0.9, 400))[0] > np.diff(wilson(0.9, 3200))[0]
    assert all(math.isnan(x) for x in wilson(0.5, 0))


def test_separable_means_intervals_that_do_not_overlap():
    assert separable((0.80, 0.85), (0.86, 0.90)) and separable((0.86, 0.90), (0.80, 0.85))
    assert not separable((0.80, 0.86), (0.85, 0.90))
    assert not separable((math.nan, math.nan), (0.1, 0.2))


def test_ties_share_their_average_rank_in_either_direction():
    assert average_ranks([0.9, 0.8, 0.8, 0.5], "highest") == [4.0, 2.5, 2.5, 1.0]  # lowest accuracy: most important
    assert average_ranks([3.0, 1.0, 1.0, 2.0], "lowest") == [1.0, 3.5, 3.5, 2.0]
    assert average_ranks([0.7] * 4, "highest") == [2.5] * 4


def test_spearman_of_tied_values_is_scipys_and_nan_for_a_constant_ranking():
    a, b = [1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 1.0, 3.0, 3.0, 4.0]
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def _oracle(accuracies: list[float], seeds: int, videos: int, seed: int = 0) -> np.ndarray:
    """Per-video right/wrong flags (blocks, seeds, videos) with the given accuracy per block."""
    rng = np.random.default_rng(seed)
    return (rng.random((len(accuracies), seeds, videos)) < np.array(accuracies)[:, None, None]).astype(np.uint8)


def test_bootstrap_interval_is_tight_for_a_clear_oracle_and_wide_for_a_flat_one():
    accuracies = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    agree = -np.array(accuracies)  # the criterion's importance: lower accuracy after removal = more important
    clear = _oracle(accuracies, seeds=2, videos=800)
    lo, hi = rho_interval(agree, clear.mean((1, 2)), oracle_resamples(clear, 300))
    assert lo > 0.9 and hi == pytest.approx(1.0)
    flat = _oracle([0.8] * 6, seeds=2, videos=800)
    lo, hi = rho_interval(agree, flat.mean((1, 2)), oracle_resamples(flat, 300))
    assert hi - lo > 1.0 and lo < 0 < hi  # a flat oracle: any ranking's agreement is noise


def test_the_basic_interval_reflects_the_resampled_rhos_around_the_estimate():
    flags = _oracle([0.78, 0.8, 0.8, 0.81, 0.82, 0.9], seeds=1, videos=400, seed=3)
    oracle, resampled = flags.mean((1, 2)), oracle_resamples(flags, 400)
    criterion = -np.arange(6.0)
    estimate = spearman(criterion, -oracle)
    rhos = np.array([spearman(criterion, -row) for row in resampled])
    q_lo, q_hi = np.nanpercentile(rhos, [2.5, 97.5])
    lo, hi = rho_interval(criterion, oracle, resampled)
    assert lo == pytest.approx(max(-1, 2 * estimate - q_hi)) and hi == pytest.approx(min(1, 2 * estimate - q_lo))


def test_random_orders_centre_on_zero_with_the_spearman_null_range():
    null = random_rho([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.991, 0.992])
    assert abs(null["mean"]) < 0.02 and null["orders"] == 20000
    # 12 blocks without ties: the central 95 % of the exact null of Spearman's rho is about +-0.58
    assert null["interval"][0] == pytest.approx(-0.58, abs=0.03) and null["interval"][1] == pytest.approx(0.58, abs=0.03)


def test_an_interval_over_runs_covers_how_much_they_differ_and_the_test_set():
    tight = runs_interval([0.80, 0.80, 0.80], 1000)
    assert tight == pytest.approx(list(wilson(0.8, 1000)))  # runs that agree: the test set decides
    spread = runs_interval([0.57, 0.73, 0.69], 4800)
    half = stats.t.ppf(0.975, 2) * np.std([0.57, 0.73, 0.69], ddof=1) / np.sqrt(3)
    assert spread == pytest.approx([np.mean([0.57, 0.73, 0.69]) - half, np.mean([0.57, 0.73, 0.69]) + half])
    assert runs_interval([0.7], 100) == pytest.approx(list(wilson(0.7, 100))) and runs_interval([0.7], None) is None


def test_resampling_draws_the_same_videos_for_every_block():
    """Blocks share the test split: a block identical to another stays identical in every resample."""
    flags = _oracle([0.7, 0.7], seeds=1, videos=200)
    flags[1] = flags[0]
    resampled = oracle_resamples(flags, 50)
    assert np.array_equal(resampled[:, 0], resampled[:, 1]) and resampled[:, 0].std() > 0


def test_per_video_flags_round_trip_as_text():
    flags = [True, False, 1, 0, 1]
    assert pack_correct(flags) == "10101"
    assert unpack_correct("10101").tolist() == [1, 0, 1, 0, 1]
