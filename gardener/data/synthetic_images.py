"""Small synthetic images written as real PNG files, for the image-classification task's miniature and tests.

Each class is a texture (stripes one way or another, dots, a checkerboard, rings) in a random colour, period and
phase, under noise: the colour tells nothing, the arrangement of the pixels tells the class. Written as
`OUT/train/<class>/*.png` and `OUT/val/<class>/*.png`, the layout `--data OUT` reads; the same seed writes the
same files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import GardenerError

TEXTURES = ("horizontal", "vertical", "diagonal", "dots", "checker", "rings")


def texture(kind: str, rng: np.random.Generator, size: int = 32, noise: float = 18.0) -> np.ndarray:
    """uint8 (size, size, 3): the named texture in a random colour, period and phase, with Gaussian noise of
    standard deviation `noise` (in 0-255 pixel values)."""
    y, x = np.mgrid[:size, :size]
    period, phase = int(rng.integers(4, 9)), int(rng.integers(0, 8))
    half = period // 2
    centre = rng.uniform(0, size, 2)
    pattern = {"horizontal": (y + phase) % period < half,
               "vertical": (x + phase) % period < half,
               "diagonal": (x + y + phase) % period < half,
               "dots": ((x + phase) % period < 2) & ((y + phase) % period < 2),
               "checker": (((x + phase) // half) + ((y + phase) // half)) % 2 == 0,
               "rings": np.hypot(x - centre[0], y - centre[1]).astype(int) % period < half}[kind]
    colour, background = rng.integers(90, 256, 3), rng.integers(0, 60, 3)
    image = np.where(pattern[..., None], colour, background) + rng.normal(0, noise, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_images(out: str | Path, *, classes: tuple[str, ...] = TEXTURES, per_class: int = 40,
                 test_per_class: int = 20, size: int = 32, seed: int = 0, force: bool = False,
                 arguments: dict | None = None, noise: float = 18.0) -> dict:
    """`make-data --images`: train/ and val/ class folders of PNG images and gardener.json, written whole."""
    from PIL import Image

    from ..fileio import atomic_dir, write_text
    from ..manifest import manifest
    from ..settings import check_number

    unknown = [c for c in classes if c not in TEXTURES]
    repeated = sorted({c for c in classes if list(classes).count(c) > 1})
    if repeated:
        raise GardenerError(f"--classes: {repeated[0]!r} is given twice; name each texture once")
    if unknown or len(set(classes)) < 2:
        raise GardenerError(f"--classes: {unknown[0]!r} is not a texture ({', '.join(TEXTURES)})" if unknown else
                            f"--classes: give at least two textures of {', '.join(TEXTURES)}")
    check_number("--per-class", per_class, 1)
    check_number("--test-per-class", test_per_class, 1)
    check_number("--seed", seed, 0)
    if size < 8 or size > 1024:
        raise GardenerError(f"--size {size}: expected 8 to 1024 pixels")
    rng = np.random.default_rng([seed, 23])
    with atomic_dir(out, force) as tmp:
        for split, count in (("train", per_class), ("val", test_per_class)):
            for kind in classes:
                (tmp / split / kind).mkdir(parents=True)
                for k in range(count):
                    Image.fromarray(texture(kind, rng, size, noise)).save(tmp / split / kind / f"{kind}_{k:04d}.png")
        record = manifest("make-data", [], {k: str(v) if isinstance(v, Path) else v
                                            for k, v in (arguments or {}).items()})
        record.update({"classes": list(classes), "train": per_class * len(classes),
                       "val": test_per_class * len(classes), "size": size, "noise": noise})
        write_text(tmp / "gardener.json", json.dumps(record, indent=2) + "\n")
    return record
