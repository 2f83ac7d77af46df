"""Which blocks go (pure, no torch): counts for ratios, block numbers checked, the plan, and the key renamer."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import GardenerError, SettingError


@dataclass(frozen=True)
class PrunePlan:
    """Which blocks go and which stay, as 1-based block numbers of one stack."""

    depth: int
    removed: list[int]
    kept: list[int]
    how: str  # "ratio 0.5", "count 3" or "blocks"
    criterion: str | None = None
    extra: dict = field(default_factory=dict)


def count_for_ratio(ratio: float, depth: int) -> int:
    """Blocks removed for a pruning ratio: round(ratio x depth), so 8.3 % of 12 removes 1."""
    if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 < ratio < 1:
        raise SettingError("ratio", f"{ratio}: expected a fraction strictly between 0 and 1 (e.g. 0.5)")
    count = int(math.floor(ratio * depth + 0.5))
    if count < 1 or count >= depth:
        raise SettingError("ratio", f"{ratio}: removes {count} of {depth} blocks; at least one block must go and at "
                                    f"least one must remain")
    return count


def block_list(text: str, setting: str = "blocks") -> tuple[int, ...]:
    """Block numbers from '3,7,9', as given (no range check: that needs the stack's depth)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise SettingError(setting, f"{text!r}: names no block; expected block numbers like 3,7,9")
    try:
        return tuple(int(s) for s in items)
    except ValueError:
        raise SettingError(setting, f"{text!r}: expected comma-separated block numbers like 3,7,9") from None


def parse_blocks(spec: str | Sequence[int], depth: int, zero_based: bool = False, setting: str = "blocks"
                 ) -> list[int]:
    """1-based block numbers from '3,7,9' or a sequence (0-based with zero_based), checked against depth."""
    numbers = block_list(spec, setting) if isinstance(spec, str) else _whole_numbers(spec, setting)
    shown = ",".join(map(str, numbers))
    if not numbers:
        raise SettingError(setting, f"{spec!r}: names no block; expected block numbers like 3,7,9")
    shift = 1 if zero_based else 0
    low, high = (0, depth - 1) if zero_based else (1, depth)
    bad = [n for n in numbers if not low <= n <= high]
    if bad:
        raise SettingError(setting, f": block {bad[0]} is out of range {low}..{high} for a stack of {depth} blocks")
    if len(set(numbers)) != len(numbers):
        raise SettingError(setting, f"{shown!r}: lists a block twice")
    return [n + shift for n in numbers]


def _whole_numbers(items: Sequence, setting: str) -> tuple[int, ...]:
    """Block numbers given as a sequence (ints, or what int() takes: '3'), as ints."""
    try:
        return tuple(int(item) for item in items)
    except (TypeError, ValueError):
        raise SettingError(setting, f"{list(items)!r}: expected block numbers like 3, 7, 9") from None


def plan(depth: int, *, ratio: float | None = None, remove: int | None = None, blocks: Sequence[int] | None = None,
         removal_order: Sequence[int] | None = None, protect: Sequence[int] = (), criterion: str | None = None
         ) -> PrunePlan:
    """Decide which blocks to remove by exactly one of ratio, count or explicit block numbers.

    With a ratio or count, blocks are taken from `removal_order` (1-based, least important
    first), skipping protected ones.
    """
    given = [x is not None for x in (ratio, remove, blocks)]
    if sum(given) != 1:
        raise SettingError("ratio", "choose the blocks with exactly one of {ratio}, {remove} or {blocks}")
    if blocks is not None:
        chosen = sorted(blocks)
        clash = sorted(set(chosen) & set(protect))
        if clash:
            raise SettingError("blocks", f"and {{protect}} both name block {clash[0]}")
        how = "blocks"
    else:
        count = count_for_ratio(ratio, depth) if ratio is not None else _check_count(remove, depth)
        candidates = [b for b in (removal_order or []) if b not in set(protect)]
        if len(candidates) < count:
            raise GardenerError(f"cannot remove {count} blocks: only {len(candidates)} are not protected")
        chosen = sorted(candidates[:count])
        how = f"ratio {ratio}" if ratio is not None else f"count {count}"
    if len(chosen) >= depth:
        raise GardenerError(f"removing {len(chosen)} of {depth} blocks would leave none; at least one must remain")
    kept = [b for b in range(1, depth + 1) if b not in set(chosen)]
    return PrunePlan(depth, chosen, kept, how, criterion)


def _check_count(count: int, depth: int) -> int:
    if count < 1 or count >= depth:
        raise SettingError("remove", f"{count}: expected 1..{depth - 1} for a stack of {depth} blocks")
    return count


def renamer(stack: str, kept: Sequence[int], carry: str | None = None):
    """A function mapping a key to its new name (kept blocks renumbered 0..k-1) or None (dropped).

    `kept` holds 1-based block numbers; keys of other stacks pass through unchanged. `carry`
    matches the tensors (names inside a block) that the first block holds for the whole stack
    (T5's relative position bias): when the first block goes, they move to the new first one.
    """
    new_index = {number - 1: i for i, number in enumerate(kept)}
    pattern = re.compile(rf"^({re.escape(stack)})\.(\d+)\.(.*)$")

    def rename(key: str) -> str | None:
        match = pattern.match(key)
        if not match:
            return key
        index = new_index.get(int(match.group(2)))
        if index is None and carry and match.group(2) == "0" and re.search(carry, match.group(3)):
            index = 0
        return None if index is None else f"{match.group(1)}.{index}.{match.group(3)}"

    return rename
