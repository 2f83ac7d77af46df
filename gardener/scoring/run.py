"""Score every block of a checkpoint's stack with the chosen criteria, one block at a time."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path

from .. import criteria as registry
from ..blocks import Stack, block_tensors, select_stack
from ..checkpoint import Checkpoint, open_checkpoint
from ..criteria import BlockSummary, Context
from ..errors import GardenerError, SettingError
from ..joint_counts import Spill
from ..values import BlockValues, in_view
from .placement import check_placement
from .result import BlockInfo, ScoreResult
from .settings import CalibOptions, ScoreSettings

PLOT_BINS = 128
_REPORTING: ContextVar[Callable[[int, int], None] | None] = ContextVar("gardener_scoring_progress", default=None)


@contextmanager
def reporting(progress: Callable[[int, int], None]) -> Iterator[None]:
    """Within it, a scoring run that is given no `progress` reports to this one: how a caller shows the blocks of
    a scoring that runs inside other work (a prune ranking its blocks) without passing a callback through it."""
    token = _REPORTING.set(progress)
    try:
        yield
    finally:
        _REPORTING.reset(token)


def _score_block(ckpt: Checkpoint, names: list[str], view: str, crits: list, ctx: Context,
                 spill: Spill | None, histograms: bool) -> tuple[dict, object, int | None, dict | None]:
    parts = [(n, *in_view(ckpt.read(n), ckpt.info(n).dtype, view)) for n in names]
    values = BlockValues(parts)
    counts = spill.keep(values) if spill else None  # before entropy builds a lighter table
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
        if not names and params == "2d":
            raise SettingError("params", f"{ckpt.path}: block {block.number} of stack {stack.name!r} has no weight "
                                         f"matrices to score (try {{params}} all)")
        if not names:
            raise GardenerError(f"{ckpt.path}: block {block.number} of stack {stack.name!r} has no tensors to score")
        infos.append(BlockInfo(block.number, sum(ckpt.info(n).numel for n in names), names))
    return infos


def score(path: str | Path | Checkpoint, criteria: str | list[str] | None = None,
          settings: ScoreSettings | None = None, *, histograms: bool = False,
          progress: Callable[[int, int], None] | None = None, **fields) -> ScoreResult:
    """Score each block of a checkpoint's stack from its weights alone (and, for the calibration
    criteria, from one forward pass over `settings.calib`'s data).

    Args:
        path: HF model directory, .safetensors file or PyTorch state-dict file (or an open Checkpoint).
        criteria: "all" (every data-free criterion), a comma list or a list of registered names
            (default: the settings' own, "all" unless set).
        settings: how to score (`ScoreSettings`); `fields` set single ones on top of it, e.g.
            `score(path, ["l1"], stack="decoder", dtype="float16")`.
        histograms: also keep a 128-bin histogram per block (for plots).
        progress: called with (blocks done, blocks) as blocks are scored (default: the one `reporting` set).
    """
    progress = progress or _REPORTING.get()
    if criteria is not None:
        fields["criteria"] = criteria
    settings = ScoreSettings.of(settings, **fields).check()
    if settings.calib is not None:
        check_placement(settings.calib)  # whether or not a calibration criterion runs: a mistake is said
    crits = _criteria(settings)
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    crits, left_out = _check_calibration_model(ckpt, settings, crits)
    chosen = select_stack(ckpt, settings.stack, settings.block_pattern)
    infos = _plan(ckpt, chosen, settings.params)
    ctx = Context(bins=settings.bins, seed=settings.seed, aggregate=settings.aggregate)
    scores, results = _weight_scores(ckpt, infos, settings, crits, ctx, histograms, progress)
    meta = _calibration_scores(ckpt, chosen, [c for c in crits if c.needs_calibration], settings.calib, ctx, scores)
    warnings = checkpoint_warnings(ckpt, chosen) + left_out + meta.get("calibration", {}).get("warnings", [])
    if warnings:
        meta["warnings"] = warnings
    for info, r in zip(infos, results):
        info.distinct = r[2]
    return _result(ckpt, chosen, settings, infos, scores={c.name: scores[c.name] for c in crits},
                   removes={c.name: c.removes for c in crits},
                   histograms=[r[3] for r in results] if histograms else None, meta=meta)


def _weight_scores(ckpt: Checkpoint, infos: list[BlockInfo], settings: ScoreSettings, crits: list, ctx: Context,
                   histograms: bool, progress: Callable | None) -> tuple[dict, list]:
    """The scores of the block- and model-scope criteria, and what each block's pass gave (`_score_block`). Count
    tables a model-scope criterion joins are kept on disk for float32 blocks (`joint_counts.Spill`), in a
    temporary folder removed when they are joined."""
    block_crits = [c for c in crits if c.scope == "block"]
    keep_counts = any(c.needs_counts for c in crits)
    with tempfile.TemporaryDirectory(prefix="gardener-counts-") if keep_counts else nullcontext() as folder:
        spill = Spill(Path(folder)) if folder else None
        if block_crits or keep_counts or histograms:
            results = _run_blocks(ckpt, infos, settings, block_crits, ctx, spill, histograms, progress)
        else:  # a layout alone: no weight is read
            results = [({}, None, None, None) for _ in infos]
        scores = {c.name: [r[0][c.name] for r in results] for c in block_crits}
        summaries = [BlockSummary(b.number, b.n_params, r[1]) for b, r in zip(infos, results)]
        for c in crits:
            if c.scope == "model":
                scores[c.name] = [float(s) for s in c.fn(summaries, ctx)]
    return scores, results


def layout(path: str | Path | Checkpoint, settings: ScoreSettings | None = None) -> ScoreResult:
    """The stack's blocks (numbers, sizes, tensors) as a result with no criterion computed: what a
    ranking file made elsewhere (the oracle's) needs, from the tensors' headers alone, no weight read."""
    return score(path, (), settings, primary=None)


def _result(ckpt: Checkpoint, chosen: Stack, settings: ScoreSettings, infos: list[BlockInfo], **made) -> ScoreResult:
    """A result: the settings and the stack's blocks, with `made` (scores, removes, histograms, meta)."""
    return ScoreResult(
        source=str(ckpt.path), format=ckpt.format, stack=chosen.name, stack_kind=chosen.kind.name,
        dtype_view=settings.dtype, stored_dtypes=sorted({ckpt.info(n).dtype for b in infos for n in b.tensors}),
        params=settings.params, primary=settings.primary, bins=settings.bins, seed=settings.seed, blocks=infos,
        aggregate=settings.aggregate, files=[str(f) for f in ckpt.files], **made)


def checkpoint_warnings(ckpt: Checkpoint, chosen: Stack) -> list[str]:
    """What is odd about a checkpoint that does not stop it from being read: its own warnings (which
    weight files were read), and a config.json that counts the chosen stack's blocks otherwise."""
    from ..families import depth_disagreement

    odd = depth_disagreement(ckpt.config, chosen.kind, chosen.name, chosen.depth)
    return list(ckpt.warnings) + ([str(odd)] if odd else [])


def _criteria(settings: ScoreSettings) -> list:
    """The registered criteria to compute (the primary one first if not listed; none for a layout)."""
    names = registry.parse(settings.criteria)
    if settings.primary is not None and settings.primary not in names:
        names = [registry.get(settings.primary).name, *names]
    return [registry.get(n) for n in names]


def _check_calibration_model(ckpt: Checkpoint, settings: ScoreSettings, crits: list) -> tuple[list, list[str]]:
    """Before any work: calibration criteria need a model folder, and skip_loss a model with a task loss. Named
    itself (or primary), skip_loss on a model without one is an error; brought in by 'calibration' it is left
    out, with a warning. Returns the criteria to compute and the warnings."""
    from .calibration_data import NEEDS_TASK_LOSS, architectures_of, task_loss_problem

    if not any(c.needs_calibration for c in crits):
        return crits, []
    architectures_of(ckpt.path)  # no config.json: said now, not after the data-free criteria
    why = task_loss_problem(ckpt.path) if any(c.name == "skip_loss" for c in crits) else None
    if why is None:
        return crits, []
    spec = settings.criteria.split(",") if isinstance(settings.criteria, str) else list(settings.criteria or [])
    message = f"skip_loss on {ckpt.path}: {why}; {NEEDS_TASK_LOSS}"
    if settings.primary == "skip_loss" or "skip_loss" in [s.strip() for s in spec]:
        raise GardenerError(f"{message}; the other calibration criteria run on any model "
                            f"(--criteria block_influence,angular_distance)")
    return [c for c in crits if c.name != "skip_loss"], [f"{message}: left out of 'calibration'"]


def _calibration_scores(ckpt: Checkpoint, chosen: Stack, crits: list, calib: CalibOptions | None, ctx: Context,
                        scores: dict) -> dict:
    """Run the calibration criteria (one pass shared by all) into `scores`; their record for `meta`."""
    if not crits:
        return {}
    from .calibration import CalibrationPass

    span = (calib or CalibOptions()).span
    if span >= chosen.depth and any(c.name == "angular_distance" for c in crits):  # before the forward pass
        raise SettingError("span", f"{span}: {chosen.name} has {chosen.depth} blocks; a span is at most "
                                   f"{chosen.depth - 1} of them (one must remain)")
    if (calib or CalibOptions()).sequential and any(c.name == "skip_loss" for c in crits):
        from .calibration_data import architectures_of

        kinds = architectures_of(ckpt.path) or ["model that names no architecture"]
        if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in kinds):
            raise GardenerError(f"skip_loss on {ckpt.path}: the sequential calibration pass (--calib-sequential) "
                                f"computes it for causal language models only, not a {kinds[0]}; block_influence "
                                f"and angular_distance run on any model")
    calibration = CalibrationPass(ckpt.path, calib or CalibOptions(), stack=chosen.name, seed=ctx.seed)
    try:
        if calibration.depth != chosen.depth:
            raise GardenerError(f"{ckpt.path}: the model's stack {calibration.stack.name!r} has {calibration.depth} "
                                f"blocks, the checkpoint's {chosen.name!r} {chosen.depth}; pick one with --stack")
        if any(c.name == "skip_loss" for c in crits):
            calibration.check_task_loss()
        for c in crits:
            scores[c.name] = [float(v) for v in c.fn(calibration, ctx)]
    finally:
        calibration.close()
    record = calibration.summary()
    shared = record["seconds"].get("hidden_states", 0.0)
    record["cost"] = {c.name: {"clips": calibration.clips, "seconds": record["seconds"].get(c.name, shared)}
                      for c in crits}
    return {"calibration": record}


def _run_blocks(ckpt, infos, settings: ScoreSettings, crits, ctx, spill, histograms, progress) -> list:
    workers = settings.workers or min(2, os.cpu_count() or 1)

    def one(info: BlockInfo):
        try:
            return _score_block(ckpt, info.tensors, settings.dtype, crits, ctx, spill, histograms)
        except GardenerError as exc:
            raise GardenerError(f"{ckpt.path}: block {info.number}: {exc}") from None

    results: list = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for out in pool.map(one, infos):  # in block order; progress reported from this thread only
            results.append(out)
            if progress:
                progress(len(results), len(infos))
    return results
