"""The pruning-ratio sweep as jobs: for each criterion and ratio, remove the blocks the criterion ranks
least important, finetune, evaluate (the paper's Tables 3, 7-12).

One scoring pass serves every criterion (`protocol.experiment_scores`); the random orders are derived
from it, and the oracle's rows wait for the oracle, which runs first when the sweep includes it.
"""
from __future__ import annotations

from dataclasses import asdict, replace

from .. import criteria as registry
from ..errors import GardenerError
from ..ranking import removal_order
from ..scoring import ScoreResult
from ..scoring.settings import ScoreSettings
from .launchers import execute
from .oracle import run_sensitivity
from .plans import write_plan
from .protocol import Experiment, experiment_scores
from .ratios import parse_ratios
from .results import ORACLE, finish_tables, known_oracle
from .runs import unique


def parse_sweep_criteria(text: str) -> list[str]:
    """The criteria a sweep compares, in the given order: registered names ("calibration" stands for
    every calibration criterion, "all" for every data-free one) and the oracle."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise GardenerError("--criteria: give at least one criterion")
    out: list[str] = []
    for name in names:  # unknown names fail in registry.parse, with the list of known ones
        out += [ORACLE] if name == ORACLE else registry.parse(name)
    return list(dict.fromkeys(out))


def random_orders(scores: ScoreResult, seeds: int) -> dict[int, list[int]]:
    """The removal order of the `random` criterion for each seed 0..seeds-1, without reading weights.

    `random` is a model-scope criterion of the block count and the seed alone (criteria/baseline.py):
    called on the scored blocks it gives what `score(path, ["random"], seed=s)` would (a test checks).
    """
    criterion = registry.get("random")
    blocks = [registry.BlockSummary(b.number, b.n_params, None) for b in scores.blocks]

    def order(seed: int) -> list[int]:
        context = registry.Context(bins=scores.bins, seed=seed, aggregate=scores.aggregate)
        values = [float(v) for v in criterion.fn(blocks, context)]
        return replace(scores, primary="random", scores={"random": values},
                       removes={"random": criterion.removes}).removal_order()
    return {seed: order(seed) for seed in range(seeds)}


def criterion_orders(name: str, scores: ScoreResult, oracle: dict | None, random_seeds: int
                     ) -> dict[int | None, list[int]]:
    """One sweep criterion's removal orders by random seed (None: not random); none while the oracle is not known."""
    if name == ORACLE:
        return {} if oracle is None else {None: [i + 1 for i in removal_order(oracle["scores"],
                                                                              oracle.get("removes", "highest"))]}
    if name == "random":
        return random_orders(scores, random_seeds)
    return {None: scores.removal_order(name)}


def sweep_rows(exp: Experiment, names: list[str], ratios: list[tuple[float, int]], scores: ScoreResult,
               oracle: dict | None, random_seeds: int) -> list[dict]:
    """One row per (criterion, ratio, seed): the blocks it removes. Oracle rows wait for the oracle."""
    rows = []
    for name in names:
        orders = criterion_orders(name, scores, oracle, random_seeds)
        for ratio, count in ratios:
            for seed, order in orders.items():
                removed = sorted(order[:count])
                rows.append({"criterion": name, "ratio": ratio, "count": count, "seed": seed, "removed": removed,
                             "id": exp.job(removed).id})
    return rows


def sweep_plan(exp: Experiment, names: list[str], ratios: list[tuple[float, int]], rows: list[dict],
               scores: ScoreResult, oracle: dict | None, random_seeds: int, aggregate: str) -> dict:
    """The sweep's plan: its rows, the unpruned baseline, and what they were chosen with."""
    return {"kind": "sweep", "depth": exp.depth, "baseline": exp.job([]).id, "rows": rows, "criteria": names,
            "ratios": [r for r, _ in ratios], "waiting_for_oracle": ORACLE in names and oracle is None,
            "random_seeds": random_seeds, "dtype": scores.dtype_view, "aggregate": aggregate,
            "settings": asdict(exp.settings)}


def run_sweep(exp: Experiment, names: list[str], ratios: str | None = None, random_seeds: int = 3,
              scoring: ScoreSettings | None = None, shard=(0, 1), callbacks=None, progress=None,
              job_progress=None) -> dict:
    """The oracle first when the sweep includes it, then every (criterion, ratio) job; one scoring pass for all
    (`scoring`'s dtype view, aggregate and calibration data: the calibration criteria's one forward pass too).

    `ratios` default to the experiment's own, checked when it was prepared; text ('25,50') is read here."""
    ratios = exp.ratios if ratios is None else parse_ratios(ratios, exp.depth)
    if ratios is None:
        raise GardenerError("run_sweep: give the ratios (here, or to prepare)")
    scoring = scoring or ScoreSettings()
    aggregate = scoring.aggregate
    scores = experiment_scores(exp, names, scoring)
    counts: dict[str, int] = {}
    oracle = None
    if ORACLE in names:
        result = run_sensitivity(exp, shard, callbacks, progress, job_progress, scores=scores)
        oracle, counts = result["table"], result["counts"]
    rows = sweep_rows(exp, names, ratios, scores, oracle, random_seeds)
    plan = sweep_plan(exp, names, ratios, rows, scores, oracle, random_seeds, aggregate)
    write_plan(exp.run, "sweep", plan)
    jobs = unique([exp.job([])] + [exp.job(r["removed"]) for r in rows])
    more = execute(exp, jobs, shard, callbacks, progress, job_progress)
    counts = {k: counts.get(k, 0) + more.get(k, 0) for k in {**counts, **more}}
    made = finish_tables(exp.run, {"sweep": plan}, scores)
    return {"counts": counts, "table": made.get("sweep"), "oracle": oracle if oracle is not None else
            known_oracle(exp.run, made), "waiting_for_oracle": plan["waiting_for_oracle"]}
