"""Verdicts pooled over independently trained models: one run folder per model, the same study in each.

One run's agreement covers its test videos and finetuning seeds, not the model: a library update that
initialises the model otherwise can change which criteria "win". Pooled over N models, per criterion:
each model's Spearman rho, their mean, and the t-interval of that mean over the models (N - 1 degrees
of freedom, stated as such), widened on a side where the models' own intervals say the mean is less
certain than their spread shows (three models that agree by chance do not make a narrow interval). A criterion is beyond random only where
that interval lies above the pooled random band: where the mean rho over the N models falls when each
model's ranking is a random order (simulated against each model's own oracle). "In k of N" says in how
many models it was beyond random on its own.

The pruning-ratio table is pooled the same way: per model and ratio, how much better a criterion's metric
is than the mean of that model's random orders (top-1 minus theirs; for a perplexity, theirs minus its);
the t-interval of the mean difference over the models; above random only where it lies above 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import GardenerError
from ..stats import pooled_interval, pooled_random_rho

METHOD = ("t-interval over models (N - 1 degrees of freedom) of the per-model values, widened where the models' "
          "own intervals (sqrt(sum h^2) / N) are wider")
NOT_POOLED = ("random", "sensitivity")  # the band itself, and the oracle (rho 1 with itself)


def read_run(run: str | Path) -> dict:
    """A run folder's agreement.json and sweep.json (either may be missing, not both), with one-line errors."""
    run = Path(run)
    if not run.is_dir():
        raise GardenerError(f"{run}: not a run folder")
    found = {}
    for name in ("agreement", "sweep"):
        path = run / f"{name}.json"
        if path.is_file():
            try:
                found[name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise GardenerError(f"{path}: not readable JSON ({exc.__class__.__name__})") from None
    if not found:
        raise GardenerError(f"{run}: holds neither agreement.json nor sweep.json; finish its sweep and oracle first")
    try:
        made_with = json.loads((run / "run.json").read_text(encoding="utf-8")).get("versions") or {}
    except (OSError, ValueError, AttributeError):
        made_with = {}
    return {"run": str(run), "versions": made_with, **found}


def write_pooled(runs: list[Path], json_out: Path | None = None, *, force: bool = False, seed: int = 0) -> dict:
    """`gardener pool`: read the runs, pool them and (with `json_out`) write the result with its manifest."""
    from ..fileio import check_output, write_text
    from ..manifest import manifest

    files = [Path(r) / f"{name}.json" for r in runs for name in ("agreement", "sweep") if (Path(r) / f"{name}.json").is_file()]
    if json_out is not None:
        check_output(json_out, [("a pooled table", f) for f in files], force, "json")
    pooled = pool([read_run(r) for r in runs], seed=seed)
    if json_out is not None:
        pooled["meta"] = manifest("pooled", files, {"runs": [str(r) for r in runs], "seed": seed})
        write_text(json_out, json.dumps(pooled, indent=2) + "\n", force)
    return pooled


def pool(runs: list[dict], seed: int = 0) -> dict:
    """The pooled agreement and ratio tables of several runs of one study (see the module docstring)."""
    if len(runs) < 2:
        raise GardenerError(f"pooling needs the runs of at least 2 models; got {len(runs)}")
    out: dict = {"models": len(runs), "runs": [r["run"] for r in runs], "method": METHOD,
                 "versions": [r.get("versions") or {} for r in runs]}
    agreements = [r.get("agreement") for r in runs]
    if all(a is not None for a in agreements):
        out["agreement"] = pool_agreement(agreements, seed)
    sweeps = [r.get("sweep") for r in runs]
    if all(s is not None for s in sweeps):
        out["sweep"] = pool_sweep(sweeps)
    if "agreement" not in out and "sweep" not in out:
        raise GardenerError("the runs hold no table every one of them has (agreement.json or sweep.json in each)")
    return out


def pool_agreement(agreements: list[dict], seed: int = 0) -> dict:
    """Per criterion: each model's rho, their mean, its interval over models, and the verdict against random."""
    depths = {len(a["oracle_ranks"]) for a in agreements}
    if len(depths) != 1:
        raise GardenerError(f"the runs' oracles rank different numbers of blocks ({sorted(depths)}): not one study")
    band = pooled_random_rho([a["oracle_ranks"] for a in agreements], seed=seed)
    names = [n for n in agreements[0]["criteria"] if n not in NOT_POOLED]
    rows = {}
    for name in names:
        if not all(name in a["criteria"] for a in agreements):
            continue
        rho = [float(a["criteria"][name]["spearman"]) for a in agreements]
        interval = pooled_interval(rho, [_half(a["criteria"][name].get("spearman_interval")) for a in agreements])
        interval = [max(-1.0, interval[0]), min(1.0, interval[1])]  # a rho lies in [-1, 1]
        alone = [a["criteria"][name].get("beats_random") for a in agreements]
        rows[name] = {"group": agreements[0]["criteria"][name].get("family", ""), "per_model": rho,
                      "mean": float(np.mean(rho)), "interval": interval,
                      "beats_random": bool(interval is not None and interval[0] > band["interval"][1]),
                      # wholly below the band: the criterion ranks blocks the wrong way round, not "no signal"
                      "below_random": bool(interval is not None and interval[1] < band["interval"][0]),
                      "beats_random_in": sum(1 for b in alone if b), "tested_in": sum(1 for b in alone if b is not None)}
    missing = sorted({n for a in agreements for n in a["criteria"]} - set(rows) - set(NOT_POOLED))
    return {"random": band, "criteria": rows, "missing": missing,
            "beats_random": [n for n, r in rows.items() if r["beats_random"]]}


def pool_sweep(sweeps: list[dict]) -> dict:
    """Per criterion and ratio: each model's top-1 minus its random orders' mean top-1, and the pooled verdict."""
    ratios = [tuple(s["ratios"]) for s in sweeps]
    if len(set(ratios)) != 1:
        raise GardenerError(f"the runs' sweeps use different ratios ({sorted(set(ratios))}): not one study")
    from .results import table_metric

    tasks = {s.get("task") for s in sweeps}
    if len(tasks) != 1:
        raise GardenerError(f"the runs' sweeps were judged on different tasks ({sorted(map(str, tasks))}): not one study")
    metric = table_metric(sweeps[0])
    key = metric.name
    tables = [_by_cell(s) for s in sweeps]
    if any("random" not in {c for c, _ in t} for t in tables):
        raise GardenerError("a run's sweep has no random orders to compare with; sweep with --criteria ...,random")
    names = [n for n in sweeps[0]["criteria"] if n != "random"]
    rows = {}
    for name in names:
        cells = {}
        for ratio in sweeps[0]["ratios"]:
            if not all((name, ratio) in t for t in tables):
                continue
            diff = [metric.worse_by(t[("random", ratio)][key], t[(name, ratio)][key]) for t in tables]  # > 0: better
            interval = pooled_interval(diff, [float(np.hypot(_half(t[(name, ratio)].get("interval")),
                                                             _half(t[("random", ratio)].get("interval"))))
                                              for t in tables])
            alone = [_above(t[(name, ratio)], t[("random", ratio)], metric.better) for t in tables]
            cells[str(ratio)] = {key: [t[(name, ratio)][key] for t in tables], "vs_random": diff,
                                 "mean_vs_random": float(np.mean(diff)), "interval": interval,
                                 "above_random": bool(interval is not None and interval[0] > 0),
                                 "above_random_in": sum(alone)}
        if cells:
            rows[name] = cells
    return {"ratios": list(sweeps[0]["ratios"]), "criteria": rows,
            **({"task": sweeps[0]["task"], "metric": sweeps[0].get("metric")} if sweeps[0].get("task") else {})}


def _half(interval: list | None) -> float:
    """Half the width of a model's own interval (0 where it has none)."""
    return (interval[1] - interval[0]) / 2 if interval and None not in interval else 0.0


def _by_cell(sweep: dict) -> dict:
    return {(r["criterion"], r["ratio"]): r for r in sweep["rows"]}


def _above(row: dict, random: dict, better: str = "higher") -> bool:
    """One model's own verdict: the criterion's interval lies beyond its random orders' interval, on the better
    side (above for an accuracy, below for a perplexity)."""
    mine, theirs = row.get("interval"), random.get("interval")
    if better == "lower":
        return bool(mine and theirs and mine[1] < theirs[0])
    return bool(mine and theirs and mine[0] > theirs[1])
