"""What a checkpoint holds, without reading its weights' values: depth, stacks, parameters, GFLOPs."""
from __future__ import annotations

from pathlib import Path

from .blocks import find_stacks, select_stack
from .checkpoint import open_checkpoint
from .cost import InputSpec, assumed_input, safe_gflops
from .families import depth_disagreement


def checkpoint_info(path: str | Path, stack: str | None = None, block_pattern: str | None = None,
                    spec: InputSpec = InputSpec()) -> dict:
    """Depth, stacks, parameters and GFLOPs of any checkpoint; `gflops_input` is the input the count is for."""
    ckpt = open_checkpoint(path)
    chosen = select_stack(ckpt, stack, block_pattern)
    stacks = [{"name": s.name, "family": s.kind.name, "role": s.kind.role, "depth": s.depth}
              for s in find_stacks(ckpt.names(), block_pattern)]
    result = {"path": str(path), "format": ckpt.format, "stack": chosen.name, "depth": chosen.depth,
              "stacks": stacks, "params": ckpt.num_params,
              "dtypes": sorted({ckpt.info(n).dtype for n in ckpt.names()})}
    odd = depth_disagreement(ckpt.config, chosen.kind, chosen.name, chosen.depth)
    if odd and odd.missing:  # a count would be of blocks the weights do not hold
        result["gflops"], note = None, f"config.json disagrees with the weights on {chosen.name}'s depth"
    else:
        result["gflops"], note = safe_gflops(ckpt.config, spec)
    result["gflops_input"] = assumed_input(ckpt.config, spec)
    if note:
        result["gflops_note"] = note
    result["warnings"] = list(ckpt.warnings) + ([str(odd)] if odd else [])
    return result
