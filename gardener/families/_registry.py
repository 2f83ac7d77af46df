"""The family registry: one registered description per model family.

A *family* describes a layout of parameter names: the key pattern of each of its stacks of
blocks (encoder, decoder, the stages of a staged model), where the config keeps each stack's
depth, which config lists hold one entry per block, which fused matrices split into q/k/v, the
input its forward pass takes (for FLOPs), and how to fix up a block moved to a new position.
Families are tried by priority (then registration order); `generic` is the last fallback.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import GardenerError

# the conventional names of a list of blocks: "<prefix>.<list>.<N>.<param>"
LIST_NAMES = r"(?:layer|layers|blocks|block|h|decoder_layers)"
ANY_STACK = rf"(?P<stack>(?:[\w-]+\.)*?{LIST_NAMES})\.(?P<index>\d+)"


@dataclass(frozen=True)
class StackKind:
    """One kind of stack in a family.

    `blocks` is a regex for "<stack>.<index>" (named groups `stack` and `index`, and `stage`
    for a stage of a staged model); `name` is what results report as the stack's family;
    `depth_field` is the config field with this stack's depth (a list indexed by `stage` for
    staged models); `params`, when set, must match some tensor name inside the blocks (the
    same `layers.N.` prefix is a ViT or a LLaMA by what its blocks hold); `per_layer` names
    the config lists with one entry per block of this stack (`stage_names`: a backbone's stage
    per block).
    """

    name: str
    blocks: str
    role: str  # "encoder", "decoder" or "main"
    depth_field: str | None = None
    params: str | None = None
    per_layer: tuple[str, ...] = ()
    example: str = ""  # one tensor name of such a stack; the registry's tests check each kind by it
    key: re.Pattern = field(init=False, repr=False, compare=False)
    module: re.Pattern = field(init=False, repr=False, compare=False)
    family: Family | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "key", re.compile(rf"^{self.blocks}\.(?P<param>.+)$"))
        object.__setattr__(self, "module", re.compile(rf"^{self.blocks}$"))

    @property
    def description(self) -> str:
        return self.family.description if self.family else ""

    def stage(self, stack: str) -> int | None:
        """The stage number inside a staged model's stack name, or None."""
        match = self.module.match(f"{stack}.0")
        return int(match.group("stage")) if match and "stage" in self.module.groupindex else None


def _renumber(block: Any, position: int, config: Any) -> None:
    """Default fix-up of a block moved to `position`: its KV-cache layer index."""
    for module in block.modules():
        for attr in ("layer_idx", "layer_id", "layer_index"):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, position)


@dataclass(frozen=True)
class Family:
    """A registered model family; see the module docstring for what each field means.

    `model_types` maps a config's `model_type` to the input its forward takes ("video",
    "image" or "tokens");
    `fused` lists (tensor-name suffix, axis) of matrices that hold q, k and v together;
    `others` is a regex of keys the family owns that are not blocks (kept out of stacks);
    `carry` matches tensors the first block holds for the whole stack (they move to the new
    first block when it goes);
    `renumber(block, position, config)` fixes up a kept block in memory; `warning` is said
    whenever this family's blocks are removed; `calib_tokens` the tokens a calibration pass reads
    a sequence's hidden state at for angular distance ("last", "mean" or "cls"); `tiny` is the config (`AutoConfig.for_model`
    arguments) of a small instance, with which the tests check every registered family.
    """

    name: str
    description: str
    stacks: tuple[StackKind, ...]
    model_types: Mapping[str, str] = field(default_factory=dict)
    fused: tuple[tuple[str, int], ...] = ()
    others: str | None = None
    carry: str | None = None
    renumber: Callable[[Any, int, Any], None] = _renumber
    warning: str | None = None
    tiny: Mapping[str, Any] | None = None
    priority: int = 0
    calib_tokens: str | None = None  # which tokens angular_distance reads (None: last for causal LMs, else mean)

    def __post_init__(self):
        for kind in self.stacks:
            object.__setattr__(kind, "family", self)


_FAMILIES: list[Family] = []


def register(family: Family, *, replace: bool = False) -> Family:
    """Add a family; higher `priority` is tried first. A name already registered is an error unless
    `replace=True` says the new description is meant to take its place."""
    if not replace and any(f.name == family.name for f in _FAMILIES):
        raise GardenerError(f"family {family.name!r} is already registered; choose another name, or "
                            f"register(..., replace=True) to replace it")
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != family.name] + [family]
    _FAMILIES.sort(key=lambda f: -f.priority)  # stable: registration order breaks ties
    return family


def unregister(name: str) -> None:
    """Remove a registered family (for tests that register a made-up one)."""
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != name]


def families() -> list[Family]:
    """The registered families, in the order they are tried."""
    return list(_FAMILIES)


def summaries() -> list[dict[str, Any]]:
    """The registered families as plain data, in the order they are tried (for `gardener families --json`):
    what each covers, its stacks, and the model types it knows with the input each takes."""
    return [{"name": f.name, "description": f.description, "priority": f.priority,
             "model_types": dict(f.model_types),
             "stacks": [{"name": k.name, "role": k.role, "depth_field": k.depth_field, "example": k.example}
                        for k in f.stacks]}
            for f in _FAMILIES]


def get(name: str) -> Family:
    """The registered family `name`, or an error listing the known ones."""
    found = [f for f in _FAMILIES if f.name == name]
    if not found:
        raise GardenerError(f"unknown family {name!r}; known: {', '.join(f.name for f in _FAMILIES)}")
    return found[0]


def kinds() -> list[StackKind]:
    """Every stack kind of every family, in the order they are tried."""
    return [kind for family in _FAMILIES for kind in family.stacks]


def split_key(name: str) -> tuple[str, int, str] | None:
    """(stack, block index, tensor name inside the block) of a parameter name, or None."""
    if any(f.others and re.search(f.others, name) for f in _FAMILIES):
        return None
    for kind in kinds():
        match = kind.key.match(name)
        if match:
            return match.group("stack"), int(match.group("index")), match.group("param")
    return None


def split_module(name: str) -> tuple[str, int] | None:
    """(stack, block index) of a module path that is one block, e.g. `encoder.layer.3`, or None."""
    for kind in kinds():
        match = kind.module.match(name)
        if match:
            return match.group("stack"), int(match.group("index"))
    return None


def kind_of(stack: str, params: Sequence[str] = ()) -> StackKind:
    """The first stack kind whose pattern gives this stack name (and whose blocks hold `params`)."""
    probes = [f"{stack}.0.{p}" for p in params] or [f"{stack}.0.weight"]
    for kind in kinds():
        matches = [m for m in map(kind.key.match, probes) if m and m.group("stack") == stack]
        if matches and (kind.params is None or any(re.search(kind.params, m.group("param")) for m in matches)):
            return kind
    raise LookupError(stack)  # unreachable while `generic` is registered


def input_kind(model_type: str) -> str:
    """What a model type's forward takes for a FLOPs count: "video", "image" or "tokens"."""
    return next((f.model_types[model_type] for f in _FAMILIES if model_type in f.model_types), "tokens")


def split_fused(name: str, matrix):
    """A fused q/k/v matrix as its three parts (so spectra agree across layouts), else [matrix]."""
    import numpy as np

    for family in _FAMILIES:
        for suffix, axis in family.fused:
            if name.endswith(suffix) and matrix.ndim == 2 and matrix.shape[axis] % 3 == 0:
                return list(np.split(matrix, 3, axis=axis))
    return [matrix]


@dataclass(frozen=True)
class DepthMismatch:
    """config.json counts a stack's blocks otherwise than its weights do."""

    field: str
    said: int
    held: int
    stack: str

    @property
    def missing(self) -> bool:
        """The config builds more blocks than the weights hold: transformers would initialise them at random."""
        return self.said > self.held

    def __str__(self) -> str:
        then = (f"transformers would build {self.said} blocks and initialise the missing ones at random"
                if self.missing else f"transformers builds {self.said} blocks and ignores the other "
                                     f"{self.held - self.said}")
        return f"config.json says {self.field} = {self.said}, but the weights hold {self.held} blocks of {self.stack} " \
               f"({then})"


def depth_disagreement(config: dict | None, kind: StackKind, stack: str, depth: int) -> DepthMismatch | None:
    """How config.json disagrees with the weights on this stack's depth; None when it agrees, or when its
    top-level depth field does not count this stack (a stack nested in a decoder, for an encoder's field)."""
    field_name, stage = kind.depth_field, kind.stage(stack)
    if not config or field_name is None or field_name not in config:
        return None
    if kind.role != "decoder" and "decoder" in stack.split(".")[:-1]:  # e.g. Mask2Former's pixel decoder
        return None
    value = config[field_name]
    if stage is not None:
        said = value[stage] if isinstance(value, list) and stage < len(value) else None
        field_name = f"{field_name}[{stage}]"
    else:
        said = value
    if isinstance(said, int) and not isinstance(said, bool) and said != depth:
        return DepthMismatch(field_name, said, depth, stack)
    return None


def shorten_config(config: dict, kind: StackKind, stack: str, kept: Sequence[int]) -> dict:
    """A copy of an HF config with this stack's depth set to len(kept) and its per-block lists cut.

    `kept` holds 1-based block numbers. A config whose depth field disagrees with the stack is
    returned unchanged (the stack is not the one that field counts).
    """
    out = dict(config)
    field_name, stage = kind.depth_field, kind.stage(stack)
    if field_name is None or field_name not in config:
        return out
    if stage is not None:
        depths = list(config[field_name])
        depths[stage] = len(kept)
        out[field_name] = depths
        return out
    depth = config[field_name]
    out[field_name] = len(kept)
    for name in kind.per_layer:
        values = config.get(name)
        if isinstance(values, list) and len(values) == depth:
            out[name] = [values[n - 1] for n in kept]
    if "stage_names" in config and "stage_names" in kind.per_layer:  # backbones: a stage per block
        out["stage_names"] = ["stem"] + [f"stage{i}" for i in range(1, len(kept) + 1)]
        out.pop("out_features", None)
        out.pop("out_indices", None)
    return out
