"""Images as users hold them, for the image-classification task: class folders, with split folders or a held-out share.

Layouts: `ROOT/train/<class>/*` and `ROOT/val/<class>/*` (or `test/`), or `ROOT/<class>/*` with a seeded
`val_fraction` of each class held out for testing (as the video class folders are). An image is any file PIL
opens (`.jpg`, `.jpeg`, `.png`, `.bmp`, `.webp`, `.gif`, `.tif`). Training views are VideoMAE's and DeiT's:
a random-resized crop (area 0.08-1, aspect 3/4-4/3) and a horizontal flip, each a function of (seed, epoch,
image), so a resumed run sees the same views; evaluation resizes the short side to size / 0.875 and takes the
centre crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GardenerError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
EVAL_CROP = 0.875  # the centre crop's share of the resized short side (DeiT, timm)


@dataclass(frozen=True)
class ImageSplit:
    """The images of one split, their labels (indices into `classes`) and where they came from."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class ImageSpec:
    """What one training or test item is: a square image of `size` pixels."""

    size: int
    min_crop_scale: float = 0.08


def _class_folders(root: Path, flag: str) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise GardenerError(f"{flag} {root}: no such folder (expected class folders of images)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {f.name: sorted(p for p in f.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) for f in folders}
    empty = [name for name, paths in found.items() if not paths]
    if empty:
        raise GardenerError(f"{flag} {root}: class folder {empty[0]!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    if len(found) < 2:
        named = f" ({next(iter(found))})" if found else ""
        raise GardenerError(f"{flag} {root}: {len(found)} class folder(s){named}; image classification needs at least "
                            f"two classes, ROOT/<class>/<image>")
    return found


def read_image_splits(root: Path, eval_data: Path | None = None, val_fraction: float = 0.2,
                      seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) splits of an image dataset, in any of the layouts above; one-line errors name the folder."""
    root = Path(root)
    if not 0 < val_fraction < 1:
        raise GardenerError(f"--val-fraction {val_fraction}: expected a share between 0 and 1")
    if (root / "train").is_dir() and eval_data is not None:
        root = root / "train"  # the train/ folder of a split layout; --eval-data replaces its val/
    elif eval_data is None and (root / "train").is_dir():
        test_root = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
        if test_root is None:
            raise GardenerError(f"--data {root}: has train/ but no val/ or test/ beside it")
        root, eval_data = root / "train", test_root
    train = _class_folders(root, "--data")
    if eval_data is not None:
        test = _class_folders(Path(eval_data), "--eval-data")
        if sorted(test) != sorted(train):
            raise GardenerError(f"--eval-data {eval_data}: its classes ({', '.join(sorted(test)[:3])} ...) are not "
                                f"the training data's ({', '.join(sorted(train)[:3])} ...)")
        return _split(train, str(root)), _split(test, str(eval_data))
    rng = np.random.default_rng([seed, 17])
    kept, held = {}, {}
    for name, paths in train.items():
        order = rng.permutation(len(paths))
        count = max(1, round(val_fraction * len(paths)))
        if len(paths) - count < 1:
            raise GardenerError(f"--data {root}: class {name!r} has {len(paths)} image(s), too few to hold {count} "
                                f"out for testing; add images or give --eval-data")
        held[name] = [paths[i] for i in sorted(order[:count])]
        kept[name] = [paths[i] for i in sorted(order[count:])]
    return _split(kept, f"{root} (held out: {val_fraction:g} per class, seed {seed})"), _split(held, str(root))


def _split(found: dict[str, list[Path]], source: str) -> ImageSplit:
    classes = sorted(found)
    pairs = [(path, k) for k, name in enumerate(classes) for path in found[name]]
    return ImageSplit([p for p, _ in pairs], [k for _, k in pairs], classes, source)


def check_readable(*splits: ImageSplit) -> None:
    """Every image's header reads (before a run starts, not hours into it): a one-line error names the first that
    does not."""
    from PIL import Image, UnidentifiedImageError

    for split in splits:
        for path in split.paths:
            try:
                with Image.open(path) as image:
                    image.size  # noqa: B018 - the header alone
            except (UnidentifiedImageError, OSError) as exc:
                raise GardenerError(f"{path}: not an image PIL can read ({type(exc).__name__}); remove it from "
                                    f"the data") from None


def open_rgb(path: Path):
    """The image as RGB, or a one-line error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise GardenerError(f"{path}: not an image PIL can read ({type(exc).__name__})") from None


def train_view(path: Path, spec: ImageSpec, rng: np.random.Generator) -> np.ndarray:
    """A random-resized crop (area `min_crop_scale`-1, aspect 3/4-4/3) of `size` pixels, flipped half the time:
    uint8 (3, size, size)."""
    from PIL import Image

    image = open_rgb(path)
    width, height = image.size
    box = (0, 0, width, height)
    for _ in range(10):  # torchvision's RandomResizedCrop: ten tries, then the whole image
        area = width * height * rng.uniform(spec.min_crop_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (left, top, left + w, top + h)
            break
    view = image.resize((spec.size, spec.size), Image.BICUBIC, box=box)
    if rng.random() < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(view, dtype=np.uint8).transpose(2, 0, 1).copy()


def eval_view(path: Path, spec: ImageSpec) -> np.ndarray:
    """The short side resized to size / 0.875, then the centre crop of `size`: uint8 (3, size, size)."""
    from PIL import Image

    image = open_rgb(path)
    width, height = image.size
    short = max(spec.size, round(spec.size / EVAL_CROP))
    scale = short / min(width, height)
    image = image.resize((max(spec.size, round(width * scale)), max(spec.size, round(height * scale))), Image.BICUBIC)
    left, top = (image.size[0] - spec.size) // 2, (image.size[1] - spec.size) // 2
    view = image.crop((left, top, left + spec.size, top + spec.size))
    return np.asarray(view, dtype=np.uint8).transpose(2, 0, 1).copy()


class TrainImages:
    """Training items for the run skeleton: key = epoch x len + index; the view is a function of (seed, key)."""

    def __init__(self, split: ImageSplit, spec: ImageSpec, seed: int):
        self.split, self.spec, self.seed = split, spec, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int) -> dict:
        import torch

        index = key % len(self.split)
        view = train_view(self.split.paths[index], self.spec, np.random.default_rng([self.seed, key, 3]))
        return {"pixel_values": torch.from_numpy(view), "labels": self.split.labels[index]}
