"""Score every block of a checkpoint's stack with the chosen criteria, one block at a time."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import criteria as registry
from . import ranking
from .blocks import Stack, block_tensors, select_stack
from .calibration import CalibOptions
from .checkpoint import Checkpoint, open_checkpoint
from .criteria import BlockSummary, Context
from .errors import GardenerError
from .settings import check_number
from .values import VIEWS, BlockValues, in_view

PLOT_BINS = 128
EXACT_VALUE = ("entropy", "efficiency", "mutual_information")  # criteria that count exact weight values


@dataclass
class BlockInfo:
    """One scored block: its 1-based number, how many numbers it holds and from which tensors."""

    number: int
    n_params: int
    tensors: list[str]
    distinct: int | None = None  # distinct exact values, when an exact-value criterion ran


@dataclass
class ScoreResult:
    """Per-block scores of one stack, with everything needed to say how they were made."""

    source: str
    format: str
    stack: str
    family: str
    dtype_view: str
    stored_dtypes: list[str]
    params: str
    primary: str
    bins: int
    seed: int
    blocks: list[BlockInfo]
    scores: dict[str, list[float]]
    removes: dict[str, str]
    histograms: list[dict] | None = None
    aggregate: str = "mean"  # how spectral criteria combined each block's matrices
    meta: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # the checkpoint files read, for manifests

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def ranks(self, criterion: str | None = None) -> list[int]:
        """Importance rank per block (1 = most important)."""
        name = criterion or self.primary
        return ranking.ranks(self._scores(name), self.removes[name])

    def ranking(self, criterion: str | None = None) -> list[int]:
        """Block numbers (1-based), most important first."""
        name = criterion or self.primary
        return [self.blocks[i].number for i in ranking.importance_order(self._scores(name), self.removes[name])]

    def removal_order(self, criterion: str | None = None) -> list[int]:
        """Block numbers (1-based) in the order the criterion removes them."""
        return self.ranking(criterion)[::-1]

    def caveats(self, criterion: str | None = None, removed: list[int] | None = None) -> list[str]:
        """Why the criterion's ranking may not be decided by the weights: round-off or ties.

        With `removed` (1-based block numbers a prune takes), only ties that straddle the cut
        count: blocks of equal score of which some go and some stay, chosen by block index.
        """
        name = criterion or self.primary
        scores, out = self._scores(name), []
        known = [b for b in self.blocks if b.distinct is not None]
        if name in EXACT_VALUE and known:
            share = min(b.distinct / b.n_params for b in known)
            if share > 0.5:
                out.append(f"most weight values are distinct (at least {share:.0%} in every block), so exact-value "
                           f"{name} is about ln N for blocks of equal size and its ranking is decided by round-off; "
                           f"try --dtype float16 / bfloat16, or hist_entropy")
        for group in ranking.tie_groups(scores):
            numbers = [self.blocks[i].number for i in group]
            shown = ", ".join(map(str, numbers[:8])) + (f" ... ({len(numbers)} blocks)" if len(numbers) > 8 else "")
            if removed is None:
                out.append(f"blocks {shown} score exactly the same by {name}: block index orders them")
            elif 0 < len(gone := [n for n in numbers if n in removed]) < len(numbers):
                out.append(f"blocks {shown} score exactly the same by {name}: block index chose which "
                           f"{len(gone)} of them {'is' if len(gone) == 1 else 'are'} removed")
        return out

    def _scores(self, name: str) -> list[float]:
        if name not in self.scores:
            raise GardenerError(f"criterion {name!r} was not computed; computed: {', '.join(self.scores)}")
        return self.scores[name]

    def to_frame(self):
        """A pandas DataFrame: one row per block, a score and a rank column per criterion."""
        import pandas as pd

        rows = {"block": [b.number for b in self.blocks], "n_params": [b.n_params for b in self.blocks]}
        for name, values in self.scores.items():
            rows[name] = values
            rows[f"{name}_rank"] = self.ranks(name)
        order = self.removal_order()
        rows["removal_order"] = [order.index(b.number) + 1 for b in self.blocks]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): metadata, blocks, and per criterion scores, ranks and direction."""
        data = asdict(self)
        data["depth"] = self.depth
        data["criteria"] = {name: {"removes": self.removes[name], "scores": vals, "ranks": self.ranks(name),
                                   "removal_order": self.removal_order(name)}
                            for name, vals in self.scores.items()}
        data["removal_order"] = self.removal_order()
        del data["scores"], data["removes"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreResult:
        """Rebuild a result from `to_dict` output (e.g. a `gardener score --json` file)."""
        kept = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        kept["blocks"] = [BlockInfo(**b) for b in data["blocks"]]
        kept["scores"] = {n: c["scores"] for n, c in data["criteria"].items()}
        kept["removes"] = {n: c["removes"] for n, c in data["criteria"].items()}
        return cls(**kept)

    @classmethod
    def load(cls, path: str | Path) -> ScoreResult:
        """Read a `gardener score --json` file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise GardenerError(f"{path}: no such file") from None
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise GardenerError(f"{path}: not a gardener scores file ({exc.__class__.__name__}: {exc})") from None


def _score_block(ckpt: Checkpoint, names: list[str], view: str, crits: list, ctx: Context,
                 keep_counts: bool, histograms: bool) -> tuple[dict, object, int | None, dict | None]:
    parts = [(n, *in_view(ckpt.read(n), ckpt.info(n).dtype, view)) for n in names]
    values = BlockValues(parts)
    counts = values.counts(full=True) if keep_counts else None  # before entropy builds a lighter table
    scores = {c.name: float(c.fn(values, ctx)) for c in crits}
    distinct = values.distinct
    hist = None
    if histograms:
        counts_h, edges = values.histogram(PLOT_BINS)
        hist = {"counts": counts_h.tolist(), "edges": edges.tolist()}
    return scores, counts, distinct, hist


def _plan(ckpt: Checkpoint, stack: Stack, params: str) -> list[BlockInfo]:
    infos = []
    for block in stack.blocks:
        names = block_tensors(ckpt, block, params)
        if not names:
            hint = " (try --params all)" if params == "2d" else ""
            raise GardenerError(f"{ckpt.path}: block {block.number} of stack {stack.name!r} has no "
                                f"weight matrices to score{hint}")
        infos.append(BlockInfo(block.number, sum(ckpt.info(n).numel for n in names), names))
    return infos


def score(path: str | Path | Checkpoint, criteria: str | list[str] | None = "all", *,
          primary: str = "entropy", dtype: str = "stored", stack: str | None = None,
          block_pattern: str | None = None, params: str = "2d", bins: int = 2048, seed: int = 0,
          histograms: bool = False, workers: int | None = None, aggregate: str = "mean",
          progress: Callable[[int, int], None] | None = None, calib: CalibOptions | None = None) -> ScoreResult:
    """Score each block of a checkpoint's stack from its weights alone (and, for the calibration
    criteria, from one forward pass over `calib`'s data).

    Args:
        path: HF model directory, .safetensors file or PyTorch state-dict file (or an open Checkpoint).
        criteria: "all" (every data-free criterion), a comma list or a list of registered names.
        primary: the criterion whose ranks and removal order are reported; always computed.
        dtype: precision view: "stored" (as on disk) or cast to float16 / bfloat16 / float32 first.
        stack: which stack to score (default: the encoder); block_pattern overrides detection.
        params: "2d" (the paper: 2-D weight matrices only) or "all" tensors of each block.
        bins: histogram bins for hist_entropy. seed: for the random criterion and the calibration set.
        histograms: also keep a 128-bin histogram per block (for plots).
        workers: threads scoring blocks in parallel (default: up to 2); each holds one block.
        aggregate: how spectral criteria combine a block's matrices: mean, min, max or weighted.
        calib: calibration data and settings, needed by block_influence, angular_distance, skip_loss.
    """
    check_number("--seed", seed, 0)
    check_number("--workers", workers, 1)
    crits = _criteria(criteria, primary, dtype, bins, aggregate)
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    chosen = select_stack(ckpt, stack, block_pattern)
    infos = _plan(ckpt, chosen, params)
    ctx = Context(bins=bins, seed=seed, aggregate=aggregate)
    block_crits = [c for c in crits if c.scope == "block"]
    keep_counts = any(c.needs_counts for c in crits)
    results = _run_blocks(ckpt, infos, dtype, block_crits, ctx, keep_counts, histograms, workers, progress)
    scores = {c.name: [r[0][c.name] for r in results] for c in block_crits}
    summaries = [BlockSummary(b.number, b.n_params, r[1]) for b, r in zip(infos, results)]
    for c in crits:
        if c.scope == "model":
            scores[c.name] = [float(s) for s in c.fn(summaries, ctx)]
    meta = _calibration_scores(ckpt, chosen, [c for c in crits if c.scope == "calibration"], calib, ctx, scores)
    warnings = checkpoint_warnings(ckpt, chosen) + meta.get("calibration", {}).get("warnings", [])
    if warnings:
        meta["warnings"] = warnings
    for info, r in zip(infos, results):
        info.distinct = r[2]
    stored = sorted({ckpt.info(n).dtype for b in infos for n in b.tensors})
    return ScoreResult(
        source=str(ckpt.path), format=ckpt.format, stack=chosen.name, family=chosen.family.name,
        dtype_view=dtype, stored_dtypes=stored, params=params, primary=primary, bins=bins, seed=seed,
        blocks=infos, scores={c.name: scores[c.name] for c in crits}, removes={c.name: c.removes for c in crits},
        histograms=[r[3] for r in results] if histograms else None, aggregate=aggregate, meta=meta,
        files=[str(f) for f in ckpt.files],
    )


def checkpoint_warnings(ckpt: Checkpoint, chosen: Stack) -> list[str]:
    """What is odd about a checkpoint that does not stop it from being read: its own warnings (which
    weight files were read), and a config.json that counts the chosen stack's blocks otherwise."""
    from .families import depth_disagreement

    odd = depth_disagreement(ckpt.config, chosen.family, chosen.name, chosen.depth)
    return list(ckpt.warnings) + ([str(odd)] if odd else [])


def _criteria(criteria, primary: str, dtype: str, bins: int, aggregate: str) -> list:
    """The registered criteria to compute (the primary one first if not listed), arguments checked."""
    if dtype not in VIEWS:
        raise GardenerError(f"--dtype {dtype!r}: expected one of {', '.join(VIEWS)}")
    if bins < 2:
        raise GardenerError(f"--bins {bins}: expected at least 2")
    registry.check_aggregate(aggregate)
    names = registry.parse(criteria)
    registry.get(primary)
    return [registry.get(n) for n in (names if primary in names else [primary, *names])]


def _calibration_scores(ckpt: Checkpoint, chosen: Stack, crits: list, calib: CalibOptions | None, ctx: Context,
                        scores: dict) -> dict:
    """Run the calibration criteria (one pass shared by all) into `scores`; their record for `meta`."""
    if not crits:
        return {}
    from .calibration import CalibrationPass

    span = (calib or CalibOptions()).span
    if span >= chosen.depth and any(c.name == "angular_distance" for c in crits):  # before the forward pass
        raise GardenerError(f"--span {span}: {chosen.name} has {chosen.depth} blocks; a span is at most "
                            f"{chosen.depth - 1} of them (one must remain)")
    calibration = CalibrationPass(ckpt.path, calib or CalibOptions(), stack=chosen.name, seed=ctx.seed)
    if calibration.depth != chosen.depth:
        raise GardenerError(f"{ckpt.path}: the model's stack {calibration.stack.name!r} has {calibration.depth} "
                            f"blocks, the checkpoint's {chosen.name!r} {chosen.depth}; pick one with --stack")
    for c in crits:
        scores[c.name] = [float(v) for v in c.fn(calibration, ctx)]
    record = calibration.summary()
    shared = record["seconds"].get("hidden_states", 0.0)
    record["cost"] = {c.name: {"clips": calibration.clips, "seconds": record["seconds"].get(c.name, shared)}
                      for c in crits}
    return {"calibration": record}


def _run_blocks(ckpt, infos, dtype, crits, ctx, keep_counts, histograms, workers, progress) -> list:
    workers = workers or min(2, os.cpu_count() or 1)

    def one(info: BlockInfo):
        try:
            return _score_block(ckpt, info.tensors, dtype, crits, ctx, keep_counts, histograms)
        except GardenerError as exc:
            raise GardenerError(f"{ckpt.path}: block {info.number}: {exc}") from None

    results: list = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for out in pool.map(one, infos):  # in block order; progress reported from this thread only
            results.append(out)
            if progress:
                progress(len(results), len(infos))
    return results
