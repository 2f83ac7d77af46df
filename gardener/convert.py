"""Original VideoMAE checkpoints (the authors' timm-style layout) to transformers' VideoMAE.

The paper's checkpoints come in the layout of the VideoMAE repository: fused `attn.qkv`
with separate `q_bias`/`v_bias`, `blocks.N.`, `head`, and for pretraining `encoder.`/
`decoder.` prefixes. This module renames and splits those tensors, infers the config from
their shapes, and writes a directory that stock `from_pretrained` loads.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, open_checkpoint
from .errors import GardenerError
from .fixed_tables import fast_tables
from .fileio import atomic_dir, check_output, write_text
from .manifest import manifest

# Per-block names: original -> transformers VideoMAE (inside `...layer.N.`).
BLOCK_NAMES = {
    "attn.q_bias": "attention.attention.query.bias", "attn.v_bias": "attention.attention.value.bias",
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "mlp.fc1.weight": "intermediate.dense.weight", "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight", "mlp.fc2.bias": "output.dense.bias",
    "norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
}
# Outside the blocks: original -> transformers.
OTHER_NAMES = {
    "patch_embed.proj.weight": "videomae.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "videomae.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "videomae.layernorm.weight", "norm.bias": "videomae.layernorm.bias",
    "fc_norm.weight": "fc_norm.weight", "fc_norm.bias": "fc_norm.bias",
    "head.weight": "classifier.weight", "head.bias": "classifier.bias",
    "encoder_to_decoder.weight": "encoder_to_decoder.weight", "mask_token": "mask_token",
    "decoder.norm.weight": "decoder.norm.weight", "decoder.norm.bias": "decoder.norm.bias",
    "decoder.head.weight": "decoder.head.weight", "decoder.head.bias": "decoder.head.bias",
}
# Attention heads of the published widths (ViT-S/B/L/H, and the 384-wide decoders); else width/64.
HEADS = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16}
_BLOCK = re.compile(r"^(?P<where>decoder\.)?blocks\.(?P<index>\d+)\.(?P<rest>.+)$")
_FIXED_POSITIONS = ("pos_embed", "decoder_pos_embed")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _tensor(ckpt: Checkpoint, name: str):
    """A stored tensor as torch (bfloat16 kept as such)."""
    import torch

    info = ckpt.info(name)
    t = torch.from_numpy(np.array(ckpt.read(name)))
    return t.view(torch.bfloat16) if info.dtype == "BF16" else t


def _strip_encoder(names: list[str]) -> dict[str, str]:
    """Pretraining checkpoints prefix the encoder with `encoder.`; map each name to its unprefixed form."""
    return {n: (n[len("encoder."):] if n.startswith("encoder.") else n) for n in names}


def rename(original: str, depth_of: dict[str, int] | None = None) -> list[str] | None:
    """transformers name(s) for an original name; qkv gives three; None when it is not known."""
    match = _BLOCK.match(original)
    if match:
        stack = "decoder.decoder_layers" if match.group("where") else "videomae.encoder.layer"
        prefix, rest = f"{stack}.{match.group('index')}.", match.group("rest")
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            return [f"{prefix}attention.attention.{p}.{kind}" for p in ("query", "key", "value")]
        return [prefix + BLOCK_NAMES[rest]] if rest in BLOCK_NAMES else None
    return [OTHER_NAMES[original]] if original in OTHER_NAMES else None


def infer_config(ckpt: Checkpoint, overrides: dict[str, Any], num_labels: int | None) -> tuple[Any, str]:
    """A VideoMAEConfig from the tensor shapes (overrides win where shapes say nothing) and the class name."""
    from transformers import VideoMAEConfig

    names = _strip_encoder(ckpt.names())
    by_new = {new: old for old, new in names.items()}

    def shape(name: str) -> tuple[int, ...] | None:
        return ckpt.info(by_new[name]).shape if name in by_new else None

    patch = shape("patch_embed.proj.weight")
    if patch is None or len(patch) != 5:
        raise GardenerError(f"{ckpt.path}: no 5-D `patch_embed.proj.weight` (or `encoder.patch_embed...`); "
                            f"this is not an original VideoMAE checkpoint")
    hidden, channels, tubelet, size = patch[0], patch[1], patch[2], patch[3]
    depth = 1 + max(int(m.group("index")) for n in by_new if (m := _BLOCK.match(n)) and not m.group("where"))
    inferred: dict[str, Any] = {
        "hidden_size": hidden, "num_channels": channels, "tubelet_size": tubelet, "patch_size": size,
        "num_hidden_layers": depth, "intermediate_size": shape("blocks.0.mlp.fc1.weight")[0],
        "qkv_bias": "blocks.0.attn.q_bias" in by_new, "use_mean_pooling": "fc_norm.weight" in by_new,
    }
    decoder_blocks = {int(m.group("index")) for n in by_new if (m := _BLOCK.match(n)) and m.group("where")}
    if decoder_blocks:
        width = shape("encoder_to_decoder.weight")
        if width is None:
            raise GardenerError(f"{ckpt.path}: has decoder blocks but no `encoder_to_decoder.weight`")
        inferred.update(decoder_hidden_size=width[0], decoder_num_hidden_layers=max(decoder_blocks) + 1,
                        decoder_intermediate_size=shape("decoder.blocks.0.mlp.fc1.weight")[0],
                        use_mean_pooling="norm.weight" not in by_new)
    head = shape("head.weight")
    if head is not None:
        if num_labels is not None and num_labels != head[0]:
            raise GardenerError(f"--num-labels {num_labels}: the checkpoint's head has {head[0]} classes")
        inferred["num_labels"] = head[0]
    elif num_labels is not None:
        inferred["num_labels"] = num_labels
    clash = {k: (v, overrides[k]) for k, v in inferred.items()
             if k in overrides and overrides[k] != v and k != "use_mean_pooling"}
    if clash:
        key, (have, want) = next(iter(clash.items()))
        raise GardenerError(f"--config sets {key}={want!r}, but the checkpoint's tensors give {have!r}")
    values = {"num_attention_heads": HEADS.get(hidden, max(1, hidden // 64)), **inferred}
    if decoder_blocks:
        values["decoder_num_attention_heads"] = HEADS.get(values["decoder_hidden_size"],
                                                          max(1, values["decoder_hidden_size"] // 64))
    values.update({k: v for k, v in overrides.items() if k not in ("architectures", "model_type", "gardener")})
    kind = ("VideoMAEForPreTraining" if decoder_blocks else
            "VideoMAEForVideoClassification" if "num_labels" in inferred else "VideoMAEModel")
    return VideoMAEConfig(**values), kind


def _read_overrides(config: Path | None) -> dict[str, Any]:
    if config is None:
        return {}
    try:
        data = json.loads(Path(config).read_text())
    except FileNotFoundError:
        raise GardenerError(f"--config {config}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GardenerError(f"--config {config}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise GardenerError(f"--config {config}: expected a JSON object of VideoMAEConfig fields")
    return data


def build_state(ckpt: Checkpoint, model: Any) -> tuple[dict, list[str]]:
    """The model's state dict from the original tensors, and the names dropped as fixed tables."""
    import torch

    wanted = set(model.state_dict())
    state, dropped, unknown = {}, [], []
    for stored, name in _strip_encoder(ckpt.names()).items():
        if name in _FIXED_POSITIONS:
            _check_fixed_table(ckpt, stored, model)
            dropped.append(stored)
            continue
        targets = rename(name)
        if targets is None:
            unknown.append(stored)
            continue
        tensor = _tensor(ckpt, stored)
        parts = torch.chunk(tensor, 3) if len(targets) == 3 else [tensor]
        for target, part in zip(targets, parts):
            if target.endswith("key.bias"):
                if part.any():
                    raise GardenerError(f"{ckpt.path}: {stored} has a non-zero key bias, which transformers' "
                                        f"VideoMAE does not have")
                continue
            state[_in_memory(target, wanted)] = part.contiguous()
    if unknown:
        shown = ", ".join(unknown[:5]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise GardenerError(f"{ckpt.path}: tensors with no VideoMAE counterpart: {shown}")
    extra = sorted(set(state) - wanted)
    if extra:
        raise GardenerError(f"{ckpt.path}: {extra[0]} has no place in {type(model).__name__} "
                            f"(check --config, e.g. use_mean_pooling)")
    reference = model.state_dict()
    for name in sorted(wanted - set(state)):
        if name.endswith(("attention.key.bias", "k_bias")):  # VideoMAE has no key bias: zero where a class has one
            like = next(t for n, t in state.items() if n.endswith(("query.weight", "q_proj.weight")))
            state[name] = torch.zeros(reference[name].shape, dtype=like.dtype)
    missing = sorted(wanted - set(state))
    if missing:
        raise GardenerError(f"{ckpt.path}: the converted model would lack {len(missing)} tensors, "
                            f"e.g. {missing[0]} (check --config against the checkpoint)")
    return state, dropped


def _check_fixed_table(ckpt: Checkpoint, stored: str, model: Any) -> None:
    """transformers' VideoMAE uses fixed sinusoidal positions; a learned table cannot be carried over."""
    import torch

    if stored.rsplit(".", 1)[-1] != "pos_embed":
        return
    fixed = model.videomae.embeddings.position_embeddings
    table = _tensor(ckpt, stored).float()
    if table.shape != fixed.shape or not torch.allclose(table, fixed.float(), atol=2e-3):
        raise GardenerError(f"{ckpt.path}: {stored} is a learned position table {tuple(table.shape)}; "
                            f"transformers' VideoMAE only has fixed sinusoidal positions "
                            f"{tuple(fixed.shape)} (set num_frames/image_size with --config if they differ)")


def _in_memory(name: str, wanted: set[str]) -> str:
    """transformers versions differ in naming q/v biases (`query.bias` vs `q_bias`)."""
    if name in wanted:
        return name
    legacy = name.replace("query.bias", "q_bias").replace("value.bias", "v_bias")  # transformers 4
    return legacy if legacy in wanted else name


def preprocessor_config(config: Any) -> dict:
    """The VideoMAE image processor settings for the converted model (ImageNet normalisation)."""
    return {"image_processor_type": "VideoMAEImageProcessor", "do_resize": True,
            "size": {"shortest_edge": config.image_size}, "do_center_crop": True,
            "crop_size": {"height": config.image_size, "width": config.image_size}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
            "resample": 2}


def convert_videomae(path: str | Path, out: str | Path, *, config: Path | None = None,
                     num_labels: int | None = None, force: bool = False, arguments: dict | None = None) -> dict:
    """Convert an original VideoMAE checkpoint into an HF directory; returns the manifest written."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    ckpt = open_checkpoint(path)
    check_output(Path(out), [*ckpt.as_inputs(path), ("the --config file", config)], force)
    if ckpt.format == "hf-dir":
        raise GardenerError(f"{path}: already a transformers directory; convert reads original .pth/.safetensors")
    hf_config, kind = infer_config(ckpt, _read_overrides(config), num_labels)
    with fast_tables():
        model = getattr(transformers, kind)(hf_config)
    state, dropped = build_state(ckpt, model)
    model.load_state_dict(state, strict=True)
    dtypes = {t.dtype for t in state.values()}
    stored = max(dtypes, key=lambda d: sum(t.numel() for t in state.values() if t.dtype == d))
    model.to(stored)
    info = manifest("convert", ckpt.files, {k: (str(v) if isinstance(v, Path) else v)
                                           for k, v in (arguments or {}).items()})
    info.update({"source": str(Path(path).resolve()), "architecture": kind, "dtype": str(stored).split(".")[-1],
                 "dropped_fixed_tables": dropped, "tensors": len(state),
                 "params": sum(p.numel() for p in model.parameters())})
    with atomic_dir(out, force) as tmp:
        model.save_pretrained(tmp)
        write_text(tmp / "preprocessor_config.json", json.dumps(preprocessor_config(hf_config), indent=2) + "\n")
        write_text(tmp / "gardener.json", json.dumps(info, indent=2) + "\n")
    return info
