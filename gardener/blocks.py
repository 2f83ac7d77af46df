"""Model families: which parameter names form which block of which stack.

A *stack* is one list of transformer blocks (an encoder, a decoder); its name is the key
prefix before the block index, e.g. ``videomae.encoder.layer`` or ``encoder.blocks``.
Families are registered descriptions; a new one is a single `register_family` call.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from .checkpoint import Checkpoint
from .errors import GardenerError

# Any key "<prefix>.<list>.<N>.<rest>" where <list> is a conventional name of a block list.
_LIST_NAMES = r"(?:layer|layers|blocks|block|h|decoder_layers)"
BLOCK_KEY = re.compile(rf"^(?P<stack>(?:[\w-]+\.)*?{_LIST_NAMES})\.(?P<index>\d+)\.(?P<param>.+)$")


@dataclass(frozen=True)
class Family:
    """A layout of block keys: the stacks it names, their role and the config depth field."""

    name: str
    stack: re.Pattern
    role: str  # "encoder", "decoder" or "main"
    depth_field: str | None  # config.json field holding this stack's depth, if any
    description: str
    params: re.Pattern | None = None  # when set, a block's tensor names must match it too


FAMILIES: list[Family] = []


def register_family(name: str, stack_regex: str, role: str, depth_field: str | None,
                    description: str, params: str | None = None) -> Family:
    """Register a layout; earlier registrations win when several match a stack name (and, with
    `params`, the names of its blocks' tensors: bare `layers.N.` is a ViT or a LLaMA by them)."""
    family = Family(name, re.compile(stack_regex), role, depth_field, description,
                    re.compile(params) if params else None)
    FAMILIES.append(family)
    return family


register_family("hf-decoder", r"(^|\.)decoder\.decoder_layers$", "decoder", "decoder_num_hidden_layers",
                "HF ViTMAE / VideoMAE pretraining decoder")
register_family("hf-encoder", r"(^|\.)encoder\.layers?$", "encoder", "num_hidden_layers",
                "HF VideoMAE, ViT, ViTMAE, DINOv2, BERT (`...encoder.layer.N.`)")
register_family("hf-vit", r"^(vit|videomae|dinov2|deit|beit)\.layers$", "encoder", "num_hidden_layers",
                "HF vision encoders in the transformers-5 layout (`vit.layers.N.`)")
register_family("timm-decoder", r"(^|\.)decoder\.blocks$", "decoder", None,
                "original VideoMAE / MAE pretraining decoder (`decoder.blocks.N.`)")
register_family("timm", r"(^|\.)blocks$", "encoder", None,
                "original VideoMAE / MAE / timm ViT (`blocks.N.`, `encoder.blocks.N.`)")
register_family("hf-vit-bare", r"^layers$", "encoder", "num_hidden_layers",
                "a bare HF ViT / VideoMAE encoder state dict in the transformers-5 layout (`layers.N.`)",
                params=r"^(layernorm_before|attention\.(q_proj|attention\.query))\.")
register_family("llama", r"^(model\.)?layers$", "main", "num_hidden_layers",
                "LLaMA-style decoder-only (`model.layers.N.`)")
register_family("gpt2", r"(^|\.)h$", "main", "n_layer", "GPT-2 style (`transformer.h.N.`)")
register_family("t5-decoder", r"(^|\.)decoder\.block$", "decoder", "num_decoder_layers",
                "T5-style decoder (`decoder.block.N.`)")
register_family("generic", r".*", "main", None, "any other `<list>.N.` layout")


def family_of(stack: str, params: list[str] | tuple[str, ...] = ()) -> Family:
    """The first registered family whose pattern matches the stack name (and its tensor names)."""
    family = next(f for f in FAMILIES if f.stack.search(stack)
                  and (f.params is None or any(f.params.search(p) for p in params)))
    if family.name == "generic" and "decoder" in stack.split("."):
        return Family("generic", family.stack, "decoder", None, family.description)
    return family


@dataclass
class Block:
    """One transformer block: its position in the stack and the names of its tensors."""

    index: int  # 0-based position in the stack as stored
    tensors: list[str] = field(default_factory=list)

    @property
    def number(self) -> int:
        """1-based block number, as the paper counts."""
        return self.index + 1


@dataclass
class Stack:
    """A list of blocks found in a checkpoint, in stored order."""

    name: str
    family: Family
    blocks: list[Block]

    @property
    def depth(self) -> int:
        return len(self.blocks)


def find_stacks(names: list[str], pattern: str | None = None) -> list[Stack]:
    """Group parameter names into stacks of blocks (a custom regex may override detection)."""
    regex = _custom_regex(pattern) if pattern else BLOCK_KEY
    grouped: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    params: dict[str, set[str]] = defaultdict(set)
    for name in names:
        match = regex.match(name) if pattern is None else regex.search(name)
        if match:
            stack = match.groupdict().get("stack") or "custom"
            grouped[stack][int(match.group("index"))].append(name)
            if pattern is None:
                params[stack].add(match.group("param"))
    stacks = []
    for stack, by_index in grouped.items():
        blocks = [Block(i, sorted(by_index[i])) for i in sorted(by_index)]
        custom = Family("custom", re.compile(".*"), "main", None, "--block-pattern")
        family = family_of(stack, sorted(params[stack])) if pattern is None else custom
        stacks.append(Stack(stack, family, blocks))
    return stacks


def _custom_regex(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise GardenerError(f"--block-pattern {pattern!r}: not a valid regular expression ({exc})") from None
    if "index" not in regex.groupindex and regex.groups != 1:
        raise GardenerError(f"--block-pattern {pattern!r}: needs one capture group (or a group "
                            f"named 'index') around the block number, e.g. 'layers\\.(\\d+)\\.'")
    if "index" not in regex.groupindex:
        regex = re.compile(regex.pattern.replace("(", "(?P<index>", 1))
    return regex


def top_prefixes(names: list[str], limit: int = 12) -> str:
    """A short list of the top-level key prefixes, for error messages."""
    prefixes = sorted({n.split(".")[0] for n in names})
    shown = ", ".join(prefixes[:limit])
    return shown + (f", ... ({len(prefixes)} in all)" if len(prefixes) > limit else "")


def select_stack(ckpt: Checkpoint, stack: str | None = None, pattern: str | None = None) -> Stack:
    """The stack to score: the one named by `stack`, else the encoder (or the only main stack)."""
    return choose_stack(ckpt.names(), stack, pattern, where=str(ckpt.path))


def choose_stack(names: list[str], stack: str | None = None, pattern: str | None = None,
                 where: str = "checkpoint") -> Stack:
    """Among the stacks these parameter names form, the named one or else the encoder.

    `where` names the checkpoint or model in error messages.
    """
    stacks = find_stacks(names, pattern)
    if not stacks:
        how = f"--block-pattern {pattern!r} matched no key" if pattern else "no transformer block stack found"
        raise GardenerError(f"{where}: {how}; top-level key prefixes: {top_prefixes(names)}. "
                            f"Use --block-pattern REGEX with the block number in a group")
    if stack is not None:
        return _named_stack(stacks, stack, where)
    ranked = sorted(stacks, key=lambda s: (s.family.role == "decoder", s.family.name == "generic", -s.depth))
    return ranked[0]


def _named_stack(stacks: list[Stack], name: str, where: str) -> Stack:
    exact = [s for s in stacks if s.name == name]
    if exact:
        return exact[0]
    by_role = [s for s in stacks if s.family.role == name or name in s.name.split(".")]
    if len(by_role) == 1:
        return by_role[0]
    available = ", ".join(f"{s.name} ({s.family.role}, {s.depth} blocks)" for s in stacks)
    why = "is ambiguous" if by_role else "not found"
    raise GardenerError(f"--stack {name!r} {why} in {where}; available stacks: {available}")


def is_matrix_weight(name: str, shape: tuple[int, ...]) -> bool:
    """The paper's selection: 2-D weight matrices only (no biases, norms or position tables)."""
    return len(shape) == 2 and name.rsplit(".", 1)[-1] in ("weight", "kernel")


def block_tensors(ckpt: Checkpoint, block: Block, params: str = "2d") -> list[str]:
    """The tensors of a block that a criterion sees: its 2-D weight matrices, or all of them."""
    if params == "all":
        return list(block.tensors)
    if params != "2d":
        raise GardenerError(f"--params {params!r}: expected '2d' or 'all'")
    return [n for n in block.tensors if is_matrix_weight(n, ckpt.info(n).shape)]
