"""Parameters and FLOPs of a checkpoint's model, counted without real weights or data.

GFLOPs follow the paper and fvcore: one multiply-add is one FLOP, so the total of
`torch.utils.flop_counter.FlopCounterMode` (which counts 2 per multiply-add) is halved.
The model is built on the meta device, so nothing is allocated or computed.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import GardenerError

VIDEO_TYPES = {"videomae"}
IMAGE_TYPES = {"vit", "vit_mae", "dinov2", "deit", "beit"}


@dataclass(frozen=True)
class InputSpec:
    """The forward pass to count: video frames x size x size, an image size, or a sequence length."""

    frames: int = 16
    size: int = 224
    seq_len: int = 128


def _inputs(config, spec: InputSpec, torch) -> dict:
    model_type = getattr(config, "model_type", "")
    if model_type in VIDEO_TYPES:
        return {"pixel_values": torch.empty(1, spec.frames, config.num_channels, spec.size, spec.size, device="meta")}
    if model_type in IMAGE_TYPES:
        return {"pixel_values": torch.empty(1, config.num_channels, spec.size, spec.size, device="meta")}
    return {"input_ids": torch.zeros(1, spec.seq_len, dtype=torch.long, device="meta")}


def gflops(config_dict: dict, spec: InputSpec = InputSpec()) -> float:
    """Multiply-add GFLOPs of one forward pass of the base model described by an HF config."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModel

    config_dict = {k: v for k, v in config_dict.items() if k != "gardener"}
    try:
        config = AutoConfig.for_model(**config_dict)
    except (ValueError, KeyError) as exc:
        raise GardenerError(f"cannot build a model from this config.json ({exc})") from None
    if hasattr(config, "mask_ratio"):
        config.mask_ratio = 0.0  # count the encoder on every patch, as at finetuning time
    if getattr(config, "image_size", None) and config.model_type in VIDEO_TYPES | IMAGE_TYPES:
        config.image_size = spec.size
    if config.model_type in VIDEO_TYPES:
        config.num_frames = spec.frames
    with torch.device("meta"):
        model = AutoModel.from_config(config, attn_implementation="eager").eval().to(torch.float32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**_inputs(config, spec, torch))
    return counter.get_total_flops() / 2 / 1e9
