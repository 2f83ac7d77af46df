"""Hugging Face `transformers` encoders (VideoMAE, ViT, ViTMAE, DINOv2, BERT) and MAE decoders."""
from ._registry import Family, StackKind, register

VISION = {"videomae": "video", "vit": "image", "vit_mae": "image", "dinov2": "image", "deit": "image",
          "beit": "image"}
PER_BLOCK = ("layer_types", "stage_names")  # stage_names: DINOv2 / ViT backbones name a stage per block
# a bare ViT state dict (`layers.N.`) is told from a bare LLaMA one by what its blocks hold
BARE_VIT_PARAMS = r"^(layernorm_before|attention\.(q_proj|attention\.query))\."

HF = register(Family(
    "hf", "HF VideoMAE, ViT, ViTMAE, DINOv2, BERT (`...encoder.layer.N.`, transformers 5's `vit.layers.N.`) "
          "and the ViTMAE / VideoMAE pretraining decoder",
    stacks=(
        StackKind("hf-decoder", r"(?P<stack>(?:[\w-]+\.)*?decoder\.decoder_layers)\.(?P<index>\d+)", "decoder",
                  "decoder_num_hidden_layers", example="decoder.decoder_layers.0.attention.attention.query.weight"),
        StackKind("hf-encoder", r"(?P<stack>(?:[\w-]+\.)*?encoder\.layers?)\.(?P<index>\d+)", "encoder",
                  "num_hidden_layers", per_layer=PER_BLOCK,
                  example="videomae.encoder.layer.0.attention.attention.query.weight"),
        StackKind("hf-vit", r"(?P<stack>(?:vit|videomae|dinov2|deit|beit)\.layers)\.(?P<index>\d+)", "encoder",
                  "num_hidden_layers", per_layer=PER_BLOCK, example="vit.layers.0.attention.q_proj.weight"),
        StackKind("hf-vit-bare", r"(?P<stack>layers)\.(?P<index>\d+)", "encoder", "num_hidden_layers",
                  params=BARE_VIT_PARAMS, per_layer=PER_BLOCK, example="layers.0.attention.q_proj.weight"),
    ),
    model_types={**VISION, "bert": "tokens"},
    tiny=dict(model_type="vit", hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
              image_size=32, patch_size=16),
))
