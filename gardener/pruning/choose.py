"""Which blocks a prune takes: from a criterion's ranking (scored now or read from a scores file), an
explicit list, or Gromov et al.'s most alike contiguous span; with the warnings that go with the choice."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..blocks import Stack
from ..checkpoint import Checkpoint
from ..errors import SettingError
from ..manifest import file_record, source_hash
from ..scoring import ScoreResult, ScoreSettings, score
from ..scoring import roundoff
from ..scoring.calibration import contiguous_span
from .plan import PrunePlan, count_for_ratio, parse_blocks, plan
from .settings import Cut


@dataclass(frozen=True)
class Decision:
    """A prune's plan, how its blocks were chosen (criterion, scores, dtype view) and its warnings."""

    plan: PrunePlan
    chosen_by: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def decide(ckpt: Checkpoint, chosen: Stack, cut: Cut, settings: ScoreSettings) -> Decision:
    """The blocks `cut` takes from the stack `chosen`, ranked by `settings.primary` where a ranking is needed."""
    keep_safe = parse_blocks(cut.protect, chosen.depth, cut.zero_based, "protect") if cut.protect else []
    explicit = parse_blocks(cut.blocks, chosen.depth, cut.zero_based) if cut.blocks is not None else None
    _check_contiguous(cut, settings)
    order, chosen_by, ranked = None, {}, None
    if explicit is None:
        order, chosen_by, ranked = _removal_order(ckpt, chosen, settings, cut)
        _check_round_off(ranked, chosen_by["criterion"], cut)
    ratio, remove = cut.ratio, cut.remove
    if cut.contiguous:
        count = count_for_ratio(ratio, chosen.depth) if ratio is not None else remove
        chosen_by["angles"] = ranked.meta["calibration"]["angles"]  # span distances, in the manifest
        explicit, ratio, remove = contiguous_span(chosen_by["angles"], count or 0), None, None
    decision = plan(chosen.depth, ratio=ratio, remove=remove, blocks=explicit, removal_order=order,
                    protect=keep_safe, criterion=chosen_by.get("criterion"))
    if cut.contiguous:
        decision = dataclasses.replace(decision, how=f"contiguous span of {len(explicit)} (angular distance)")
    warnings = (ranked.meta.get("warnings", []) + ranked.caveats(chosen_by["criterion"], decision.removed)
                if ranked is not None else [])
    family = chosen.kind.family
    return Decision(decision, chosen_by, warnings + ([family.warning] if family and family.warning else []))


def _check_contiguous(cut: Cut, settings: ScoreSettings) -> None:
    if cut.contiguous and (cut.blocks is not None or cut.ranking is not None):
        other = "blocks" if cut.blocks is not None else "ranking"
        raise SettingError("contiguous", f"chooses its own span of blocks; leave out {{{other}}} (give {{ratio}} "
                                         f"or {{remove}})")
    if cut.contiguous and settings.primary != "angular_distance":
        raise SettingError("contiguous", f"removes the span {{primary}} angular_distance finds (with {{calib_data}}); "
                                         f"got {{primary}} {settings.primary}")


def _check_round_off(ranked: ScoreResult, name: str, cut: Cut) -> None:
    """Refuse a ranking decided by round-off (`ScoreResult.round_off`, the rule of scoring's warning and of
    the precision report) unless `cut.allow_round_off`: one error naming what to give instead."""
    share = ranked.round_off(name)
    if share is None or cut.allow_round_off:
        return
    found = f"{roundoff.share_clause(share)}, so {name} barely separates blocks and its ranking is decided by round-off"
    fix = roundoff.remedies(ranked.precisions, dtype="{dtype}", criterion="another {primary}")
    if cut.ranking is not None:
        raise SettingError("ranking", f"{cut.ranking}: ranks by {name}, and {found}; score again with {fix}, or "
                                      f"give {{allow_round_off}} to prune by it anyway")
    raise SettingError("primary", f"{{primary}} {name}: {found}; give {fix}, or {{allow_round_off}} to prune by it "
                                  f"anyway")


def _removal_order(ckpt: Checkpoint, chosen: Stack, settings: ScoreSettings, cut: Cut) -> tuple[list, dict, ScoreResult]:
    """Block numbers least-important first, from a scores file or by scoring now; their scores; the result."""
    if cut.ranking is not None:
        ranked = ScoreResult.load(cut.ranking)
        name = ranked.primary
        if ranked.depth != chosen.depth or ranked.stack != chosen.name:
            raise SettingError("ranking", f"{cut.ranking}: ranks {ranked.depth} blocks of stack {ranked.stack!r}, but "
                                          f"this checkpoint's stack {chosen.name!r} has {chosen.depth}")
        other = ranking_source_differs(ranked, ckpt)
        if other:
            ranked.meta.setdefault("warnings", []).append(f"the ranking {cut.ranking}: {other}")
    else:
        name = settings.primary
        ranked = score(ckpt, settings=dataclasses.replace(settings, criteria=(name,), stack=chosen.name))
    return ranked.removal_order(name), {"criterion": name, "scores": ranked.scores[name],
                                        "dtype_view": ranked.dtype_view}, ranked


def ranking_source_differs(ranked: ScoreResult, ckpt: Checkpoint) -> str | None:
    """Why a ranking file was not made from this checkpoint, by the hashes it records (a `score --json`
    manifest's inputs, or an oracle file's source hash); None when it was, or when it records none."""
    meta = ranked.meta or {}
    recorded = sorted(i.get("sha256") for i in meta.get("inputs", []) if isinstance(i, dict))
    if recorded:
        if recorded == sorted(file_record(f)["sha256"] for f in ckpt.files):
            return None
    elif meta.get("source_hash"):
        if meta["source_hash"] == source_hash(ckpt.files):
            return None
    else:
        return None
    return (f"was computed on another checkpoint (its recorded sha256 differs from {ckpt.path}'s); its block "
            f"numbers are used as they are")



