"""Language models: LLaMA-style and GPT-2-style decoders, the T5 decoder."""
from ._registry import Family, StackKind, register

LLAMA = register(Family(
    "llama", "LLaMA-style decoder-only (`model.layers.N.`)",
    stacks=(StackKind("llama", r"(?P<stack>(?:model\.)?layers)\.(?P<index>\d+)", "main", "num_hidden_layers",
                      per_layer=("layer_types",), example="model.layers.0.self_attn.q_proj.weight"),),
    model_types={"llama": "tokens", "mistral": "tokens", "qwen2": "tokens"},
))

GPT2 = register(Family(
    "gpt2", "GPT-2 style (`transformer.h.N.`)",
    stacks=(StackKind("gpt2", r"(?P<stack>(?:[\w-]+\.)*?h)\.(?P<index>\d+)", "main", "n_layer",
                      example="transformer.h.0.attn.c_attn.weight"),),
    model_types={"gpt2": "tokens"},
    fused=(("c_attn.weight", 1),),  # Conv1D stores (in, out): q, k and v side by side
))

T5 = register(Family(
    "t5-decoder", "T5-style decoder (`decoder.block.N.`)",
    stacks=(StackKind("t5-decoder", r"(?P<stack>(?:[\w-]+\.)*?decoder\.block)\.(?P<index>\d+)", "decoder",
                      "num_decoder_layers", example="decoder.block.0.layer.0.SelfAttention.q.weight"),),
    model_types={"t5": "tokens"},
))
