"""How well a data-free ranking agrees with the oracle, and whether that agreement is beyond noise.

Both rankings are importance rankings (1 = most important); equal scores are ties and share
their average rank. Spearman rho comes with a 95 % bootstrap interval that resamples the
oracle's test videos (and its seeds, when it has several), so a ranking decided by noise gets a
wide interval; the `random` row is where uniformly random block orders fall. A criterion "beats
random" only when its interval lies above that range. When no two single-block removals of the
oracle are separable, its ranking is noise: the agreement is then reported without p-values.
Top-k overlap is the share of the k blocks each ranking would remove first that both remove.
`oracle_agreement` compares the two oracles (full finetuning and healing) by the same statistics.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..criteria import group_of
from ..errors import GardenerError
from ..fileio import check_output, write_text
from ..ranking import ranks as tie_broken_ranks
from ..scoring import ScoreResult
from ..stats import (RESAMPLES, average_ranks, importance, oracle_resamples, random_rho, rho_interval, spearman,
                     unpack_correct)

BASIC_LEVEL = 95  # percent: the bootstrap intervals' level

TOP_K = (1, 3, 5)


def overlap(rank_a: list[int], rank_b: list[int]) -> dict[str, float]:
    """Top-k overlap of the blocks two (tie-broken) rankings would remove first."""
    if len(rank_a) != len(rank_b):
        raise GardenerError(f"the rankings cover {len(rank_a)} and {len(rank_b)} blocks")
    depth = len(rank_a)

    def removed_first(r: list[int], k: int) -> set[int]:
        return {block for block, rank in enumerate(r, start=1) if rank > depth - k}
    return {str(k): len(removed_first(rank_a, k) & removed_first(rank_b, k)) / k for k in TOP_K if k <= depth}


def _correct_matrix(oracle: dict) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(blocks, seeds, samples) of what the bootstrap resamples, from a sensitivity table or oracle meta, if it
    holds them all: 0/1 per test video or image, or per test sequence its summed loss with its token counts
    (the second array; None for 0/1)."""
    if oracle.get("nll") or any(b.get("nll") for b in oracle.get("blocks", [])):
        rows = oracle.get("nll") or [b.get("nll") for b in oracle["blocks"]]
        weights = oracle.get("tokens") or [b.get("tokens") for b in oracle["blocks"]]
        if any(not r for r in rows):
            return None
        _same_shapes(rows)
        return np.array(rows, float), np.array(weights, float)
    rows = oracle.get("correct") or [b.get("correct") for b in oracle.get("blocks", [])]
    if not rows or any(not r for r in rows):
        return None
    _same_shapes(rows)
    return np.stack([np.stack([unpack_correct(s) for s in seeds]) for seeds in rows]), None


def _same_shapes(rows: list) -> None:
    shapes = {(len(seeds), len(s)) for seeds in rows for s in seeds}
    if len(shapes) != 1:
        raise GardenerError(f"the oracle's jobs were evaluated on different test splits or seed counts "
                            f"({sorted(shapes)} seeds x samples); rerun them in a fresh run folder")


def _resampled(samples: tuple[np.ndarray, np.ndarray | None] | None, resamples: int, seed: int) -> np.ndarray | None:
    return None if samples is None else oracle_resamples(samples[0], resamples, seed, samples[1])


def _criterion_row(values: np.ndarray, removes: str, oracle_scores: list[float], resampled: np.ndarray | None,
                   spread: bool | None, band: list[float], oracle_removes: str = "highest") -> dict:
    """Rho, tau and (where the oracle has spread) p-values of one criterion, its bootstrap interval and
    whether that interval lies above the random band (None: not tested, no per-video results)."""
    from scipy import stats

    mine, theirs = importance(values, removes), importance(oracle_scores, oracle_removes)
    rho = spearman(mine, theirs)
    defined = not math.isnan(rho)
    row = {"spearman": rho, "kendall": float(stats.kendalltau(mine, theirs).statistic) if defined else math.nan,
           "spearman_p": None, "kendall_p": None, "spearman_interval": None, "beats_random": None}
    if spread is not False and defined:  # p-values only where the oracle's ranking is more than noise
        row["spearman_p"] = float(stats.spearmanr(mine, theirs).pvalue)
        row["kendall_p"] = float(stats.kendalltau(mine, theirs).pvalue)
    if resampled is not None:
        row["spearman_interval"] = list(rho_interval(mine, oracle_scores, resampled, removes=oracle_removes))
        low = row["spearman_interval"][0]
        row["beats_random"] = bool(spread and not math.isnan(low) and low > band[1])
    return row


def _random_row(null: dict, seeded: list[float] | None, depth: int) -> dict:
    """The reference row: where random block orders fall (its seeded ranks kept for Table 2, if any)."""
    return {"family": group_of("random"), "spearman": null["mean"], "spearman_interval": null["interval"],
            "kendall": None, "spearman_p": None, "kendall_p": None, "beats_random": None,
            "ranks": average_ranks(seeded, "lowest") if seeded else None,
            "top_k_overlap": {str(k): k / depth for k in TOP_K if k <= depth},
            "note": f"any random order: mean and 95 % range of rho over {null['orders']} random orders; "
                    f"top-k overlap: its expectation k / depth"}


def agreement(scores: ScoreResult, oracle: dict, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Every criterion of a score result against the oracle (a sensitivity table, or `scores` plus
    the oracle meta that `oracle.json` carries)."""
    oracle_scores = oracle["scores"]
    if scores.depth != len(oracle_scores):
        raise GardenerError(f"the scores cover {scores.depth} blocks but the oracle {len(oracle_scores)}")
    correct = _correct_matrix(oracle)
    resampled = _resampled(correct, resamples, seed)
    spread, direction = oracle.get("spread"), oracle.get("removes", "highest")
    null = random_rho(oracle_scores, seed=seed, removes=direction)
    oracle_order = tie_broken_ranks(oracle_scores, direction)
    rows = {name: {"family": group_of(name), "ranks": average_ranks(values, scores.removes[name]),
                   "top_k_overlap": overlap(scores.ranks(name), oracle_order),
                   **_criterion_row(np.asarray(values, float), scores.removes[name], oracle_scores, resampled,
                                    spread, null["interval"], direction)}
            for name, values in scores.scores.items() if name != "random"}
    rows["random"] = _random_row(null, scores.scores.get("random"), len(oracle_scores))
    cost = scores.meta.get("calibration", {}).get("cost", {})
    for name, row in rows.items():  # what a criterion needs beyond the weights: calibration clips and seconds
        row["cost"] = cost.get(name)
    seeds = correct[0].shape[1] if correct is not None else None
    return {"oracle": oracle.get("oracle"), **({"metric": oracle["metric"]} if oracle.get("metric") else {}),
            "oracle_ranks": average_ranks(oracle_scores, direction),
            "oracle_spread": spread, "random_orders": null,
            "bootstrap": {"resamples": resamples if correct is not None else 0, "seeds": seeds, "method": "basic"},
            "criteria": rows, "beats_random": [n for n, r in rows.items() if r["beats_random"]]}


def agree_files(scores_path, oracle_path, json_out: Path | None = None, force: bool = False) -> dict:
    """`gardener agree SCORES.json ORACLE.json`: from a score file and an oracle file alone; also
    written to `json_out` when given (an existing file only with `force`)."""
    if json_out is not None:
        check_output(json_out, [("the scores", scores_path), ("the oracle", oracle_path)], force, "--json")
    scores, oracle = ScoreResult.load(scores_path), ScoreResult.load(oracle_path)
    if "sensitivity" not in oracle.scores:
        raise GardenerError(f"{oracle_path}: holds no 'sensitivity' scores (expected RUN/oracle.json or "
                            f"RUN/healing_oracle.json from `gardener sensitivity`)")
    meta = (oracle.meta or {}).get("oracle") or {}
    result = agreement(scores, {**meta, "scores": oracle.scores["sensitivity"],
                                "removes": oracle.removes.get("sensitivity", "highest")})
    if json_out is not None:
        write_text(json_out, json.dumps(result, indent=2) + "\n", force)
    return result


# --- the two oracles against each other ---------------------------------------------------------------

def _separable(full: dict, healing: dict) -> bool | None:
    """False when either oracle is not separable (its ranking is noise), None when either is not known."""
    spreads = [full.get("spread"), healing.get("spread")]
    return False if False in spreads else (None if None in spreads else True)


def _joint_interval(full: dict, healing: dict, resamples: int, seed: int) -> tuple[list[float] | None, str]:
    """Basic bootstrap interval of rho between the two oracles' accuracies, and how it was resampled.

    Both oracles are noisy, so each resample draws the shared test videos once for both (the same
    draw for every block of either) and, per block of each oracle, its seeds (`stats.oracle_resamples`
    on the two stacked)."""
    first, second = _correct_matrix(full), _correct_matrix(healing)
    if first is None or second is None:
        return None, "no interval: an oracle's per-sample results are not recorded"
    if first[0].shape != second[0].shape:
        return None, (f"no interval: the oracles differ in seeds or test samples ({first[0].shape[1]} x "
                      f"{first[0].shape[2]} vs {second[0].shape[1]} x {second[0].shape[2]})")
    weights = None if first[1] is None else np.concatenate([first[1], second[1]])
    resampled = oracle_resamples(np.concatenate([first[0], second[0]]), resamples, seed, weights)
    first = first[0]
    depth = len(first)
    rhos = np.array([spearman(r[:depth], r[depth:]) for r in resampled])
    estimate = spearman(full["scores"], healing["scores"])
    if math.isnan(estimate) or np.isnan(rhos).all():
        return [math.nan, math.nan], "undefined: an oracle ranks every block the same"
    low, high = np.nanpercentile(rhos, [(100 - BASIC_LEVEL) / 2, (100 + BASIC_LEVEL) / 2])
    unit = (full.get("metric") or {}).get("unit") or "videos"
    how = (f"basic bootstrap: {resamples} resamples of the test {unit}, each draw shared by both oracles, and of "
           f"each oracle's {first.shape[1]} seed(s) per block")
    return [max(-1.0, 2 * estimate - float(high)), min(1.0, 2 * estimate - float(low))], how


def oracle_agreement(full: dict, healing: dict, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """How well the healing oracle ranks the blocks as the full oracle does (two sensitivity tables).

    Spearman rho and Kendall tau (ties as ties), top-k overlap, rho's 95 % interval (`_joint_interval`)
    and where random orders fall. As for a criterion against the oracle: when either oracle is not
    separable its ranking is noise, so no p-values are given and no agreement is a finding."""
    if len(full["scores"]) != len(healing["scores"]):
        raise GardenerError(f"the full oracle covers {len(full['scores'])} blocks but the healing oracle "
                            f"{len(healing['scores'])}")
    separable = _separable(full, healing)
    direction = full.get("removes", "highest")  # both oracles measure the same metric
    null = random_rho(full["scores"], seed=seed, removes=direction)
    row = _criterion_row(np.asarray(healing["scores"], float), direction, full["scores"], None, separable,
                         null["interval"], direction)
    interval, how = _joint_interval(full, healing, resamples, seed)
    row["spearman_interval"] = interval
    if interval is not None:
        row["beats_random"] = bool(separable and not math.isnan(interval[0]) and interval[0] > null["interval"][1])
    ranked = [tie_broken_ranks(t["scores"], direction) for t in (healing, full)]
    return {"oracles": {"full": full.get("oracle"), "healing": healing.get("oracle")},
            "ranks": {"full": average_ranks(full["scores"], direction),
                      "healing": average_ranks(healing["scores"], direction)},
            "spread": {"full": full.get("spread"), "healing": healing.get("spread")}, "separable": separable,
            **row, "top_k_overlap": overlap(*ranked), "random_orders": null,
            "bootstrap": {"resamples": resamples if interval is not None else 0, "method": "basic", "how": how}}
