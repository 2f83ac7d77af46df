"""The peers' data-aware criteria, scored from a calibration pass (`--calib-data`), not from weights alone.

Each takes the `CalibrationPass` (gardener.scoring.calibration) and returns one score per block.
"""
from __future__ import annotations

from ._registry import Context, register


@register("block_influence", removes="lowest", scope="calibration")
def block_influence(calib, ctx: Context) -> list[float]:
    """ShortGPT's block influence: mean 1 - cos(input, output) over tokens and calibration clips."""
    return [float(calib.one_minus_cos[i, i + 1]) for i in range(calib.depth)]


@register("angular_distance", removes="lowest", scope="calibration")
def angular_distance(calib, ctx: Context) -> list[float]:
    """Gromov et al.: arccos(cos(h_l, h_l+n)) / pi over the span of n blocks from l (--span n)."""
    span = calib.options.span
    return [float(calib.angles[i, min(i + span, calib.depth)]) for i in range(calib.depth)]


@register("skip_loss", removes="lowest", scope="calibration")
def skip_loss(calib, ctx: Context) -> list[float]:
    """SLEB / shortened-llm: how much the task loss rises when the block is skipped (no finetuning)."""
    return [float(v) for v in calib.skip_losses]
