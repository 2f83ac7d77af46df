"""Remove blocks from an instantiated `transformers` model, keeping it consistent per layer.

The on-disk prune (`pruning.disk`, `pruning.write`) never builds a model; this is its in-memory twin
for users who already hold one: the block list shrinks, the config's depth and per-layer
lists follow, and the layer indices a model keeps for its KV cache are renumbered, so that
cached generation, `save_pretrained` and a later `from_pretrained` all agree.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..blocks import choose_stack
from ..errors import GardenerError
from ..families import shorten_config
from .plan import parse_blocks, plan


def prune_model(model: Any, remove: Sequence[int], *, stack: str | None = None,
                zero_based: bool = False) -> tuple[Any, dict]:
    """Remove the listed blocks (1-based, as `ScoreResult.removal_order` gives them) in place.

    Returns the same model object and the pruning record, which is also stored as
    `model.config.gardener` so that `save_pretrained` writes it beside the new depth.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise GardenerError(f"prune_model: expected a torch.nn.Module, got {type(model).__name__}")
    names = [name for name, _ in model.named_parameters()]
    chosen = choose_stack(names, stack, where=type(model).__name__)
    blocks = model.get_submodule(chosen.name)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise GardenerError(f"prune_model: {chosen.name} in {type(model).__name__} is a "
                            f"{type(blocks).__name__}, not an nn.ModuleList of blocks")
    depth = len(blocks)
    params_before = sum(p.numel() for p in model.parameters())
    decision = plan(depth, blocks=parse_blocks(list(remove), depth, zero_based, "remove"))
    kept_modules = [blocks[n - 1] for n in decision.kept]
    config = getattr(model, "config", None)
    for position, block in enumerate(kept_modules):
        chosen.kind.family.renumber(block, position, config)  # e.g. KV-cache layer indices
    parent_name, _, attr = chosen.name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, torch.nn.ModuleList(kept_modules))
    record = {"stack": chosen.name, "family": chosen.kind.name, "how": "prune_model",
              "removed_blocks": decision.removed, "kept_blocks": decision.kept,
              "removed_indices": [b - 1 for b in decision.removed], "depth_before": depth,
              "depth_after": len(decision.kept), "params_before": params_before,
              "params_after": sum(p.numel() for p in model.parameters())}
    if config is not None:
        _update_config(config, chosen, decision.kept)
        previous = getattr(config, "gardener", None)
        if previous:
            record["previous"] = previous
        config.gardener = record
    return model, record


def _update_config(config: Any, chosen, kept: Sequence[int]) -> None:
    """The config's depth field and per-block lists, cut to the kept blocks as the family says."""
    kind = chosen.kind
    if kind.depth_field is None or getattr(config, kind.depth_field, None) is None:
        return
    current = {kind.depth_field: getattr(config, kind.depth_field)}
    for name in kind.per_layer:
        if getattr(config, name, None) is not None:
            current[name] = list(getattr(config, name))
    depth = current[kind.depth_field]
    if (depth[kind.stage(chosen.name)] if kind.stage(chosen.name) is not None else depth) != chosen.depth:
        return  # the field counts another stack
    for name, value in shorten_config(current, kind, chosen.name, kept).items():
        setattr(config, name, value)
    if "stage_names" in current and hasattr(config, "set_output_features_output_indices"):
        config.set_output_features_output_indices(out_features=None, out_indices=None)
    elif "stage_names" in current and hasattr(config, "out_features"):  # transformers 4: a setter aligns both
        config.out_features = None
