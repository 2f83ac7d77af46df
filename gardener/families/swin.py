"""Swin-style staged models: each stage is its own stack (`swin.encoder.layers.S.blocks.N.`).

Blocks are removed within a stage, and that stage's entry of `depths` shrinks. Swin alternates
plain and shifted windows by a block's position in its stage, so a block that moves keeps its
weights but takes the window shift of its new position (in memory too, so that a pruned model
and its reloaded copy agree).
"""
from ._registry import Family, StackKind, _renumber, register


def _renumber_swin(block, position: int, config) -> None:
    _renumber(block, position, config)
    if hasattr(block, "shift_size") and config is not None:
        block.shift_size = 0 if position % 2 == 0 else config.window_size // 2


SWIN = register(Family(
    "swin", "Swin / Swin-V2 stages (`swin.encoder.layers.S.blocks.N.`); blocks are removed within a stage",
    stacks=(StackKind("swin-stage", r"(?P<stack>(?:[\w-]+\.)*?encoder\.layers\.(?P<stage>\d+)\.blocks)\.(?P<index>\d+)",
                      "encoder", "depths", example="swin.encoder.layers.1.blocks.0.attention.q_proj.weight"),),
    model_types={"swin": "image", "swinv2": "image"},
    others=r"(^|\.)encoder\.layers\.\d+\.downsample\.",
    renumber=_renumber_swin,
    warning="Swin alternates plain and shifted windows by position: kept blocks after a removed one take the "
            "shift of their new position",
    priority=10,  # before `hf`, whose `encoder.layers.N` would read a stage as one block
    tiny=dict(model_type="swin", image_size=32, patch_size=4, embed_dim=16, depths=[2, 3], num_heads=[2, 2],
              window_size=2),
))
