"""Probe: can the tiny preset's masked autoencoder learn anything from the visible patches of a
given kind of synthetic clip within a training budget? (issue 6's open acceptance item)

It pretrains `VideoMAEForPreTraining` (the tiny preset, tube masking, per-patch normalised
targets: the objective of `gardener pretrain`) on clips generated in memory, without codec or
data loader, and prints the loss over training beside the loss of the trivial answer that ignores
the visible patches (`gardener.train.pretrain.trivial_loss`). A loss that stays at the trivial
one means nothing was learnt. Kinds of clip:
  actions     the content of `gardener make-data` (an actor performing one of 8 actions, a
              drifting distractor, flat random backgrounds)
  plane-wave  one sinusoidal grating per clip (random orientation, period 24-64 px, colour and
              phase) drifting up or down: every hidden patch follows exactly from any visible one
  stripes     horizontal stripes of period 16 px (the patch size) drifting up or down: in each
              frame every patch is alike, so a hidden patch is a copy of a visible one of the
              same time slot
  still-stripes  the same stripes standing still: a hidden patch is a copy of any visible one

    python bench/pretext_probe.py [--kind plane-wave|actions|stripes|still-stripes] [--clips 240] [--steps 400] [--lr 1e-3]
        [--batch-size 8] [--layers 12] [--mask-ratio 0.9] [--init-range 0.02] [--device cpu] [--seed 0]

`--device cuda` moves the model and each batch to a GPU, for pretraining budgets a CPU cannot afford
(not yet run on one: no GPU has been lent to this project's tasks so far).
"""
from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import numpy as np
import torch
from _common import print_table
from pretrain_diagnose import pretrain
from transformers import VideoMAEConfig

from gardener.data.synthetic import ACTIONS, action_clip
from gardener.train.pretrain import PRESETS


def plane_wave_clip(direction: int, frames: int, size: int, rng: np.random.Generator,
                    stripes: bool = False) -> np.ndarray:
    """uint8 (frames, size, size, 3): one grating drifting along its normal, up (-1), down (+1) or
    not at (0); `stripes`: horizontal, of period 16 px."""
    angle, period = (0.0, 16.0) if stripes else (rng.uniform(-np.pi / 3, np.pi / 3), rng.uniform(24, 64))
    phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5)
    colour = rng.normal(0, 1, 3)
    colour *= rng.uniform(50, 90) / np.linalg.norm(colour)
    base = rng.uniform(90, 160, 3)
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    across = np.cos(angle) * rows + np.sin(angle) * cols
    video = np.stack([base + np.sin(2 * np.pi * (across - direction * speed * t) / period + phase)[..., None] * colour
                      for t in range(frames)])
    return np.clip(video + rng.normal(0, 6, video.shape), 0, 255).astype(np.uint8)


def clips(kind: str, count: int, frames: int, size: int, seed: int) -> torch.Tensor:
    """uint8 (count, frames, 3, size, size)."""
    out = []
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        direction = 0 if kind == "still-stripes" else (1 if k % 2 else -1)
        out.append(action_clip(ACTIONS[k % len(ACTIONS)], frames, size, rng) if kind == "actions"
                   else plane_wave_clip(direction, frames, size, rng, stripes=kind != "plane-wave"))
    return torch.from_numpy(np.stack(out)).permute(0, 1, 4, 2, 3).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("actions", "plane-wave", "stripes", "still-stripes"), default="plane-wave")
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=12, help="encoder blocks (the preset has 12)")
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    parser.add_argument("--init-range", type=float, default=0.02, help="initializer_range (transformers' 0.02)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    config = VideoMAEConfig(**{**PRESETS["tiny"], "num_hidden_layers": args.layers, "norm_pix_loss": True,
                               "use_mean_pooling": False, "initializer_range": args.init_range})
    x = clips(args.kind, args.clips, config.num_frames, config.image_size, args.seed)
    start = time.perf_counter()
    _, losses, trivial = pretrain(x, config, args.steps, args.lr, args.mask_ratio, args.seed,
                                  batch_size=args.batch_size, device=args.device)
    seconds = time.perf_counter() - start
    print(f"# pretext_probe {date.today()} on {platform.machine()} ({args.device}), torch {torch.__version__}: "
          f"{args.kind}, {args.clips} clips, {args.steps} steps of batch {args.batch_size} at lr {args.lr} "
          f"(cosine, 10 % warmup), {args.layers} encoder blocks, mask ratio {args.mask_ratio}, initializer_range {args.init_range}: {seconds:.0f} s")
    windows = np.array_split(np.arange(args.steps), min(8, args.steps))
    means = [(w, np.take(losses, w).mean(), np.take(trivial, w).mean()) for w in windows]
    print_table(["steps", "loss", "trivial answer", "loss / trivial"],
                [[f"{w[0]}-{w[-1]}", f"{loss:.3f}", f"{triv:.3f}", f"{loss / triv:.3f}"] for w, loss, triv in means])


if __name__ == "__main__":
    main()
