"""The criteria against the oracle in the report: Table 2 (block ranks), every criterion ranked by its
agreement with the oracle (Spearman rho with its bootstrap interval), the verdict against random
orders, and the agreement figures. Which oracle they are judged against is said with its name."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import experiment_figures as figs
from .oracles import oracle_name, oracle_text
from .render import Part
from .text import rank_text


def by_agreement(agree: dict) -> list[str]:
    """Criterion names, best Spearman rho against the oracle first (an undefined rho last)."""
    def key(name: str) -> float:
        rho = agree["criteria"][name]["spearman"]
        return -rho if rho is not None and rho == rho else np.inf
    return sorted(agree["criteria"], key=key)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def _verdict(name: str, c: dict) -> str:
    if name == "random":
        return "reference"
    return "-" if c.get("beats_random") is None else ("yes" if c["beats_random"] else "no")


def agreement_rows(agree: dict) -> tuple[list[str], list[list[str]]]:
    """Every criterion ranked by Spearman rho with the oracle, with its bootstrap interval; the verdict
    against random only where the oracle has spread beyond noise, and p-values only beside a 'yes' (a small
    p beside 'no' would read as a finding the interval does not support; no column when no criterion wins)."""
    names = by_agreement(agree)
    ks = list(agree["criteria"][names[0]]["top_k_overlap"]) if names else []
    spread = agree.get("oracle_spread") is not False  # unknown: shown, as published results are
    with_p = spread and any(agree["criteria"][n].get("beats_random") is True for n in names if n != "random")
    headers = ["#", "criterion", "family", "Spearman rho", "95 % interval"] + (["p (rho)"] if with_p else [])
    headers += ["Kendall tau"] + (["p (tau)"] if with_p else []) + (["beats random"] if spread else [])
    headers += [f"top-{k} overlap" for k in ks] + ["cost beyond the weights"]
    rows = []
    for place, name in enumerate(names, start=1):
        c = agree["criteria"][name]
        interval = c.get("spearman_interval")
        wins = c.get("beats_random") is True and name != "random"
        row = [str(place), name, figs.family_of(agree, name), _fmt(c["spearman"]),
               f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval and interval[0] == interval[0] else "-"]
        row += [_fmt(c.get("spearman_p") if wins else None, ".3g")] if with_p else []
        row += [_fmt(c.get("kendall"))] + ([_fmt(c.get("kendall_p") if wins else None, ".3g")] if with_p else [])
        row += [_verdict(name, c)] if spread else []
        rows.append(row + [f"{c['top_k_overlap'][k]:.2f}" for k in ks] + [_cost(c.get("cost"))])
    return headers, rows


def _cost(cost: dict | None) -> str:
    """A calibration criterion's clips and seconds; nothing for one that reads the weights alone."""
    return f"{cost['clips']} clips, {cost['seconds']:.1f} s" if cost else "none"


def agreement_summary(agree: dict) -> str:
    """Which oracle the criteria are judged against, and which criteria, if any, agree with it beyond what
    a random order does."""
    unit = _unit(agree)
    return ((oracle_text(agree["oracle"]) + " " if agree.get("oracle") else "") + _agreement_verdict(agree)
            + SCOPE.replace("test videos", f"test {unit}"))


SCOPE = (" These verdicts concern one trained model: the intervals cover its test videos and finetuning seeds, not "
         "the model itself; run the same study on other trained models and pool them (`gardener pool RUN1 RUN2 ...`).")


def _unit(agree: dict) -> str:
    """What the oracle's test set counts (videos for agreements that do not say)."""
    return (agree.get("metric") or {}).get("unit") or "videos"


def _agreement_verdict(agree: dict) -> str:
    band = (agree.get("random_orders") or {}).get("interval")
    band_text = f" (95 % of random orders fall in [{band[0]:.2f}, {band[1]:.2f}])" if band and band[0] == band[0] else ""
    if agree.get("oracle_spread") is False:
        return ("**Not separable**: the oracle has no spread beyond noise, so no criterion's agreement with it is a "
                "finding; no p-values are given" + band_text + ".")
    boot = agree.get("bootstrap") or {}
    if not boot.get("resamples"):
        return (f"The oracle's per-{_unit(agree)[:-1]} results are not recorded, so there are no bootstrap intervals "
                "and whether a criterion beats random orders is not tested" + band_text + "; no p-values are given.")
    seeds = boot.get("seeds") or 1
    how = (f"Intervals: basic bootstrap, {boot['resamples']} resamples of the oracle's test {_unit(agree)}"
           + (f" and of its {seeds} seeds per block. " if seeds > 1 else
              " (one finetuning seed: the spread between seeds is not covered). "))
    winners = agree.get("beats_random", [])
    return how + ("Criteria whose whole interval lies above where random orders fall" + band_text + ": "
                  + (", ".join(f"**{w}**" for w in winners) + "; p-values are given for these alone."
                     if winners else "**none**, so no p-values are given."))


def agreement_parts(agree: dict, figures: Path) -> list[Part]:
    """Table 2 and the agreement of every criterion with the oracle (which one, `agreement_summary` says)."""
    names = list(agree["criteria"])
    healing = (agree.get("oracle") or {}).get("kind") == "healing"
    depth = len(agree["oracle_ranks"])
    parts: list[Part] = [
        ("h", 2, "Block ranks (1 = most important, Table 2)"),
        ("p", "Equal scores are ties and share their average rank."),
        ("table", ["block", *map(str, range(1, depth + 1))],
         [[name, *map(rank_text, agree["criteria"][name]["ranks"])] for name in names
          if agree["criteria"][name].get("ranks")]
         + [[f"sensitivity ({oracle_name(agree['oracle']) if healing else 'oracle'})",
             *map(rank_text, agree["oracle_ranks"])]]),
        ("h", 2, "Agreement with the oracle, all criteria ranked"),
        ("p", "Every data-free criterion, the paper's and the spectral ones, ranked by Spearman rho between its "
              "block importance and the oracle's (ties as ties). `random` is any random order: the mean rho over "
              "random orders and the range where 95 % of them fall. " + agreement_summary(agree)),
        ("table", *agreement_rows(agree)),
        ("img", figs.agreement_bars(agree, by_agreement(agree), figures / "agreement.png"),
         "Spearman rho with the oracle per criterion with its 95 % bootstrap interval, coloured by family "
         "(every family in the legend); grey band: where random orders fall.")]
    if "entropy" in agree["criteria"]:
        parts.append(("img", figs.rank_scatter(agree, "entropy", figures / "entropy_vs_oracle_ranks.png"),
                      "Entropy rank against oracle rank per block (tied blocks share their average rank)."))
    return parts
