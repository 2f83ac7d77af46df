"""What a prune is asked to do, as settings objects: which blocks go, and how the result is written."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cost import InputSpec
from .write import DEFAULT_SHARD_BYTES


@dataclass(frozen=True)
class Cut:
    """Which blocks a prune removes: exactly one of `ratio` (round(ratio x depth) blocks), `remove`
    (a count) or `blocks` (block numbers). A ratio or count takes the blocks the criterion ranks
    least important (`ScoreSettings.primary`, or the ranking of a scores file `ranking`), never
    the `protect`ed ones; `contiguous` takes instead the span of blocks whose input and output are
    most alike (Gromov et al.: angular_distance on calibration data). Block numbers are 1-based,
    or 0-based indices with `zero_based`. A ranking by an exact-value criterion (entropy) that is
    decided by round-off (`scoring.roundoff.entropy_meaningful`: nearly every value distinct, as
    on float32 weights) is refused unless `allow_round_off`.
    """

    ratio: float | None = None
    remove: int | None = None
    blocks: tuple[int, ...] | None = None
    protect: tuple[int, ...] = ()
    ranking: Path | None = None
    contiguous: bool = False
    zero_based: bool = False
    allow_round_off: bool = False


@dataclass(frozen=True)
class WriteOptions:
    """How a pruned checkpoint is written: replacing an existing output (never an input), the size of
    HF weight shards, and the input its GFLOPs are counted for (in the manifest)."""

    force: bool = False
    max_shard_size: int | str = DEFAULT_SHARD_BYTES
    spec: InputSpec = field(default_factory=InputSpec)
