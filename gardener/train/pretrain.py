"""Self-supervised VideoMAE pretraining (Step 1 of the paper) with transformers' VideoMAEForPreTraining.

Tube masking (the same spatial patches hidden in every frame) at ratio 0.9, per-patch
normalised pixel targets, AdamW with warmup and cosine decay; the data pipeline, the step
loop, checkpoints and `--resume` are the finetuning ones (run.py's `train_run` runs both).
The encoder is exported as an HF `VideoMAEModel` directory that `gardener score / prune /
finetune` take directly.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

from ..data import TrainClips
from ..errors import GardenerError
from ..fileio import atomic_dir, write_text
from .evaluate import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from .finetune import DataOptions, clip_spec_for, load_splits
from .loop import Run
from .recipe import RecipeBase
from .run import TrainingJob, RunOptions, conclude, run_facts, run_manifest, train_run
from .state import split_digest

PRESETS = {
    # 12 blocks, so that the paper's pruning ratios remove whole blocks one-to-one
    "tiny": dict(image_size=64, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=128, num_hidden_layers=12,
                 num_attention_heads=4, intermediate_size=512, decoder_num_hidden_layers=2, decoder_hidden_size=96,
                 decoder_num_attention_heads=4, decoder_intermediate_size=384),
    # VideoMAE-B (ViT-B/16, 16x224x224, decoder of 4 blocks of width 384)
    "base": dict(image_size=224, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, decoder_num_hidden_layers=4, decoder_hidden_size=384,
                 decoder_num_attention_heads=6, decoder_intermediate_size=1536),
}


@dataclass
class PretrainRecipe(RecipeBase):
    """VideoMAE's pretraining settings; learning rates are per 256 clips, scaled by the total batch."""

    batch_size: int = 8
    grad_accum: int = 1
    epochs: float | None = None
    max_steps: int | None = None
    base_lr: float = 1.5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 40.0
    warmup_steps: int | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    layer_decay: float = 1.0
    mask_ratio: float = 0.9
    clip_grad: float | None = None
    bf16: bool = True
    compile: bool = False  # torch.compile of the model
    save_every: int = 500
    keep_last: int = 2


def preset_config(preset: str, overrides: dict | None = None):
    """A VideoMAEConfig for pretraining: a named preset with field overrides."""
    from transformers import VideoMAEConfig

    if preset not in PRESETS:
        raise GardenerError(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return VideoMAEConfig(**{**PRESETS[preset], "norm_pix_loss": True, "use_mean_pooling": False,
                             **(overrides or {})})


def tube_mask(batch: int, config, ratio: float, generator):
    """bool (batch, tokens): the same randomly chosen spatial patches hidden in every time slot."""
    import torch

    per_frame = (config.image_size // config.patch_size) ** 2
    slots = config.num_frames // config.tubelet_size
    hidden = int(math.floor(ratio * per_frame))
    if not 0 < hidden < per_frame:
        raise GardenerError(f"--mask-ratio {ratio}: hides {hidden} of {per_frame} patches per frame")
    order = torch.rand(batch, per_frame, generator=generator).argsort(dim=1)
    spatial = torch.zeros(batch, per_frame, dtype=torch.bool)
    spatial.scatter_(1, order[:, :hidden], True)
    return spatial.repeat(1, slots)


def trivial_loss(frames, mask, config):
    """The reconstruction loss of the best answer that ignores what is visible, on the same masked
    patches as transformers' VideoMAEForPreTraining: with per-patch normalised targets every target
    patch has mean zero, so the answer is zero; with raw pixels it is the mean colour of the clip's
    visible patches. A pretraining loss that stays at this value has learnt nothing from the
    visible patches. `frames`: float (B, T, C, H, W) in [0, 1]; `mask`: bool (B, tokens)."""
    import torch

    with torch.no_grad():
        b, t, c, h, w = frames.shape
        ts, p = config.tubelet_size, config.patch_size
        patches = (frames.reshape(b, t // ts, ts, c, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 5, 7, 3)
                   .reshape(b, -1, ts * p * p, c).float())
        if config.norm_pix_loss:
            patches = (patches - patches.mean(-2, keepdim=True)) / (patches.var(-2, keepdim=True).sqrt() + 1e-6)
            guess = torch.zeros(b, 1, 1, c, device=frames.device)
        else:
            visible = (~mask).float()[:, :, None, None]
            guess = (patches * visible).sum((1, 2), keepdim=True) / (visible.sum((1, 2), keepdim=True) * ts * p * p)
        return ((patches - guess) ** 2)[mask].mean()


def loss_summary(out: str | Path, tail: float = 0.1) -> dict:
    """Mean pretraining loss and trivial loss over the last `tail` of the logged steps, and whether
    the loss is clearly (10 %) below the trivial one."""
    from .state import Log

    records = [r for r in Log(Path(out) / "log.jsonl", False, None).records() if "trivial" in r]
    if not records:
        return {}
    last = records[-max(1, round(tail * len(records))):]
    loss = sum(r["loss"] for r in last) / len(last)
    trivial = sum(r["trivial"] for r in last) / len(last)
    return {"final_loss": loss, "trivial_loss": trivial, "steps_averaged": len(last),
            "learned": loss < 0.9 * trivial}


@dataclass
class PretrainJob(TrainingJob):
    """Masked autoencoding: a fresh VideoMAEForPreTraining, tube masks, the reconstruction loss logged
    beside the trivial answer's; exports the encoder and the whole model."""

    kind: ClassVar[str] = "pretrain"
    data: DataOptions
    recipe: PretrainRecipe
    seed: int
    preset: str
    config_overrides: dict | None
    sampling_rate: int
    min_crop_scale: float
    arguments: dict | None = None
    config_file: Path | None = None  # where the overrides came from (an input the run folder must not touch)

    def load(self) -> TrainClips:
        import torch

        self.config = preset_config(self.preset, self.config_overrides)
        tube_mask(1, self.config, self.recipe.mask_ratio, torch.Generator())  # a bad ratio fails before any work
        self.spec = clip_spec_for(self.config, None, None, sampling_rate=self.sampling_rate,
                                  scale=(self.min_crop_scale, 1.0))
        (self.train, infos), _ = load_splits(self.data, self.seed)
        return TrainClips(self.train, infos, self.spec, self.seed)

    def inputs(self) -> list[tuple[str, Path | None]]:
        return [*self.data.inputs(), ("the --config file", self.config_file)]

    def identity(self) -> dict:
        return {"data": {"train": split_digest(self.train)}, "preset": self.preset,
                "config": {k: v for k, v in self.config.to_dict().items() if k != "transformers_version"}}

    def build_model(self):
        from transformers import VideoMAEForPreTraining

        from ..fixed_tables import fast_tables

        with fast_tables():
            return VideoMAEForPreTraining(self.config)

    def loss(self, run: Run, batch: dict, step: int, micro: int) -> tuple:
        """The reconstruction loss of a tube-masked batch, with the trivial answer's loss as an extra."""
        import torch

        clips = batch["pixel_values"].to(run.device, non_blocking=True)
        pixels = to_model_input(clips, IMAGENET_MEAN, IMAGENET_STD)
        generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + step) * 101 + micro) * 64 + run.rank)
        mask = tube_mask(len(pixels), self.config, self.recipe.mask_ratio, generator).to(run.device)
        loss = run.model(pixel_values=pixels, bool_masked_pos=mask).loss.float()
        return loss, len(pixels), {"trivial": trivial_loss(clips.float() / 255, mask, self.config)}

    def exports(self, run: Run, best: dict | None) -> dict:
        """OUT/encoder (a VideoMAEModel with its preprocessor config), OUT/model (the whole
        VideoMAEForPreTraining) and gardener.json with the loss summary."""
        info = run_manifest("pretrain", [], self.arguments)
        info.update({"preset": self.preset, "config": self.config.to_dict(), "recipe": self.recipe.to_dict(),
                     "clip": asdict(self.spec), "data": {"train": self.train.source, "train_videos": len(self.train),
                                                         "skipped": self.train.skipped},
                     **run_facts(run, self.seed), "peak_lr": run.schedule.peak, "loss": loss_summary(run.out),
                     "resumes": run.resumes})
        return conclude(run, info, partial(self._save, run))

    def _save(self, run: Run) -> None:
        unwrapped = run.accelerator.unwrap_model(run.model)
        with atomic_dir(run.out / "encoder", force=True) as tmp:
            unwrapped.videomae.save_pretrained(tmp)
            write_text(tmp / "preprocessor_config.json", json.dumps(_processor(self.config), indent=2) + "\n")
        with atomic_dir(run.out / "model", force=True) as tmp:
            unwrapped.save_pretrained(tmp)


def pretrain(data: DataOptions, out: str | Path, *, preset: str = "tiny",
             config_overrides: dict | str | Path | None = None,
             recipe: PretrainRecipe | None = None, sampling_rate: int = 4, min_crop_scale: float = 0.5,
             seed: int = 0, resume: bool = False, force: bool = False,
             callbacks: list[Callable[[int, float], None]] | None = None, progress: Callable | None = None,
             arguments: dict | None = None, report_to: str = "none") -> dict:
    """Pretrain a VideoMAE on the train split of `data`; writes OUT/encoder (VideoMAEModel). `config_overrides`
    are VideoMAEConfig fields over the preset, or a JSON file of them. `report_to` ("tensorboard", "wandb")
    also logs the run's steps to that tracker."""
    from ..settings import read_json_object

    config_file = Path(config_overrides) if isinstance(config_overrides, (str, Path)) else None
    if config_file is not None:
        config_overrides = read_json_object(config_file, "--config")
    job = PretrainJob(data, recipe or PretrainRecipe(), seed, preset, config_overrides, sampling_rate, min_crop_scale,
                      arguments, config_file)
    return train_run(job, Path(out), RunOptions(resume, force, data.workers, callbacks or [], progress,
                                                report_to=report_to))


def _processor(config) -> dict:
    from ..convert import preprocessor_config

    return preprocessor_config(config)
