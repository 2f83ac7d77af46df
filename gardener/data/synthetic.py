"""Small synthetic action videos written as real files: a square that moves, grows or fades.

A single frame does not tell the class apart (the square starts anywhere, on noise); the
change over time does. It is learnable by a tiny model in a few dozen CPU steps, which is what tests
and benchmarks need. Layouts: class folders, UCF101 split files, HMDB51 split files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .video import write_video

# Classes a horizontal flip (a training augmentation) leaves unchanged: vertical motion, growth,
# fading, and whole-frame colour transitions ("red_to_blue": the middle frame of red_to_blue and
# blue_to_red is the same mix, so the order in time decides).
SHAPE_KINDS = ("up", "down", "grow", "shrink", "brighten", "darken")
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "yellow": (200, 200, 30)}
DEFAULT_CLASSES = ("red_to_blue", "blue_to_red", "green_to_red", "red_to_green")


def colour_clip(kind: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (frames, size, size, 3): the whole frame turns from one colour into another, with noise."""
    start, _, end = kind.partition("_to_")
    a, b = np.array(COLOURS[start], float), np.array(COLOURS[end], float)
    jitter = rng.uniform(0.8, 1.2)
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        p = min(1.0, jitter * t / max(1, frames - 1))
        video[t] = np.clip(a * (1 - p) + b * p + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    return video


def motion_clip(kind: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (frames, size, size, 3): a coloured square on a noisy background that moves up or down
    (wrapping), grows or shrinks, or brightens or darkens, from a random start; or, for
    `<colour>_to_<colour>` kinds, a whole-frame colour transition."""
    start, sep, end = kind.partition("_to_")
    if sep and start in COLOURS and end in COLOURS:
        return colour_clip(kind, frames, size, rng)
    if kind not in SHAPE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(SHAPE_KINDS)} or <colour>_to_<colour> "
                         f"with colours {', '.join(COLOURS)}")
    side0 = rng.uniform(0.2, 0.35) * size
    speed = max(1.0, size / frames) * rng.uniform(0.8, 1.2)
    y0, x0 = rng.uniform(0, size, 2)
    colour = rng.integers(120, 256, 3).astype(float)
    background = rng.integers(0, 60, 3)
    video = np.empty((frames, size, size, 3), np.uint8)
    rows, cols = np.arange(size)[:, None], np.arange(size)[None, :]
    for t in range(frames):
        progress = t / max(1, frames - 1)
        y, side, shade = y0, side0, 1.0
        if kind in ("up", "down"):
            y = (y0 + (1 if kind == "down" else -1) * speed * t) % size
        elif kind in ("grow", "shrink"):
            side = size * (0.15 + 0.55 * (progress if kind == "grow" else 1 - progress))
        else:
            shade = 0.35 + 0.65 * (progress if kind == "brighten" else 1 - progress)
        inside = (((rows - y) % size) < side) & (((cols - x0) % size) < side)
        frame = np.clip(background + rng.normal(0, 12, (size, size, 3)), 0, 255)
        frame[inside] = colour * shade
        video[t] = frame.astype(np.uint8)
    return video


def write_dataset(root: str | Path, per_class: int = 6, frames: int = 24, size: int = 32, seed: int = 0,
                  classes: tuple[str, ...] = DEFAULT_CLASSES, suffix: str = ".mp4") -> dict[str, list[Path]]:
    """`root/<class>/<class>_<k><suffix>` for each class; returns the files per class."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for name in classes:
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = [write_video(folder / f"{name}_{k:03d}{suffix}", motion_clip(name, frames, size, rng))
                         for k in range(per_class)]
    return written


def write_ucf101_splits(split_dir: str | Path, files: dict[str, list[Path]], root: str | Path,
                        test_every: int = 3, fold: int = 1) -> Path:
    """classInd.txt (classes numbered case-insensitively, as UCF101 does) and train/test lists."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(files, key=str.lower)
    (split_dir / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, start=1)))
    train, test = [], []
    for i, name in enumerate(names, start=1):
        for k, path in enumerate(files[name]):
            relative = Path(path).relative_to(root).as_posix()
            (test.append(f"{relative}\n") if k % test_every == 0 else train.append(f"{relative} {i}\n"))
    (split_dir / f"trainlist{fold:02d}.txt").write_text("".join(train))
    (split_dir / f"testlist{fold:02d}.txt").write_text("".join(test))
    return split_dir


def write_hmdb51_splits(split_dir: str | Path, files: dict[str, list[Path]], test_every: int = 3,
                        unused_every: int = 0, fold: int = 1) -> Path:
    """`<class>_test_split<fold>.txt` per class: tag 1 train, 2 test, 0 unused."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, paths in files.items():
        lines = []
        for k, path in enumerate(paths):
            tag = 0 if unused_every and k % unused_every == unused_every - 1 else (2 if k % test_every == 0 else 1)
            lines.append(f"{Path(path).name} {tag} \n")
        (split_dir / f"{name}_test_split{fold}.txt").write_text("".join(lines))
    return split_dir
