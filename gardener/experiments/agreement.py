"""How well a data-free ranking agrees with the oracle: Spearman rho, Kendall tau, top-k overlap.

Both rankings are importance ranks (1 = most important). Top-k overlap is the share of the k
blocks each ranking would remove first that the two have in common (the pruning end).
"""
from __future__ import annotations

from ..criteria import family_of
from ..errors import GardenerError
from ..ranking import ranks
from ..scoring import ScoreResult

TOP_K = (1, 3, 5)


def compare(rank_a: list[int], rank_b: list[int]) -> dict:
    """Spearman and Kendall (with p-values) and top-k overlap of two importance rankings."""
    from scipy import stats

    if len(rank_a) != len(rank_b):
        raise GardenerError(f"the rankings cover {len(rank_a)} and {len(rank_b)} blocks")
    rho = stats.spearmanr(rank_a, rank_b)
    tau = stats.kendalltau(rank_a, rank_b)
    depth = len(rank_a)

    def removed_first(r: list[int], k: int) -> set[int]:
        return {block for block, rank in enumerate(r, start=1) if rank > depth - k}
    overlap = {str(k): len(removed_first(rank_a, k) & removed_first(rank_b, k)) / k for k in TOP_K if k <= depth}
    return {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue), "kendall": float(tau.statistic),
            "kendall_p": float(tau.pvalue), "top_k_overlap": overlap}


def agreement(scores: ScoreResult, oracle_scores: list[float]) -> dict:
    """Every criterion of a score result against the oracle's accuracy-after-removal scores."""
    oracle = ranks(oracle_scores, "highest")
    if scores.depth != len(oracle):
        raise GardenerError(f"the scores cover {scores.depth} blocks but the oracle {len(oracle)}")
    rows = {name: {**compare(scores.ranks(name), oracle), "ranks": scores.ranks(name),
                   "family": family_of(name)} for name in scores.scores}
    return {"oracle_ranks": oracle, "criteria": rows}


def agree_files(scores_path, oracle_path) -> dict:
    """`gardener agree SCORES.json ORACLE.json`: from a score file and an oracle file alone."""
    scores, oracle = ScoreResult.load(scores_path), ScoreResult.load(oracle_path)
    if "sensitivity" not in oracle.scores:
        raise GardenerError(f"{oracle_path}: holds no 'sensitivity' scores (expected RUN/oracle.json from "
                            f"`gardener sensitivity`)")
    return agreement(scores, oracle.scores["sensitivity"])
