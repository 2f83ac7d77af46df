"""Which target task makes the demo's oracle measurable? An in-memory probe of the demo's design.

Trains the demo's 12-block VideoMAE (width 32, 8 frames of 32 px) on the source actions from
clips held in memory with the demo's stochastic depth (no files, no pretraining: a quick
stand-in for the demo's source stage),
rounds it to float16, then for one target task: removes each block in turn and finetunes K
seeds (the oracle), and compares the oracle's order with random orders at 9 and 11 removed
blocks, every accuracy with its 95 % Wilson interval on the target's test clips (the random
orders' mean with an interval that also covers how much the orders differ).

    python bench/demo_target_probe.py --target scene        # the demo's target: the actions in a new scene
    python bench/demo_target_probe.py --target speed        # up/down/grow/shrink x slow/fast
    python bench/demo_target_probe.py --target new-actions  # 6 source actions + pulse and blink

Target tasks (8 classes each, chance 12.5 %):
  same         the source actions, new clips of the source scene
  scene        the source actions in the target scene of `make-data --domain target` (the demo's)
  speed        {move_up, move_down, grow, shrink} x {slow, fast}: directions and speeds
  new-actions  move_up, move_down, grow, shrink, bounce, pass, pulse (grow then shrink), blink (fade out, in)
  dark-scene   the source actions as dark actors on a bright gradient (a large shift of the scene)
"""
from __future__ import annotations

import argparse
import copy
import math
import platform
import re
import time
from datetime import date

import numpy as np

SOURCE = ("move_up", "move_down", "grow", "shrink", "fade_in", "fade_out", "bounce", "pass")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _scene_clip(name: str, frames: int, size: int, rng, dark: bool) -> np.ndarray:
    """A source action, or pulse / blink, with the target scene's gradient and two distractors;
    `dark`: dark actors on a bright gradient instead of bright actors on a dark one."""
    from gardener.data.synthetic import SHAPES, _trajectory, render

    t = np.clip(np.linspace(0, 1, frames) * rng.uniform(0.85, 1.0) + rng.uniform(0, 0.1), 0, 1)
    if name in ("pulse", "blink"):
        row, radius, alpha = (np.full_like(t, rng.uniform(0.3, 0.7) * size), np.full_like(t, 0.16 * size),
                              np.ones_like(t))
        tri = 1 - np.abs(2 * t - 1)
        if name == "pulse":
            low, high = rng.uniform(0.06, 0.1) * size, rng.uniform(0.28, 0.36) * size
            radius = low + (high - low) * tri
        else:
            alpha = 1 - tri
    else:
        row, radius, alpha = _trajectory(name, t, size, rng)
    col = rng.uniform(0.25, 0.75) * size + np.cumsum(rng.normal(0, 0.3, frames))
    colour = rng.uniform(0, 110, 3) if dark else rng.uniform(120, 255, 3)
    shape = SHAPES[rng.integers(len(SHAPES))]
    span = (150, 255) if dark else (0, 90)
    top, bottom = rng.uniform(*span, 3), rng.uniform(*span, 3)
    mix = (np.arange(size, dtype=float)[:, None, None] / (size - 1)) * np.ones((1, size, 1))
    distractors = [(SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, size, 2), rng.normal(0, 1.2, 2),
                    rng.uniform(0.05, 0.1) * size, rng.uniform(60, 200, 3)) for _ in range(2)]
    return render(size, (shape, row, col, radius, alpha, colour), top * (1 - mix) + bottom * mix, distractors)


def _speed_clip(name: str, frames: int, size: int, rng) -> np.ndarray:
    """A source-scene actor moving or resizing slowly or fast (`up_fast`, `grow_slow`, ...)."""
    from gardener.data.synthetic import SHAPES, render

    motion, speed = name.rsplit("_", 1)
    fast, t = speed == "fast", np.linspace(0, 1, frames)
    base, colour = rng.uniform(0, 80, 3), rng.uniform(120, 255, 3)
    shape = SHAPES[rng.integers(len(SHAPES))]
    radius = np.full(frames, rng.uniform(0.12, 0.2) * size)
    col = rng.uniform(0.25, 0.75) * size + np.cumsum(rng.normal(0, 0.3, frames))
    if motion in ("up", "down"):
        travel = (rng.uniform(0.5, 0.65) if fast else rng.uniform(0.1, 0.18)) * size
        start = rng.uniform(0.15 * size + travel, 0.85 * size) if motion == "up" else rng.uniform(0.15 * size,
                                                                                                   0.85 * size - travel)
        row = start + (-1 if motion == "up" else 1) * travel * t
    else:
        row = np.full(frames, rng.uniform(0.3, 0.7) * size)
        span, low = (rng.uniform(0.25, 0.35) if fast else rng.uniform(0.06, 0.1)), rng.uniform(0.08, 0.12)
        radius = (low + span * (t if motion == "grow" else 1 - t)) * size
    distractor = (SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, size, 2), rng.normal(0, 1.2, 2),
                  rng.uniform(0.06, 0.12) * size, rng.uniform(60, 200, 3))
    return render(size, (shape, row, col, radius, np.ones(frames), colour),
                  np.broadcast_to(base, (size, size, 3)), [distractor])


def target_task(kind: str):
    """(class names, clip maker(name, frames, size, rng)) of a target task."""
    from gardener.data.synthetic import action_clip

    if kind == "same":
        return list(SOURCE), action_clip
    if kind == "scene":
        return list(SOURCE), lambda n, f, s, r: action_clip(n, f, s, r, domain="target")
    if kind == "dark-scene":
        return list(SOURCE), lambda n, f, s, r: _scene_clip(n, f, s, r, dark=True)
    if kind == "new-actions":
        names = ["move_up", "move_down", "grow", "shrink", "bounce", "pass", "pulse", "blink"]
        return names, lambda n, f, s, r: _scene_clip(n, f, s, r, dark=False)
    if kind == "speed":
        return [f"{m}_{v}" for m in ("up", "down", "grow", "shrink") for v in ("slow", "fast")], _speed_clip
    raise SystemExit(f"--target {kind!r}: expected same, scene, dark-scene, new-actions or speed")


def clips(names, per_class: int, frames: int, size: int, seed: int, make):
    import torch

    videos, labels = [], []
    for c, name in enumerate(names):
        for k in range(per_class):
            videos.append(make(name, frames, size, np.random.default_rng([seed, c, k])))
            labels.append(c)
    return torch.from_numpy(np.stack(videos)).permute(0, 1, 4, 2, 3).contiguous(), torch.tensor(labels)


def _normalise(x):
    import torch

    return (x.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def train(model, x, y, steps: int, batch: int, lr: float, layer_decay: float, seed: int) -> None:
    """AdamW with layer-wise lr decay, warmup and cosine, label smoothing 0.1, random flips."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    depth = model.config.num_hidden_layers
    groups: dict = {}
    for name, p in model.named_parameters():
        match = re.search(r"layer\.(\d+)\.", name)
        layer = 0 if name.startswith("videomae.embeddings") else int(match.group(1)) + 1 if match else depth + 1
        decay = not (p.ndim <= 1 or name.endswith(".bias"))
        groups.setdefault((layer, decay), {"params": [], "scale": layer_decay ** (depth + 1 - layer),
                                           "weight_decay": 0.05 if decay else 0.0})["params"].append(p)
    optimizer = torch.optim.AdamW(list(groups.values()), lr=lr)
    warmup = max(1, steps // 10)
    model.train()
    for step in range(steps):
        f = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * group["scale"] * f
        pick = torch.randint(0, len(x), (batch,), generator=gen)
        flip = torch.rand(batch, generator=gen) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1, 1), x[pick].flip(-1), x[pick])
        loss = torch.nn.functional.cross_entropy(model(pixel_values=_normalise(xb)).logits, y[pick],
                                                 label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.inference_mode():
        right = sum(int((model(pixel_values=_normalise(x[i:i + 200])).logits.argmax(-1) == y[i:i + 200]).sum())
                    for i in range(0, len(x), 200))
    return right / len(x)


def pruned_with_new_head(model, removed, classes: int, seed: int):
    import torch

    m = copy.deepcopy(model)
    keep = [i for i in range(m.config.num_hidden_layers) if i + 1 not in removed]
    m.videomae.encoder.layer = torch.nn.ModuleList([m.videomae.encoder.layer[i] for i in keep])
    m.config.num_hidden_layers = len(keep)
    torch.manual_seed(seed)
    m.classifier = torch.nn.Linear(m.config.hidden_size, classes)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="scene")
    parser.add_argument("--source-per-class", type=int, default=60)
    parser.add_argument("--source-steps", type=int, default=600)
    parser.add_argument("--source-drop-path", type=float, default=0.1)
    parser.add_argument("--target-train", type=int, default=10)
    parser.add_argument("--target-test", type=int, default=400)
    parser.add_argument("--target-steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=4, help="finetuning seeds per oracle job")
    parser.add_argument("--random-orders", type=int, default=10)
    args = parser.parse_args()

    import torch
    import transformers as T

    from gardener.data.synthetic import action_clip
    from gardener.demo import MODEL
    from gardener.stats import runs_interval, separable, wilson
    from gardener.train.regularize import add_drop_path

    torch.set_num_threads(2)
    start = time.perf_counter()
    xs, ys = clips(SOURCE, args.source_per_class, MODEL["num_frames"], MODEL["image_size"], 0, action_clip)
    test = torch.arange(len(xs)) % 4 == 0
    config = T.VideoMAEConfig(**{k: v for k, v in MODEL.items() if not k.startswith("decoder")}, num_hidden_layers=12,
                              num_labels=len(SOURCE), use_mean_pooling=True)
    torch.manual_seed(0)
    model = T.VideoMAEForVideoClassification(config)
    hooks = add_drop_path(model, args.source_drop_path)  # the demo's source recipe: stochastic depth 0.1
    train(model, xs[~test], ys[~test], args.source_steps, 32, 2e-3, 1.0, 0)
    for hook in hooks:
        hook.remove()
    source = accuracy(model, xs[test], ys[test])
    model = model.half().float()  # the float16 export
    names, make = target_task(args.target)
    per = args.target_train + args.target_test
    xt, yt = clips(names, per, MODEL["num_frames"], MODEL["image_size"], 1, make)
    is_test = torch.arange(len(xt)) % per >= args.target_train
    n = int(is_test.sum())

    def job(removed, seed):
        m = pruned_with_new_head(model, removed, len(names), seed)
        train(m, xt[~is_test], yt[~is_test], args.target_steps, 16, 3e-3, 0.7, seed)
        return accuracy(m, xt[is_test], yt[is_test])

    oracle = {b: float(np.mean([job([b] if b else [], s) for s in range(args.seeds)])) for b in range(13)}
    base = wilson(oracle[0], n)
    lower = [b for b in range(1, 13) if separable(wilson(oracle[b], n), base) and oracle[b] < oracle[0]]
    removal = [int(b) + 1 for b in np.argsort([-oracle[b] for b in range(1, 13)], kind="stable")]
    print(f"# demo_target_probe {date.today()} on {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"target {args.target}: source top-1 {100 * source:.1f} % on {int(test.sum())} clips; unpruned target "
          f"{100 * oracle[0]:.1f} % [{100 * base[0]:.1f}, {100 * base[1]:.1f}] on {n} clips, {args.seeds} seeds")
    print("single removals (%): " + " ".join(f"{100 * oracle[b]:.1f}" for b in range(1, 13)))
    print(f"below the unpruned model beyond noise: {lower or 'none'}")
    for count in (9, 11):
        kept = job(sorted(removal[:count]), 0)
        rand = [job(sorted(np.random.default_rng(s).permutation(12)[:count] + 1), 0) for s in range(args.random_orders)]
        low, high = runs_interval(rand, n)  # covers how much the random orders differ, as the report's
        verdict = "beats" if separable(wilson(kept, n), (low, high)) and kept > np.mean(rand) else "does not beat"
        print(f"{count} removed: oracle order {100 * kept:.1f} %, mean of {len(rand)} random orders "
              f"{100 * np.mean(rand):.1f} ± {100 * np.std(rand, ddof=1):.1f} % [{100 * low:.1f}, {100 * high:.1f}]: "
              f"the oracle {verdict} them beyond noise")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
