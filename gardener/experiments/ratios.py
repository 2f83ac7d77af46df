"""A sweep's pruning ratios as the user gives them (percentages or fractions), each turned into a block count.

Parsed once, when the experiment is prepared (before its run folder is made): the Experiment keeps them."""
from __future__ import annotations

from ..errors import GardenerError
from ..pruning import count_for_ratio


def parse_ratios(text: str, depth: int) -> list[tuple[float, int]]:
    """'8.3,25' (percent) or '0.083,0.25' -> [(ratio, blocks removed)], each validated."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GardenerError(f"--ratios {text!r}: expected comma-separated numbers like 8.3,25,41.7") from None
    if not values:
        raise GardenerError("--ratios: give at least one ratio")
    percent = any(v > 1 for v in values)
    out = []
    for v in values:
        ratio = v / 100 if percent else v
        if not 0 < ratio < 1:
            raise GardenerError(f"--ratios {text}: {v:g} is not a pruning ratio; give percentages between 0 and 100 "
                                f"(8.3,25) or fractions between 0 and 1 (0.083,0.25)")
        try:
            out.append((round(ratio * 100, 1), count_for_ratio(ratio, depth)))
        except GardenerError as exc:  # say it in the user's own words, not as a fraction
            raise GardenerError(f"--ratios {text}: {v:g}{' %' if percent else ''} "
                                f"{str(exc).split(': ', 1)[1]}") from None
    return out
