"""Diagnosis: why the tiny pretrained encoder finetunes worse than random init (issue 6, open).

The same model, data and objective as `gardener pretrain` / `gardener finetune`, but with every
decoded video held in memory as one uint8 tensor and only flips for augmentation, so that one
pretraining + four finetunings take minutes. Finetuning starts from four initialisations:
  pretrained        every encoder weight from pretraining
  random            the same architecture, freshly initialised
  pretrained blocks the pretrained blocks under a fresh patch embedding
  pretrained embed  the pretrained patch embedding under fresh blocks
and reports test top-1, and the mean token norm after the embedding and after the last block at
the start of finetuning (how large the residual stream is that finetuning has to reshape). It also
prints the pretraining loss beside the trivial loss (`gardener.train.pretrain.trivial_loss`: the
answer that ignores the visible patches), and the norm of the patch embedding's per-colour constant
("DC") part, which grows when the embedding turns into a brightness detector.

    python bench/pretrain_diagnose.py DATA [--pretrain-steps 400] [--pretrain-lr 5e-4]
        [--mask-ratio 0.9] [--embed-lr-scale 1.0] [--init-range 0.02] [--finetune-steps 150] [--finetune-lr 3e-3]
        [--layer-decay 0.75] [--seed 0]

DATA is a `gardener make-data` folder (videos/ and splits/).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification

from gardener.data import probe, read_frames, read_split
from gardener.fixed_tables import fast_tables
from gardener.train.evaluate import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from gardener.train.pretrain import PRESETS, trivial_loss, tube_mask
from gardener.train.recipe import Recipe, lr_factor, param_groups


def load(data: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video of a split, decoded whole: uint8 (N, T, 3, H, W), and the labels."""
    s = read_split(data / "videos", split, split_dir=data / "splits")
    clips = []
    for path in s.paths:
        info = probe(path)
        clips.append(torch.from_numpy(read_frames(path, np.arange(info.frames), info)).permute(0, 3, 1, 2))
    return torch.stack(clips), torch.tensor(s.labels)


def clips_of(x: torch.Tensor, idx: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """uint8 clips `idx` of `x`, each flipped horizontally at random when `g` is given."""
    clips = x[idx]
    if g is not None:  # a horizontal flip per clip, as the real pipeline's augmentation
        flip = torch.rand(len(idx), generator=g) < 0.5
        clips = torch.where(flip[:, None, None, None, None], clips.flip(-1), clips)
    return clips


def batch(x: torch.Tensor, idx: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return to_model_input(clips_of(x, idx, g), IMAGENET_MEAN, IMAGENET_STD)


def pretrain(x: torch.Tensor, config, steps: int, lr: float, ratio: float, seed: int,
             embed_lr_scale: float = 1.0, batch_size: int = 8,
             device: str = "cpu") -> tuple[dict, list[float], list[float]]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    with fast_tables():
        model = VideoMAEForPreTraining(config).to(device)
    recipe = Recipe(layer_decay=1.0, weight_decay=0.05)
    groups = param_groups(model, recipe, lr)
    for group in groups:
        if all(name.startswith("videomae.embeddings.") for name in group["names"]):
            group["lr_scale"] = embed_lr_scale
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    warmup, losses, trivial = max(1, steps // 10), [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = group["lr_scale"] * lr * lr_factor(step, warmup, steps, lr, lr / 100)
        idx = torch.randint(len(x), (batch_size,), generator=g)
        clips = clips_of(x, idx, g).to(device)  # uint8 to the device, normalised there
        mask = tube_mask(batch_size, config, ratio, g).to(device)
        loss = model(pixel_values=to_model_input(clips, IMAGENET_MEAN, IMAGENET_STD), bool_masked_pos=mask).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        trivial.append(float(trivial_loss(clips.float() / 255, mask, config)))
    return {k: v.cpu() for k, v in model.videomae.state_dict().items()}, losses, trivial


def dc_norm(state: dict) -> float:
    """Norm of the patch embedding's constant part: per output and colour channel, the mean weight."""
    weight = state["embeddings.patch_embeddings.projection.weight"]
    return float(weight.mean((2, 3, 4), keepdim=True).expand_as(weight).norm())


def finetune(state: dict | None, config, data: tuple, steps: int, lr: float, layer_decay: float,
             seed: int) -> dict:
    (x, y), (xt, yt) = data
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 100)
    cfg = VideoMAEConfig(**{**config.to_dict(), "use_mean_pooling": True, "num_labels": int(y.max()) + 1})
    with fast_tables():
        model = VideoMAEForVideoClassification(cfg)
    if state is not None:
        model.videomae.load_state_dict(state, strict=False)
    model.eval()
    with torch.no_grad():  # the residual stream's scale at the start of finetuning
        hidden = model.videomae(pixel_values=batch(xt, torch.arange(min(16, len(xt))), None),
                                output_hidden_states=True).hidden_states
    recipe = Recipe(layer_decay=layer_decay)
    opt = torch.optim.AdamW(param_groups(model, recipe, lr), lr=lr)
    base = [group["lr"] for group in opt.param_groups]
    model.train()
    for step in range(steps):
        for group, b in zip(opt.param_groups, base):
            group["lr"] = b * lr_factor(step, max(1, steps // 10), steps, 1.0, 0.01)
        idx = torch.randint(len(x), (8,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(pixel_values=batch(x, idx, g)).logits, y[idx],
                                                 label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(pixel_values=batch(xt, torch.arange(i, min(i + 16, len(xt))), None)).logits
                           .argmax(1) == yt[i:i + 16]).sum()) for i in range(0, len(xt), 16))
    return {"top1": correct / len(xt), "norm_embedding": hidden[0].norm(dim=-1).mean().item(),
            "norm_last_block": hidden[-1].norm(dim=-1).mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--pretrain-lr", type=float, default=5e-4)
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    parser.add_argument("--embed-lr-scale", type=float, default=1.0,
                        help="learning-rate multiplier of the patch embedding during pretraining")
    parser.add_argument("--init-range", type=float, default=0.02,
                        help="initializer_range of the model to pretrain (transformers' default 0.02)")
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--finetune-lr", type=float, default=3e-3)
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = (load(args.data, "train"), load(args.data, "test"))
    frames, size = data[0][0].shape[1], data[0][0].shape[-1]
    config = VideoMAEConfig(**{**PRESETS["tiny"], "num_frames": frames, "image_size": size, "norm_pix_loss": True,
                               "use_mean_pooling": False})
    # finetuning (its fresh head, and the random encoder) keeps transformers' initialisation
    pre_config = VideoMAEConfig(**{**config.to_dict(), "initializer_range": args.init_range})
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    with fast_tables():
        initial = VideoMAEForPreTraining(pre_config).videomae.state_dict()
    state, losses, trivial = pretrain(data[0][0], pre_config, args.pretrain_steps, args.pretrain_lr, args.mask_ratio,
                                      args.seed, args.embed_lr_scale)
    tail = max(1, len(losses) // 10)
    print(f"pretraining: {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s, loss "
          f"{np.mean(losses[:tail]):.3f} (first 10 %) -> {np.mean(losses[-tail:]):.3f} (last 10 %); "
          f"trivial answer {np.mean(trivial[-tail:]):.3f} (last 10 %)")
    print(f"patch embedding constant (DC) part: norm {dc_norm(initial):.2f} at init -> {dc_norm(state):.2f}")
    inits = {"pretrained": state, "random": None,
             "pretrained blocks": {k: v for k, v in state.items() if not k.startswith("embeddings")},
             "pretrained embed": {k: v for k, v in state.items() if k.startswith("embeddings")}}
    print("| init | top-1 (%) | token norm after embedding | after last block |")
    print("|---|---|---|---|")
    for name, init in inits.items():
        r = finetune(init, config, data, args.finetune_steps, args.finetune_lr, args.layer_decay, args.seed)
        print(f"| {name} | {100 * r['top1']:.1f} | {r['norm_embedding']:.1f} | {r['norm_last_block']:.1f} |",
              flush=True)
    if math.isnan(losses[-1]):
        print("warning: the pretraining loss became NaN")


if __name__ == "__main__":
    main()
