"""The control: a seeded random order, the floor any criterion must beat."""
from __future__ import annotations

import numpy as np

from ._registry import BlockSummary, Context, register


@register("random", removes="lowest", scope="model")
def random(blocks: list[BlockSummary], ctx: Context) -> list[float]:
    """A uniform random score per block from --seed."""
    return list(np.random.default_rng(ctx.seed).random(len(blocks)))
