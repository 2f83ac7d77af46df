"""Small synthetic action videos written as real files: a square that moves, grows or fades.

A single frame does not tell the class apart (the square starts anywhere, on noise); the
change over time does. It is learnable by a tiny model in a few dozen CPU steps, which is what tests
and benchmarks need. Layouts: class folders, UCF101 split files, HMDB51 split files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import GardenerError
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
                        test_every: int = 3, fold: int = 1, test_from: int | None = None) -> Path:
    """classInd.txt (classes numbered case-insensitively, as UCF101 does) and train/test lists:
    every `test_every`-th video of a class is a test video, or, with `test_from`, those from that index on."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(files, key=str.lower)
    (split_dir / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, start=1)))
    train, test = [], []
    for i, name in enumerate(names, start=1):
        for k, path in enumerate(files[name]):
            relative = Path(path).relative_to(root).as_posix()
            is_test = k >= test_from if test_from is not None else k % test_every == 0
            (test.append(f"{relative}\n") if is_test else train.append(f"{relative} {i}\n"))
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


# --- make-data: a synthetic action-recognition dataset ----------------------------------------------

ACTIONS = ("move_up", "move_down", "grow", "shrink", "fade_in", "fade_out", "bounce", "pass")
SHAPES = ("square", "disk", "ring", "cross", "triangle")


def _shape_mask(shape: str, rows, cols, cy: float, cx: float, radius: float):
    dy, dx = rows - cy, cols - cx
    if shape == "square":
        return (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
    if shape == "disk":
        return dy**2 + dx**2 <= radius**2
    if shape == "ring":
        d = np.sqrt(dy**2 + dx**2)
        return (d <= radius) & (d >= 0.55 * radius)
    if shape == "cross":
        return ((np.abs(dy) <= radius / 3) & (np.abs(dx) <= radius)) | ((np.abs(dx) <= radius / 3) & (np.abs(dy) <= radius))
    return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)  # triangle, apex up


def _trajectory(action: str, t: np.ndarray, size: int, rng: np.random.Generator):
    """Centre row, radius and opacity of the actor over normalised time t in [0, 1]."""
    radius = np.full_like(t, rng.uniform(0.12, 0.2) * size)
    alpha = np.ones_like(t)
    travel = rng.uniform(0.35, 0.5) * size
    top, bottom = 0.2 * size, 0.8 * size
    if action in ("move_up", "move_down"):
        up = action == "move_up"
        start = rng.uniform(top + travel, bottom) if up else rng.uniform(top, bottom - travel)
        row = start + (-1 if up else 1) * travel * t
    elif action == "pass":
        row = -radius[0] + (size + 2 * radius[0]) * t  # enters at the top, leaves at the bottom
    elif action == "bounce":
        row = top + (bottom - top) * (1 - np.abs(2 * t - 1)) * rng.uniform(0.8, 1.0) + rng.uniform(-2, 2)
    else:
        row = np.full_like(t, rng.uniform(0.3, 0.7) * size)
        if action in ("grow", "shrink"):
            low, high = rng.uniform(0.06, 0.1) * size, rng.uniform(0.3, 0.4) * size
            radius = low + (high - low) * (t if action == "grow" else 1 - t)
        else:
            alpha = t if action == "fade_in" else 1 - t
    return row, radius, alpha


DOMAINS = ("source", "target")


def _scene(domain: str, size: int, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """The background and the distractors of a clip. The source domain: a flat dark background and one
    distractor; the target domain (the same actions filmed elsewhere): a dark vertical gradient and two
    smaller distractors."""
    def distractor(smallest: float, largest: float) -> tuple:
        return (SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, size, 2), rng.normal(0, 1.2, 2),
                rng.uniform(smallest, largest) * size, rng.uniform(60, 200, 3))
    if domain == "source":
        background = np.broadcast_to(rng.uniform(0, 80, 3), (size, size, 3)).astype(float)
        return background, [distractor(0.06, 0.12)]
    if domain != "target":
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    top, bottom = rng.uniform(0, 90, 3), rng.uniform(0, 90, 3)
    mix = (rows / (size - 1))[..., None]
    return top * (1 - mix) + bottom * mix, [distractor(0.05, 0.1) for _ in range(2)]


def action_clip(action: str, frames: int, size: int, rng: np.random.Generator, domain: str = "source") -> np.ndarray:
    """uint8 (frames, size, size, 3): one actor performing `action` over a background, with drifting
    distractor shapes (`domain` sets the scene). A single frame does not tell the action apart."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    t = np.linspace(0, 1, frames) * rng.uniform(0.85, 1.0) + rng.uniform(0, 0.1)
    row, radius, alpha = _trajectory(action, np.clip(t, 0, 1), size, rng)
    col = rng.uniform(0.25, 0.75) * size + np.cumsum(rng.normal(0, 0.3, frames))
    colour = rng.uniform(120, 255, 3)
    shape = SHAPES[rng.integers(len(SHAPES))]
    rows = np.mgrid[0:size, 0:size][0].astype(float)
    background, distractors = _scene(domain, size, rows, rng)
    return render(size, (shape, row, col, radius, alpha, colour), background, distractors)


def render(size: int, actor: tuple, background: np.ndarray, distractors: list) -> np.ndarray:
    """uint8 (frames, size, size, 3) from an actor (shape, then per-frame centre row and column,
    radius and opacity, and colour) over a background, with distractors (shape, position, velocity,
    radius, colour) drawn first and wrapping around the frame."""
    shape, row, col, radius, alpha, colour = actor
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    video = np.empty((len(row), size, size, 3), np.uint8)
    for k in range(len(row)):
        frame = np.array(background, dtype=float, copy=True)
        for d_shape, d_pos, d_vel, d_radius, d_colour in distractors:
            cy, cx = (d_pos + d_vel * k) % size
            frame[_shape_mask(d_shape, rows, cols, cy, cx, d_radius)] = d_colour
        mask = _shape_mask(shape, rows, cols, row[k], col[k], max(1.5, radius[k]))
        frame[mask] = alpha[k] * colour + (1 - alpha[k]) * frame[mask]
        video[k] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


UCF101_LIKE = {"height": 240, "width": 320, "fps": 25, "frames": 125}  # 5 s of 320x240 at 25 fps


def make_dataset(out: str | Path, *, classes: tuple[str, ...] = ACTIONS, per_class: int = 40, frames: int = 16,
                 size: int = 64, seed: int = 0, test_every: int = 4, test_per_class: int | None = None,
                 domain: str = "source", codec: str = "libx264", ucf101_like: bool = False) -> dict:
    """Write `out/videos/<action>/v_<action>_gXX_cYY.mp4` and UCF101-style split files in `out/splits/`.

    Without `test_per_class`, 1 video in `test_every` is a test video; with it, `per_class` videos
    per class are for training and `test_per_class` more for testing (a small training set and a
    large test set, as a target task has). Deterministic for a seed: one encoder thread.
    `ucf101_like` writes what UCF101 holds instead: 320x240 `.avi` files of MPEG-4 Part 2 with
    B-frames at 25 fps (the action in the middle 240x240, the scene's edges carried outwards), for
    tests and benchmarks of decoding; `size` is then ignored.
    """
    if domain not in DOMAINS:
        raise GardenerError(f"--domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    out = Path(out)
    files: dict[str, list[Path]] = {}
    count = per_class + (test_per_class or 0)
    for name in classes:
        folder = out / "videos" / name
        folder.mkdir(parents=True, exist_ok=True)
        files[name] = []
        for k in range(count):
            key = [seed, classes.index(name), k] + ([DOMAINS.index(domain)] if domain != "source" else [])
            clip_rng = np.random.default_rng(key)
            stem = folder / f"v_{name}_g{k // 4 + 1:02d}_c{k % 4 + 1:02d}"
            if ucf101_like:
                clip = action_clip(name, frames, UCF101_LIKE["height"], clip_rng, domain)
                side = (UCF101_LIKE["width"] - UCF101_LIKE["height"]) // 2
                clip = np.pad(clip, ((0, 0), (0, 0), (side, side), (0, 0)), mode="edge")
                files[name].append(write_video(stem.with_suffix(".avi"), clip, fps=UCF101_LIKE["fps"], codec="mpeg4",
                                               b_frames=2))
            else:
                files[name].append(write_video(stem.with_suffix(".mp4"), action_clip(name, frames, size, clip_rng,
                                                                                       domain), codec=codec))
    if test_per_class:
        write_ucf101_splits(out / "splits", files, out / "videos", test_from=per_class)
    else:
        write_ucf101_splits(out / "splits", files, out / "videos", test_every=test_every)
    return {"videos": out / "videos", "splits": out / "splits", "classes": list(classes),
            "count": sum(len(v) for v in files.values()), "domain": domain}


def write_synthetic(out: str | Path, *, classes: str | tuple[str, ...] = ACTIONS, per_class: int = 40,
                    test_per_class: int | None = None, domain: str = "source", frames: int | None = None,
                    size: int = 64, ucf101_like: bool = False, seed: int = 0, force: bool = False,
                    arguments: dict | None = None) -> dict:
    """`make-data`: check the request, then write the dataset and its manifest atomically into `out`."""
    from ..fileio import atomic_dir, write_text
    from ..manifest import manifest
    from ..settings import check_number

    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if isinstance(classes, str) else classes
    frames = frames if frames is not None else (UCF101_LIKE["frames"] if ucf101_like else 16)
    _check_request(names, per_class, test_per_class, frames, size, ucf101_like)
    check_number("--seed", seed, 0)
    if domain not in DOMAINS:
        raise GardenerError(f"--domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    with atomic_dir(out, force) as tmp:
        info = make_dataset(tmp, classes=names, per_class=per_class, frames=frames, size=size, seed=seed,
                            test_per_class=test_per_class, domain=domain, ucf101_like=ucf101_like)
        record = manifest("make-data", [], {k: str(v) if isinstance(v, Path) else v
                                            for k, v in (arguments or {}).items()})
        record.update({"count": info["count"], "classes": info["classes"]})
        write_text(tmp / "gardener.json", json.dumps(record, indent=2) + "\n")
    return {**info, "videos": Path(out) / "videos", "splits": Path(out) / "splits"}


MAX_SIZE = 4096  # frame side in pixels; larger frames are not a dataset anyone trains on here


def _check_request(names: tuple[str, ...], per_class: int, test_per_class: int | None, frames: int, size: int,
                   ucf101_like: bool = False) -> None:
    unknown = [c for c in names if c not in ACTIONS]
    if unknown or len(names) < 2:
        raise GardenerError(f"--classes: {unknown[0]!r} is not an action" if unknown else
                            "--classes: give at least two actions")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise GardenerError(f"--classes: {repeated[0]!r} is given twice; name each action once")
    if size < 16 or size % 2 or size > MAX_SIZE or frames < 2 or per_class < 2:
        raise GardenerError(f"--size must be even and between 16 and {MAX_SIZE}, --frames >= 2, --per-class >= 2 "
                            f"(got --size {size}, --frames {frames}, --per-class {per_class})")
    if test_per_class is not None and test_per_class < 1:
        raise GardenerError("--test-per-class must be at least 1")
    height, width = (UCF101_LIKE["height"], UCF101_LIKE["width"]) if ucf101_like else (size, size)
    needed = frames * height * width * 3 + 16 * height * width * 8  # the video, and the frame being drawn
    free = _available_memory()
    if free is not None and needed > free // 2:
        from ..oserrors import size as shown

        raise GardenerError(f"--frames {frames} of {width}x{height} pixels: one video takes {shown(needed)} of memory "
                            f"while it is written, and {shown(free)} is available; give fewer frames or a smaller "
                            f"--size")


def _available_memory() -> int | None:
    """Bytes of memory a new allocation can take (Linux's MemAvailable, else the free pages)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
