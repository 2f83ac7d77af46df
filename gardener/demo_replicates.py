"""`gardener demo --replicates N`: the whole study on N independently trained models, and their verdicts pooled.

Replicate 1 is the demo folder itself (its seed), replicate K is OUT/replicates/K with seed + K - 1, each with
every stage cached as a single demo's is; their run folders are pooled (experiments/pooled.py) into
OUT/pooled.json and OUT/pooled.md. Replicates whose jobs wait in a queue (a SLURM array) leave the pooling to
the same command run again.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def replicate_folder(out: Path, k: int) -> Path:
    """Where replicate K (from 1) of the demo in `out` lives."""
    return out if k == 1 else out / "replicates" / str(k)


def run_replicates(out: Path, count: int, one: Callable[[Path, int], Path | None], seed: int,
                   say: Callable[[str], None]) -> Path | None:
    """Run `one(folder, k)` for each replicate; pooled.md once every replicate has its report, else None."""
    waiting = []
    for k in range(1, count + 1):
        if k > 1:
            say(f"replicate {k}/{count} (seed {seed + k - 1})")
        if one(replicate_folder(out, k), k) is None:
            waiting.append(k)
    if waiting:
        say(f"replicate(s) {', '.join(map(str, waiting))} of {count} wait for queued jobs; run the same command "
            f"again once they are done to pool the verdicts")
        return None
    return pooled_report(out, [replicate_folder(out, k) / "run" for k in range(1, count + 1)], seed)


def pooled_report(out: Path, runs: list[Path], seed: int) -> Path:
    """pooled.json and pooled.md (its figures in OUT/figures/): the replicates' agreement and ratio tables, pooled
    over the models."""
    from .experiments.pooled import write_pooled
    from .report.pooled import write_pooled_markdown

    pooled = write_pooled(runs, out / "pooled.json", force=True, seed=seed)
    return write_pooled_markdown(pooled, out / "pooled.md", [str(r.relative_to(out)) for r in runs], [], force=True)
