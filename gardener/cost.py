"""Parameters and FLOPs of a checkpoint's model, counted without real weights or data.

GFLOPs follow the paper and fvcore: one multiply-add is one FLOP, so the total of
`torch.utils.flop_counter.FlopCounterMode` (which counts 2 per multiply-add) is halved.
The model is built on the meta device (or, where its code cannot run there, on fake tensors), so
nothing is allocated or computed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import GardenerError, SettingError
from .families import input_kind, split_module
from .fixed_tables import fast_tables


@dataclass(frozen=True)
class InputSpec:
    """The forward pass to count: video frames x size x size, an image size, or a sequence length."""

    frames: int = 16
    size: int = 224
    seq_len: int = 128

    def __post_init__(self):
        for name in ("frames", "size", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingError(name, f"{value}: expected a whole number of 1 or more")


def assumed_input(config: dict | None, spec: InputSpec) -> dict:
    """The one input a GFLOPs count of this config is for (a batch of one): a video clip's frames and size, an
    image's size or a sequence's length; a count means nothing without it."""
    kind = input_kind((config or {}).get("model_type", ""))
    sizes = {"video": {"frames": spec.frames, "size": spec.size}, "image": {"size": spec.size}}
    return {"input": kind, **sizes.get(kind, {"seq_len": spec.seq_len})}


def _inputs(config, spec: InputSpec, torch, device: str | None) -> dict:
    kind = input_kind(getattr(config, "model_type", ""))
    if kind == "video":
        return {"pixel_values": torch.empty(1, spec.frames, config.num_channels, spec.size, spec.size, device=device)}
    if kind == "image":
        return {"pixel_values": torch.empty(1, config.num_channels, spec.size, spec.size, device=device)}
    # an explicit mask: without one, transformers 4 looks at the token values to warn about padding
    return {"input_ids": torch.zeros(1, spec.seq_len, dtype=torch.long, device=device),
            "attention_mask": torch.ones(1, spec.seq_len, dtype=torch.long, device=device)}


def _count(config, spec: InputSpec, torch, place: str):
    """FlopCounterMode over one forward pass on the meta device; where a model's code cannot run there
    (e.g. transformers 4's LLaMA rotary embedding), on fake CPU tensors: nothing is allocated either way;
    where a forward reads tensor values (transformers 4's Swin), on real zero inputs as a last resort."""
    from contextlib import nullcontext

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    counter = FlopCounterMode(display=False)
    where = {"meta": torch.device("meta"), "fake": FakeTensorMode(allow_non_fake_inputs=True),
             "real": nullcontext()}[place]
    with where, fast_tables():
        model = AutoModel.from_config(config, attn_implementation="eager").eval()
        if place != "fake":  # counts do not depend on the dtype; fake parameters cannot be swapped for others
            model.to(torch.float32)
        inputs = _inputs(config, spec, torch, "meta" if place == "meta" else None)
        with counter, torch.no_grad():
            model(**({k: v.zero_() if v.is_floating_point() else v for k, v in inputs.items()}
                     if place == "real" else inputs))
    return counter


def flop_breakdown(config_dict: dict, spec: InputSpec = InputSpec()) -> tuple[float, dict[str, list[float]]]:
    """GFLOPs of one forward pass of the base model, and per block of each block list in it.

    The per-block figures let a pruned model's count be derived from one pass: blocks are
    independent of depth, so removing block i removes exactly its own FLOPs.
    """
    config_dict = {k: v for k, v in config_dict.items() if k != "gardener"}
    return decoder_arithmetic(config_dict, spec) or counted_breakdown(config_dict, spec)


def counted_breakdown(config_dict: dict, spec: InputSpec) -> tuple[float, dict[str, list[float]]]:
    """`flop_breakdown` counted by FlopCounterMode over the model built on the meta device (any model)."""
    import torch
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(**config_dict)
    except (ValueError, KeyError) as exc:
        first = str(exc).strip("'\"").split(". ")[0].rstrip(".")  # transformers goes on to list every model type
        raise GardenerError(f"cannot build a model from this config.json ({first})") from None
    if hasattr(config, "mask_ratio"):
        config.mask_ratio = 0.0  # count the encoder on every patch, as at finetuning time
    kind = input_kind(config.model_type)
    if getattr(config, "image_size", None) and kind in ("video", "image"):
        config.image_size = spec.size
    if kind == "video":
        config.num_frames = spec.frames
    counter = _first_count(config, spec, torch)
    per_module = {name: sum(ops.values()) / 2 / 1e9 for name, ops in counter.get_flop_counts().items()}
    stacks: dict[str, dict[int, float]] = {}
    for name, value in per_module.items():
        block = split_module(name)
        if block:
            stacks.setdefault(block[0], {})[block[1]] = value
    lists = {name: [blocks.get(i, 0.0) for i in range(max(blocks) + 1)] for name, blocks in stacks.items()}
    return counter.get_total_flops() / 2 / 1e9, lists


# model_type: base model. Not Mistral: transformers 4.45 applies its rotary embedding in every block, a product the
# count of that version holds and this arithmetic does not (Qwen2 and LLaMA apply it once, before the blocks).
DECODERS = {"llama": "LlamaModel", "qwen2": "Qwen2Model"}


def decoder_arithmetic(config: dict, spec: InputSpec) -> tuple[float, dict[str, list[float]]] | None:
    """`flop_breakdown` of a LLaMA-style decoder from its config's numbers alone, as FlopCounterMode counts its
    eager forward (tested against it): the projections, the two attention products of every query head, the
    gated MLP. Building the model to count it costs seconds (importing transformers, a meta forward): more than
    the rest of a prune of a 1B checkpoint. None for any other model (counted, then)."""
    try:
        if config.get("model_type") not in DECODERS:
            return None
        h, heads, inter, depth = (int(config[k]) for k in ("hidden_size", "num_attention_heads",
                                                            "intermediate_size", "num_hidden_layers"))
        kv = int(config.get("num_key_value_heads") or heads)
        d = int(config.get("head_dim") or h // heads)
    except (KeyError, TypeError, ValueError):
        return None
    n = spec.seq_len
    block = n * h * d * (2 * heads + 2 * kv) + 2 * heads * n * n * d + 3 * n * h * inter  # multiply-adds
    per_block = [block / 1e9] * depth
    return block * depth / 1e9, {f"{DECODERS[config['model_type']]}.layers": per_block}


def _first_count(config, spec: InputSpec, torch):
    """The count of the first place a model's forward runs in: meta, fake, then real tensors."""
    from torch._subclasses.fake_tensor import DataDependentOutputException

    for place in ("meta", "fake"):
        try:
            return _count(config, spec, torch, place)
        except (RuntimeError, NotImplementedError, DataDependentOutputException):
            continue
    return _count(config, spec, torch, "real")


def gflops(config_dict: dict, spec: InputSpec = InputSpec()) -> float:
    """Multiply-add GFLOPs of one forward pass of the base model described by an HF config."""
    return flop_breakdown(config_dict, spec)[0]


def safe_gflops(config: dict | None, spec: InputSpec) -> tuple[float | None, str | None]:
    """GFLOPs of a config, or None and the reason when there is none or it cannot be built."""
    total, _, note = safe_breakdown(config, spec)
    return total, note


def safe_breakdown(config: dict | None, spec: InputSpec) -> tuple[float | None, dict, str | None]:
    """GFLOPs of a config and of each block list, or the reason there are none (never raises)."""
    if not config:
        return None, {}, "no config.json"
    try:
        return (*flop_breakdown(config, spec), None)
    except GardenerError as exc:
        return None, {}, str(exc)
    except Exception as exc:  # noqa: BLE001 - a model transformers cannot build must not stop the command
        return None, {}, f"{exc.__class__.__name__}: {exc}"[:300]


def gflops_pair(before: dict | None, after: dict, spec: InputSpec, removed: list[int], depth_field: str | None,
                 stack: str | None = None) -> dict:
    """GFLOPs before and after a prune (1-based `removed` blocks), with the input they were counted for.

    When the pruned stack is found among the counted base model's block lists (by name, or as
    its only list of the encoder's depth), the pruned count is the full count minus the removed
    blocks' own FLOPs; otherwise it is counted anew.
    """
    value, blocks, note = safe_breakdown(before, spec)
    pair = {"gflops_before": value, "gflops_after": None, "gflops_input": asdict(spec)}
    if value is None:
        return {**pair, "gflops_note": note}
    depth = (before or {}).get(depth_field) if depth_field == "num_hidden_layers" else None
    matching = [per_block for per_block in blocks.values() if len(per_block) == depth]
    named = [blocks[n] for n in (stack, (stack or "").partition(".")[2]) if n in blocks]  # base model: no head prefix
    matching = named[:1] or matching
    if len(matching) == 1 and max(removed, default=0) <= len(matching[0]):  # (a config that counts fewer
        pair["gflops_after"] = value - sum(matching[0][b - 1] for b in removed)  # blocks is counted anew)
    else:
        pair["gflops_after"] = safe_gflops(after, spec)[0]
    return pair
