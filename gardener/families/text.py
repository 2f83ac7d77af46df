"""Language models: LLaMA-style and GPT-2-style decoders, T5."""
from ..errors import GardenerError
from ._registry import Family, StackKind, _renumber, register

T5_BIAS = r"(^|\.)relative_attention_bias\."  # the stack's relative position bias, kept by its first block


def _renumber_t5(block, position: int, config) -> None:
    """In memory the bias cannot move (the first block computes it for the others): refuse, unchanged."""
    if position == 0 and not any(n.endswith("relative_attention_bias") for n, _ in block.named_modules()):
        raise GardenerError("prune_model: a T5 stack's first block holds its relative position bias and cannot be "
                            "removed in memory; save the model and prune the checkpoint (`gardener prune`), which "
                            "moves the bias to the new first block")
    _renumber(block, position, config)

LLAMA = register(Family(
    "llama", "LLaMA-style decoder-only (`model.layers.N.`)",
    stacks=(StackKind("llama", r"(?P<stack>(?:model\.)?layers)\.(?P<index>\d+)", "main", "num_hidden_layers",
                      per_layer=("layer_types",), example="model.layers.0.self_attn.q_proj.weight"),),
    model_types={"llama": "tokens", "mistral": "tokens", "qwen2": "tokens"},
    calib_tokens="last",  # Gromov et al. / PruneMe: a causal LM's last token has seen the whole sequence
    tiny=dict(model_type="llama", hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
              intermediate_size=64, vocab_size=50),
))

GPT2 = register(Family(
    "gpt2", "GPT-2 style (`transformer.h.N.`)",
    stacks=(StackKind("gpt2", r"(?P<stack>(?:[\w-]+\.)*?h)\.(?P<index>\d+)", "main", "n_layer",
                      example="transformer.h.0.attn.c_attn.weight"),),
    model_types={"gpt2": "tokens"},
    calib_tokens="last",
    fused=(("c_attn.weight", 1),),  # Conv1D stores (in, out): q, k and v side by side
    tiny=dict(model_type="gpt2", n_embd=32, n_layer=3, n_head=2, vocab_size=50, n_positions=64),
))

T5 = register(Family(
    "t5", "T5-style encoder-decoder (`encoder.block.N.`, `decoder.block.N.`)",
    stacks=(StackKind("t5-decoder", r"(?P<stack>(?:[\w-]+\.)*?decoder\.block)\.(?P<index>\d+)", "decoder",
                      "num_decoder_layers", example="decoder.block.0.layer.0.SelfAttention.q.weight"),
            StackKind("t5-encoder", r"(?P<stack>(?:[\w-]+\.)*?encoder\.block)\.(?P<index>\d+)", "encoder",
                      "num_layers", example="encoder.block.0.layer.0.SelfAttention.q.weight")),
    model_types={"t5": "tokens"},
    carry=T5_BIAS,
    renumber=_renumber_t5,
    tiny=dict(model_type="t5", d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=3, num_heads=2,
              vocab_size=50),
))
