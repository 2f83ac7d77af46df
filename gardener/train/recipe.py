"""The base every recipe derives its run length and learning rates from, the finetuning recipe
(VideoMAE's UCF101 defaults), parameter groups and the lr schedule."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import GardenerError
from ..settings import check_number


# Each numeric recipe field's range: (low, high, low excluded, high excluded); None: no bound on that side.
RANGES = {
    "batch_size": (1, None, False, False),
    "num_sample": (1, None, False, False),
    "grad_accum": (1, None, False, False),
    "epochs": (0, None, True, False),
    "max_steps": (1, None, False, False),
    "base_lr": (0, None, False, False),
    "min_lr": (0, None, False, False),
    "warmup_epochs": (0, None, False, False),
    "warmup_steps": (0, None, False, False),
    "weight_decay": (0, None, False, False),
    "layer_decay": (0, 1, True, False),
    "label_smoothing": (0, 1, False, True),
    "drop_path": (0, 1, False, True),
    "classifier_dropout": (0, 1, False, True),
    "mixup": (0, None, False, False),
    "cutmix": (0, None, False, False),
    "clip_grad": (0, None, False, False),
    "eval_every": (0, None, False, False),
    "save_every": (1, None, False, False),
    "keep_last": (1, None, False, False),
    "mask_ratio": (0, 1, True, True),
}
FLAGS = {"base_lr": "--lr"}


class RecipeBase:
    """What every recipe derives the same way: the run's length, warmup and learning rates.

    Learning rates are per 256 clips and scaled by the total batch. The base declares no dataclass
    field (annotations on a plain class are not fields), so each recipe keeps its own field order,
    defaults and JSON form, which run folders record and `--resume` compares.
    """

    batch_size: int  # videos per process per micro-batch
    grad_accum: int
    epochs: float | None
    max_steps: int | None
    base_lr: float
    min_lr: float
    warmup_epochs: float
    warmup_steps: int | None  # overrides warmup_epochs
    weight_decay: float
    betas: tuple[float, float]
    layer_decay: float
    clip_grad: float | None
    bf16: bool
    compile: bool
    save_every: int
    keep_last: int

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> RecipeBase:
        """Refuse values no run can use (a negative or NaN lr, an empty batch, ...), naming the flag."""
        values = asdict(self)
        for name, (low, high, above, below) in RANGES.items():
            if name in values:
                check_number(FLAGS.get(name, "--" + name.replace("_", "-")), values[name], low, high, above=above,
                             below=below)
        for beta in values.get("betas", ()):
            check_number("betas", beta, 0, 1, below=True)
        return self

    def total_batch(self, world: int) -> int:
        return self.batch_size * self.grad_accum * world

    def peak_lr(self, world: int) -> float:
        return self.base_lr * self.total_batch(world) / 256

    def final_lr(self, world: int) -> float:
        return self.min_lr * self.total_batch(world) / 256

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the run, from --max-steps or --epochs."""
        if (self.max_steps is None) == (self.epochs is None):
            raise GardenerError("give exactly one of --epochs or --max-steps")
        steps = self.max_steps if self.max_steps is not None else math.ceil(self.epochs * steps_per_epoch)
        if steps < 1:
            raise GardenerError(f"--max-steps/--epochs: the run would take {steps} steps")
        return steps

    def warmup(self, steps_per_epoch: int, total: int) -> int:
        steps = self.warmup_steps if self.warmup_steps is not None else round(self.warmup_epochs * steps_per_epoch)
        return min(max(0, steps), total)

    def schedule(self, steps_per_epoch: int, world: int) -> Schedule:
        """The run's steps and learning rates for `world` processes taking `steps_per_epoch` steps an epoch."""
        total = self.total_steps(steps_per_epoch)
        return Schedule(total, self.warmup(steps_per_epoch, total), self.peak_lr(world), self.final_lr(world),
                        steps_per_epoch)


@dataclass(frozen=True)
class Schedule:
    """A run's optimizer steps and learning rates, fixed when it starts (the lr is a function of the
    step, so a resumed run needs nothing more than its step)."""

    total: int
    warmup: int
    peak: float
    final: float
    per_epoch: int  # optimizer steps per epoch

    def lr(self, step: int, scale: float = 1.0) -> float:
        """The lr of a parameter group with lr_scale `scale` at optimizer step `step`."""
        return self.peak * scale * lr_factor(step, self.warmup, self.total, self.peak, self.final)


@dataclass
class Recipe(RecipeBase):
    """Finetuning settings. Learning rates are per 256 clips and scaled by the total batch."""

    batch_size: int = 8  # videos per process per micro-batch
    num_sample: int = 1  # augmented clips per decoded video (VideoMAE's repeated augmentation)
    grad_accum: int = 1
    epochs: float | None = None
    max_steps: int | None = None
    base_lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 5.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.7
    label_smoothing: float = 0.1
    drop_path: float = 0.2
    classifier_dropout: float = 0.5
    mix: bool = False
    mixup: float = 0.8
    cutmix: float = 1.0
    clip_grad: float | None = None
    bf16: bool = True  # on GPU only
    compile: bool = False  # torch.compile of the model
    gradient_checkpointing: bool = False
    eval_every: int | None = None
    save_every: int = 500
    keep_last: int = 2


_NO_DECAY = ("position_embeddings", "cls_token", "mask_token")
def block_numbers(names: list[str]) -> tuple[dict[str, int], int]:
    """Where each block stack's blocks start in one numbering of the model's blocks from its input (a staged model
    such as Swin counts its stages one after another), and how many blocks there are; decoders are left out."""
    from ..blocks import find_stacks

    offsets, total = {}, 0
    for stack in find_stacks(names):
        if stack.kind.role != "decoder":
            offsets[stack.name], total = total, total + stack.depth
    return offsets, total


def layer_id(name: str, offsets: dict[str, int], depth: int) -> int:
    """0 for the embeddings, k for the k-th block from the input (1-based), depth + 1 for what follows the blocks
    (norm, head, a pretraining decoder)."""
    from ..families import split_key

    if ".embeddings." in f".{name}" or name.startswith("embeddings."):
        return 0
    found = split_key(name)
    return offsets[found[0]] + found[1] + 1 if found and found[0] in offsets else depth + 1


def param_groups(model, recipe: RecipeBase, peak_lr: float) -> list[dict]:
    """AdamW groups: layer-wise lr decay over the blocks from the input (every block of every stage), and no
    weight decay on norms, biases and embeddings. A LoRA-wrapped model's names are read as the model's."""
    named = [(name.removeprefix("base_model.model."), param) for name, param in model.named_parameters()]
    offsets, depth = block_numbers([name for name, _ in named])
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        decay = not (param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in _NO_DECAY))
        layer = layer_id(name, offsets, depth)
        key = (layer, decay)
        if key not in groups:
            scale = recipe.layer_decay ** (depth + 1 - layer)
            groups[key] = {"params": [], "names": [], "lr": peak_lr * scale, "lr_scale": scale,
                           "weight_decay": recipe.weight_decay if decay else 0.0}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def lr_factor(step: int, warmup: int, total: int, peak: float, final: float) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warmup, then cosine to `final`."""
    if step < warmup:
        return (step + 1) / warmup
    if peak == 0:  # a frozen run (--lr 0): the factor does not matter, the lr is 0 throughout
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return (final + (peak - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))) / peak
