"""When exact-value entropy is meaningful: one rule, used by scoring's warning, the precision report and prune.

Exact-value entropy counts repeated numbers. When nearly every value of a block is distinct, the
count says little about the weights: H is close to ln N for every block of equal size, and the
few values that coincide after rounding decide the ranking (the paper: float32 weights). The
rule looks at the share of distinct values in the least distinct block (`entropy_meaningful`),
and every message that states it prints that share with `percent`, which never rounds it across
the threshold.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..values import VIEW_TAGS

MAX_DISTINCT_SHARE = 0.9  # more distinct values than this in every block: the ranking is round-off
PRECISION_FREE = ("hist_entropy", "stable_rank", "alpha")  # criteria that read no exact values
_MANTISSA_BITS = {"F64": 52, "F32": 23, "F16": 10, "BF16": 7}  # finer precision: more distinct values


def entropy_meaningful(distinct_fraction: float) -> bool:
    """Whether exact-value entropy ranks blocks by their weights rather than by round-off, given
    `distinct_fraction`, the share of distinct values in the least distinct block (so the ranking
    counts as round-off when every block is nearly all distinct): at most MAX_DISTINCT_SHARE.

    Why 90 %: below it, values repeat enough that their counts trace the weights' distribution on the
    precision's grid; above it, H is within about 2 ln 2 x 10 % = 0.14 nats of ln N and the ranking
    follows how many values happen to coincide. Measured: float16 weights give 0.2 % (the paper's
    VideoMAE-B, 11-14 thousand distinct of 7.1 M per block) to 55-59 % (the demo's blocks of 12,288
    values), and there every view ranks the blocks alike (Spearman rho 0.85-1.0 in the demo); float32
    weights give about 95 % (simulated Gaussian blocks of VideoMAE-B's 7.1 M values), 98.9 % (MiniLM)
    and 99.98 % (the demo's float32 original), and there the float16 and bfloat16 views rank the blocks
    otherwise (rho 0.3-0.6 in the demo). In a simulation, float16 blocks of 8,000 values (71 % distinct)
    ranked twelve weight shapes as large blocks do (rho 0.93-0.99), blocks of 2,000 values (91 %
    distinct) did not (rho 0.52-0.75).
    """
    return distinct_fraction <= MAX_DISTINCT_SHARE


def least_distinct_share(distinct: Iterable[int | None], sizes: Iterable[int]) -> float | None:
    """The share of distinct values in the least distinct block (the one the rule reads); None when no
    block's distinct values were counted (no exact-value criterion ran)."""
    shares = [d / n for d, n in zip(distinct, sizes) if d is not None and n]
    return min(shares) if shares else None


def percent(fraction: float) -> str:
    """`fraction` as a percentage ("98.9 %"), with as many decimals as it takes for the number printed to
    fall on the same side of the rule as the fraction itself (90.004 % is not shown as 90.0 %, which
    the rule would pass), and never shown as 100 % unless every value is distinct."""
    side = entropy_meaningful(fraction)
    for digits in range(1, 12):
        text = f"{100 * fraction:.{digits}f}"
        if entropy_meaningful(float(text) / 100) == side and (float(text) == 100) == (fraction == 1):
            return f"{text} %"
    return f"{100 * fraction!r} %"


LIMIT = f"{100 * MAX_DISTINCT_SHARE:g} %"  # the threshold as the messages print it


def share_clause(fraction: float) -> str:
    """What the rule found, in the words the warning, the precision report and prune share."""
    side = "within" if entropy_meaningful(fraction) else "over"
    return (f"{percent(fraction)} of the values in the least distinct block are distinct ({side} the {LIMIT} up to "
            f"which exact-value entropy is meaningful)")


def coarser_views(tags: Iterable[str]) -> list[str]:
    """The --dtype views coarser than the finest precision in `tags` (stored dtypes, e.g. ["F32"]): where
    values repeat more. Float32 weights: float16 and bfloat16; float16: bfloat16; bfloat16: none."""
    finest = max((_MANTISSA_BITS.get(tag, 0) for tag in tags), default=0)
    return [view for view in ("float16", "bfloat16") if _MANTISSA_BITS[VIEW_TAGS[view]] < finest]


def in_use(dtype_view: str, stored_dtypes: list[str]) -> list[str]:
    """The precisions a ranking read: the stored dtypes for the `stored` view, else the view's own."""
    return list(stored_dtypes) if dtype_view == "stored" else [VIEW_TAGS.get(dtype_view, dtype_view)]


def remedies(tags: Iterable[str], *, dtype: str = "--dtype", criterion: str = "a precision-free criterion") -> str:
    """What to do instead: a coarser --dtype view where there is one, or a criterion that reads no exact
    values (`dtype` and `criterion` are the words for them: a flag, or a SettingError's `{name}`)."""
    views = coarser_views(tags)
    other = f"{criterion} ({', '.join(PRECISION_FREE)})"
    return f"{dtype} {' or '.join(views)}, or {other}" if views else other
