"""Stacks and blocks: which parameter names form which block of which stack.

A *stack* is one list of transformer blocks (an encoder, a decoder, a stage); its name is the
key prefix before the block index, e.g. ``videomae.encoder.layer`` or ``encoder.blocks``. Which
layouts exist is the registered families' business (`gardener.families`).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from .checkpoint import Checkpoint
from .errors import SettingError
from .families import StackKind, kind_of, split_key
from .families._registry import ANY_STACK

CUSTOM = StackKind("custom", ANY_STACK, "main")  # stacks found by --block-pattern


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
    kind: StackKind  # which registered family's layout it follows (`kind.family`)
    blocks: list[Block]

    @property
    def depth(self) -> int:
        return len(self.blocks)


def find_stacks(names: list[str], pattern: str | None = None) -> list[Stack]:
    """Group parameter names into stacks of blocks (a custom regex may override detection)."""
    regex = _custom_regex(pattern) if pattern else None
    grouped: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    params: dict[str, set[str]] = defaultdict(set)
    for name in names:
        found = split_key(name) if regex is None else _custom_split(regex, name)
        if found:
            stack, index, param = found
            grouped[stack][index].append(name)
            params[stack].add(param)
    stacks = []
    for stack, by_index in grouped.items():
        blocks = [Block(i, sorted(by_index[i])) for i in sorted(by_index)]
        kind = kind_of(stack, sorted(params[stack])) if regex is None else CUSTOM
        stacks.append(Stack(stack, kind, blocks))
    return stacks


def _custom_split(regex: re.Pattern, name: str) -> tuple[str, int, str] | None:
    match = regex.search(name)
    return (match.groupdict().get("stack") or "custom", int(match.group("index")), "") if match else None


def _custom_regex(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise SettingError("block_pattern", f"{pattern!r}: not a valid regular expression ({exc})") from None
    if "index" not in regex.groupindex and regex.groups != 1:
        raise SettingError("block_pattern", f"{pattern!r}: needs one capture group (or a group named 'index') "
                                            f"around the block number, e.g. 'layers\\.(\\d+)\\.'")
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
        how = f"{{block_pattern}} {pattern!r} matched no key" if pattern else "no transformer block stack found"
        raise SettingError("block_pattern", f"{where}: {how}; top-level key prefixes: {top_prefixes(names)}. "
                                            f"Give {{block_pattern}} REGEX with the block number in a group")
    if stack is not None:
        return _named_stack(stacks, stack, where)
    ranked = sorted(stacks, key=lambda s: (s.kind.role == "decoder", s.kind.name == "generic", -s.depth))
    return ranked[0]


def _named_stack(stacks: list[Stack], name: str, where: str) -> Stack:
    exact = [s for s in stacks if s.name == name]
    if exact:
        return exact[0]
    by_role = [s for s in stacks if s.kind.role == name or name in s.name.split(".")]
    if len(by_role) == 1:
        return by_role[0]
    available = ", ".join(f"{s.name} ({s.kind.role}, {s.depth} blocks)" for s in stacks)
    why = "is ambiguous" if by_role else "not found"
    raise SettingError("stack", f"{name!r} {why} in {where}; available stacks: {available}")


def is_matrix_weight(name: str, shape: tuple[int, ...]) -> bool:
    """The paper's selection: 2-D weight matrices only (no biases, norms or position tables)."""
    return len(shape) == 2 and name.rsplit(".", 1)[-1] in ("weight", "kernel")


def block_tensors(ckpt: Checkpoint, block: Block, params: str = "2d") -> list[str]:
    """The tensors of a block that a criterion sees: its 2-D weight matrices, or all of them."""
    if params == "all":
        return list(block.tensors)
    if params != "2d":
        raise SettingError("params", f"{params!r}: expected '2d' or 'all'")
    return [n for n in block.tensors if is_matrix_weight(n, ckpt.info(n).shape)]
