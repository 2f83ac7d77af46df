"""Regularisers the VideoMAE recipe uses that transformers' VideoMAE lacks, added without forking it.

Stochastic depth drops a block's attention and MLP branches per sample; forward hooks on the
modules whose outputs are exactly those branches scale them, in training mode only. Mixup
and CutMix mix whole clips and their (smoothed) one-hot labels.
"""
from __future__ import annotations

import numpy as np


def _drop_branch(rate: float):
    def hook(module, args, output):
        if not module.training or rate <= 0:
            return output
        import torch

        branch = output[0] if isinstance(output, tuple) else output  # transformers 4 returns (branch, ...)
        keep = 1.0 - rate
        mask = torch.empty((branch.shape[0],) + (1,) * (branch.ndim - 1), device=branch.device,
                           dtype=branch.dtype).bernoulli_(keep)
        dropped = branch * mask / keep
        return (dropped, *output[1:]) if isinstance(output, tuple) else dropped
    return hook


def add_drop_path(model, rate: float) -> list:
    """Stochastic depth with VideoMAE's linear rule (0 at the first block, `rate` at the last).

    In a VideoMAE layer, `attention`'s output is the attention branch and `output.dropout`'s
    output is the MLP branch, each added to the residual right after.
    """
    layers = model.videomae.encoder.layer
    rates = np.linspace(0, rate, len(layers)) if len(layers) > 1 else [rate]
    handles = []
    for layer, r in zip(layers, rates):
        if r > 0:
            handles.append(layer.attention.register_forward_hook(_drop_branch(float(r))))
            handles.append(layer.output.dropout.register_forward_hook(_drop_branch(float(r))))
    return handles


def add_classifier_dropout(model, p: float) -> list:
    """Dropout on the classifier's input (the original head's `fc_dropout`)."""
    if p <= 0:
        return []
    import torch

    def hook(module, args):
        return (torch.nn.functional.dropout(args[0], p, module.training),)
    return [model.classifier.register_forward_pre_hook(hook)]


def soft_targets(labels, classes: int, smoothing: float):
    import torch

    off = smoothing / classes
    target = torch.full((labels.shape[0], classes), off, device=labels.device)
    return target.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def mix_batch(pixels, labels, classes: int, recipe, generator):
    """Mixup (alpha `recipe.mixup`) or CutMix (alpha `recipe.cutmix`), chosen with p 0.5, on a float batch
    (B, T, C, H, W); returns the mixed batch and soft targets."""
    import torch

    targets = soft_targets(labels, classes, recipe.label_smoothing)
    use_cutmix = recipe.cutmix > 0 and (recipe.mixup <= 0 or torch.rand((), generator=generator) < 0.5)
    alpha = recipe.cutmix if use_cutmix else recipe.mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample() if generator is None else
                np.random.default_rng(int(torch.randint(0, 2**31, (), generator=generator))).beta(alpha, alpha))
    flipped = pixels.flip(0)
    if use_cutmix:
        height, width = pixels.shape[-2:]
        cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
        cy = int(torch.randint(0, height, (), generator=generator))
        cx = int(torch.randint(0, width, (), generator=generator))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        pixels = pixels.clone()
        pixels[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        pixels = pixels * lam + flipped * (1 - lam)
    return pixels, targets * lam + targets.flip(0) * (1 - lam)
