"""Healing with LoRA (Hu et al. 2021) through peft: low-rank adapters on the linear layers of the model's blocks
train while every original weight stays as it was, and the adapters are merged back at the end, so that the healed
model is a plain checkpoint stock `from_pretrained` loads. peft is needed to train only:
`pip install "vit-gardener[lora]"`.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

from ..errors import GardenerError
from ..settings import check_number


@dataclass(frozen=True)
class Lora:
    """The adapters' rank, their scale alpha (the update is alpha / rank x B A) and their input dropout."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def check(self) -> "Lora":
        check_number("--lora-rank", self.rank, 1)
        check_number("--lora-alpha", self.alpha, 0, above=True)
        check_number("--lora-dropout", self.dropout, 0, 1, below=True)
        try:
            import peft  # noqa: F401
        except ImportError:
            raise GardenerError('--lora-rank: LoRA needs peft, which is not installed: '
                                'pip install "vit-gardener[lora]"') from None
        return self

    def settings(self) -> dict:
        return asdict(self)


def block_linears(model) -> list[str]:
    """The full names of the linear layers inside the model's blocks (every stage of a staged model such as Swin;
    a pretraining decoder left out): attention and MLP projections, not embeddings nor heads."""
    import torch

    from ..blocks import find_stacks

    stacks = tuple(f"{s.name}." for s in find_stacks([name for name, _ in model.named_parameters()])
                   if s.kind.role != "decoder")
    kinds = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2's projections

        kinds += (Conv1D,)
    except ImportError:  # pragma: no cover - every supported transformers has it
        pass
    return [name for name, module in model.named_modules()
            if stacks and name.startswith(stacks) and isinstance(module, kinds)]


def with_adapters(model, lora: Lora, trained: tuple[str, ...] = ()):
    """`model` with LoRA adapters on its blocks' linear layers; only they (and the modules named in `trained`,
    e.g. a fresh classifier head) train."""
    from peft import LoraConfig, get_peft_model

    names = block_linears(model)
    if not names:
        raise GardenerError("--lora-rank: the model's blocks hold no linear layer to adapt")
    fan_in_fan_out = type(model).__name__.startswith("GPT2")  # its Conv1D stores (in, out)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules="^(" + "|".join(re.escape(n) for n in names) + ")$",
                        modules_to_save=list(trained) or None, fan_in_fan_out=fan_in_fan_out)
    return get_peft_model(model, config)


def unused_adapters(model) -> list[str]:
    """The adapted layers whose adapter never moved (its B still all zero, as LoRA starts it): the model's forward
    never called them, e.g. VideoMAE's query and value under transformers 4, which read `query.weight` directly
    to add their separate biases. They change nothing; a run says which they were."""
    unused = sorted(name.removesuffix(".lora_B.default.weight").removeprefix("base_model.model.")
                    for name, param in model.named_parameters()
                    if name.endswith("lora_B.default.weight") and not bool(param.detach().abs().sum()))
    if unused:
        logging.getLogger("gardener.train").warning(
            "%d LoRA adapter(s) never moved: the model's forward does not call %s%s; they change nothing (listed "
            "under lora.unused_adapters in gardener.json)", len(unused), unused[0], " ..." if len(unused) > 1 else "")
    return unused


def merged(model):
    """The plain model with the adapters added into its weights (a model without adapters as it is)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def trainable(model) -> dict:
    """How many parameters train, of how many (what the manifest records of a LoRA run)."""
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "total": total}
