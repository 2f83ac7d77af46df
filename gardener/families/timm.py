"""Original VideoMAE / MAE / timm ViT checkpoints: `blocks.N.`, `encoder.blocks.N.`, `decoder.blocks.N.`."""
from ._registry import Family, StackKind, register

TIMM = register(Family(
    "timm", "original VideoMAE / MAE / timm ViT (`blocks.N.`, `encoder.blocks.N.`; decoder `decoder.blocks.N.`)",
    stacks=(
        StackKind("timm-decoder", r"(?P<stack>(?:[\w-]+\.)*?decoder\.blocks)\.(?P<index>\d+)", "decoder",
                  example="decoder.blocks.0.attn.qkv.weight"),
        StackKind("timm", r"(?P<stack>(?:[\w-]+\.)*?blocks)\.(?P<index>\d+)", "encoder",
                  example="blocks.0.attn.qkv.weight"),
    ),
    fused=(("qkv.weight", 0),),  # q, k and v stacked by rows
))
