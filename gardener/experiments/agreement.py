"""How well a data-free ranking agrees with the oracle, and whether that agreement is beyond noise.

Both rankings are importance rankings (1 = most important); equal scores are ties and share
their average rank. Spearman rho and Kendall tau come with a 95 % bootstrap interval that
resamples the oracle's test videos and seeds (so a ranking decided by noise gets a wide
interval), and with the range where a uniformly random block order falls. A criterion "beats
random" only when its interval lies above that range. When no two single-block removals of the
oracle are separable, its ranking is noise: the agreement is then reported without p-values.
Top-k overlap is the share of the k blocks each ranking would remove first that both remove.
"""
from __future__ import annotations

import numpy as np

from ..criteria import family_of
from ..errors import GardenerError
from ..ranking import ranks as tie_broken_ranks
from ..scoring import ScoreResult
from ..stats import (RESAMPLES, average_ranks, importance, oracle_resamples, random_rho, random_rho_without_data,
                     rho_interval, spearman, unpack_correct)

TOP_K = (1, 3, 5)


def overlap(rank_a: list[int], rank_b: list[int]) -> dict[str, float]:
    """Top-k overlap of the blocks two (tie-broken) rankings would remove first."""
    if len(rank_a) != len(rank_b):
        raise GardenerError(f"the rankings cover {len(rank_a)} and {len(rank_b)} blocks")
    depth = len(rank_a)

    def removed_first(r: list[int], k: int) -> set[int]:
        return {block for block, rank in enumerate(r, start=1) if rank > depth - k}
    return {str(k): len(removed_first(rank_a, k) & removed_first(rank_b, k)) / k for k in TOP_K if k <= depth}


def _correct_matrix(oracle: dict) -> np.ndarray | None:
    """(blocks, seeds, videos) of 0/1 from a sensitivity table or oracle meta, if it holds them."""
    rows = oracle.get("correct") or [b.get("correct") for b in oracle.get("blocks", [])]
    if not rows or any(not r for r in rows):
        return None
    return np.stack([np.stack([unpack_correct(s) for s in seeds]) for seeds in rows])


def _criterion_row(values: np.ndarray, removes: str, oracle_imp: np.ndarray, resampled, spread, null) -> dict:
    from scipy import stats

    mine = importance(values, removes)
    rho = spearman(mine, oracle_imp)
    row = {"spearman": rho, "kendall": float(stats.kendalltau(mine, oracle_imp).statistic)
           if np.ptp(mine) and np.ptp(oracle_imp) else float("nan")}
    if spread:  # p-values only where the oracle's ranking is more than noise
        row["spearman_p"] = float(stats.spearmanr(mine, oracle_imp).pvalue) if rho == rho else None
        row["kendall_p"] = float(stats.kendalltau(mine, oracle_imp).pvalue) if rho == rho else None
    else:
        row["spearman_p"] = row["kendall_p"] = None
    row["spearman_interval"] = list(rho_interval(mine, resampled)) if resampled is not None else None
    low = row["spearman_interval"][0] if row["spearman_interval"] else None
    row["beats_random"] = bool(spread and low is not None and low > null["interval"][1])
    return row


def agreement(scores: ScoreResult, oracle: dict, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Every criterion of a score result against the oracle (a sensitivity table, or `scores` plus
    the oracle meta that `oracle.json` carries)."""
    oracle_scores = oracle["scores"]
    if scores.depth != len(oracle_scores):
        raise GardenerError(f"the scores cover {scores.depth} blocks but the oracle {len(oracle_scores)}")
    oracle_imp = importance(oracle_scores, "highest")
    correct = _correct_matrix(oracle)
    resampled = oracle_resamples(correct, resamples, seed) if correct is not None else None
    spread = oracle.get("spread")
    if spread is None and resampled is None:
        spread = True  # nothing says how noisy this oracle is: report it as given (e.g. published accuracies)
    null = random_rho(resampled, seed) if resampled is not None else random_rho_without_data(scores.depth, resamples,
                                                                                             seed)
    oracle_order = tie_broken_ranks(oracle_scores, "highest")
    rows = {}
    for name, values in scores.scores.items():
        if name == "random":
            continue
        removes = scores.removes[name]
        rows[name] = {"family": family_of(name), "ranks": average_ranks(values, removes),
                      "top_k_overlap": overlap(scores.ranks(name), oracle_order),
                      **_criterion_row(np.asarray(values, float), removes, oracle_imp, resampled, spread, null)}
    # one seeded random order says little: the random row is where random orders fall (its seeded
    # ranks, when the scores hold them, are kept for Table 2)
    seeded = scores.scores.get("random")
    rows["random"] = {"family": family_of("random"), "spearman": null["mean"], "spearman_interval": null["interval"],
                      "kendall": None, "spearman_p": None, "kendall_p": None, "beats_random": False,
                      "ranks": average_ranks(seeded, "lowest") if seeded else None,
                      "top_k_overlap": {str(k): k / len(oracle_scores) for k in TOP_K if k <= len(oracle_scores)},
                      "note": f"any random order: mean and 95 % range of rho over {null['orders']} random orders; "
                              f"top-k overlap: its expectation k / depth"}
    return {"oracle_ranks": average_ranks(oracle_scores, "highest"), "oracle_spread": spread,
            "random_orders": null, "bootstrap": {"resamples": resamples if resampled is not None else 0,
                                                 "over": "test videos and oracle seeds"},
            "criteria": rows, "beats_random": [n for n, r in rows.items() if r["beats_random"]]}


def agree_files(scores_path, oracle_path) -> dict:
    """`gardener agree SCORES.json ORACLE.json`: from a score file and an oracle file alone."""
    scores, oracle = ScoreResult.load(scores_path), ScoreResult.load(oracle_path)
    if "sensitivity" not in oracle.scores:
        raise GardenerError(f"{oracle_path}: holds no 'sensitivity' scores (expected RUN/oracle.json from "
                            f"`gardener sensitivity`)")
    meta = (oracle.meta or {}).get("oracle") or {}
    return agreement(scores, {**meta, "scores": oracle.scores["sensitivity"]})
