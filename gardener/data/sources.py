"""Where labelled videos come from: class folders, UCF101 / HMDB51 split files, or a manifest.

Each reader returns a `VideoSplit` (paths, integer labels, class names) and checks what can be
checked before any decoding: an empty class set, an unknown class, a listed file that is missing.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GardenerError
from .video import VIDEO_SUFFIXES

SPLIT_DIRS = {"train": ("train", "training"), "test": ("test", "val", "validation", "eval")}


@dataclass
class VideoSplit:
    """Videos of one split with integer labels, the class names in label order, and a description."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    source: str
    skipped: list[dict] = field(default_factory=list)  # unreadable files: {"path", "reason"}

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: list[int]) -> VideoSplit:
        return VideoSplit([self.paths[i] for i in keep], [self.labels[i] for i in keep], self.classes, self.source,
                          list(self.skipped))


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_folders(root: Path, split: str, val_fraction: float = 0.2, seed: int = 0) -> VideoSplit:
    """`ROOT/<class>/<video>` (classes sorted), or `ROOT/train/<class>/...` and `ROOT/test|val/...`.

    Without split folders, a stratified `val_fraction` of each class (chosen by `seed`) is the
    test split and the rest the train split.
    """
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    for name in SPLIT_DIRS[split]:
        if name in subdirs and any(n in subdirs for n in SPLIT_DIRS["train"]):
            return _class_folder_split(subdirs[name], f"folders {subdirs[name]}")
    whole = _class_folder_split(root, f"folders {root}")
    if not 0 < val_fraction < 1:
        raise GardenerError(f"--val-fraction {val_fraction}: expected a fraction between 0 and 1")
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for label in range(len(whole.classes)):
        members = [i for i, lab in enumerate(whole.labels) if lab == label]
        count = max(1, round(val_fraction * len(members))) if len(members) > 1 else 0
        test += sorted(rng.choice(members, size=count, replace=False).tolist())
    chosen = sorted(test) if split == "test" else sorted(set(range(len(whole))) - set(test))
    part = whole.subset(chosen)
    part.source = f"folders {root} (held-out {val_fraction:g} of each class, seed {seed}, {split})"
    return part


def _class_folder_split(root: Path, source: str) -> VideoSplit:
    classes, paths, labels = [], [], []
    for folder in _class_dirs(root):
        videos = _videos_in(folder)
        if not videos:
            continue
        classes.append(folder.name)
        paths += videos
        labels += [len(classes) - 1] * len(videos)
    if not classes:
        raise GardenerError(f"--data {root}: no class folders holding videos ({', '.join(VIDEO_SUFFIXES[:4])}, ...) "
                            f"found; expected ROOT/<class>/<video>")
    return VideoSplit(paths, labels, classes, source)


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise GardenerError(f"{path}: split file not found") from None


def _check_exists(root: Path, paths: list[Path], listing: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise GardenerError(f"{listing}: lists {len(missing)} video(s) missing under {root}, "
                            f"e.g. {missing[0].relative_to(root)}")


def read_ucf101(root: Path, split_dir: Path, fold: int, split: str) -> VideoSplit:
    """UCF101 split files: classes numbered by classInd.txt, labels from each video's folder name."""
    index_file = split_dir / "classInd.txt"
    classes: list[str] = []
    for line in _lines(index_file):
        number, name = line.split(maxsplit=1)
        if int(number) != len(classes) + 1:
            raise GardenerError(f"{index_file}: expected class {len(classes) + 1}, found {line!r}")
        classes.append(name.strip())
    by_name = {name.lower(): i for i, name in enumerate(classes)}
    listing = split_dir / f"{'trainlist' if split == 'train' else 'testlist'}{fold:02d}.txt"
    paths, labels = [], []
    for line in _lines(listing):
        relative = line.split()[0]
        folder = relative.replace("\\", "/").split("/")[0]
        if folder.lower() not in by_name:
            raise GardenerError(f"{listing}: {relative} is in folder {folder!r}, which classInd.txt does not list")
        paths.append(root / relative)
        labels.append(by_name[folder.lower()])
    if not paths:
        raise GardenerError(f"{listing}: the {split} split is empty")
    _check_exists(root, paths, listing)
    return VideoSplit(paths, labels, classes, f"UCF101 {root} fold {fold} ({split}list)")


_HMDB = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>\d+)\.txt$")


def read_hmdb51(root: Path, split_dir: Path, fold: int, split: str) -> VideoSplit:
    """HMDB51 split files `<class>_test_split<N>.txt`: tag 1 = train, 2 = test, 0 = unused."""
    files = sorted(p for p in split_dir.iterdir() if (m := _HMDB.match(p.name)) and int(m.group("fold")) == fold)
    if not files:
        raise GardenerError(f"--split-dir {split_dir}: no <class>_test_split{fold}.txt files")
    classes = [_HMDB.match(p.name).group("cls") for p in files]
    tag = "1" if split == "train" else "2"
    paths, labels = [], []
    for label, listing in enumerate(files):
        for line in _lines(listing):
            name, mark = line.split()[:2]
            if mark == tag:
                paths.append(root / classes[label] / name)
                labels.append(label)
    if not paths:
        raise GardenerError(f"--split-dir {split_dir}: the {split} split of fold {fold} is empty")
    for label, listing in enumerate(files):
        _check_exists(root, [p for p, lab in zip(paths, labels) if lab == label], listing)
    return VideoSplit(paths, labels, classes, f"HMDB51 {root} split {fold} ({split})")


def read_manifest(path: Path, split: str) -> VideoSplit:
    """A CSV (header `path,label[,split]`) or JSONL (`{"path", "label"[, "split"]}`) list of videos.

    Paths are relative to the manifest's folder; rows with a `split` column other than this
    split are left out; classes are the sorted label names (numerically when all are numbers).
    """
    if path.suffix.lower() == ".jsonl":
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise GardenerError(f"{path}: not valid JSON lines ({exc})") from None
    else:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise GardenerError(f"{path}: expected columns path,label (and optionally split)")
    rows = [r for r in rows if str(r.get("split") or split).lower() in SPLIT_DIRS[split]] if "split" in rows[0] \
        else rows
    names = sorted({str(r["label"]) for r in rows}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if
                                                                    s.lstrip("-").isdigit() else 0, s))
    if not rows:
        raise GardenerError(f"{path}: no rows for the {split} split")
    index = {name: i for i, name in enumerate(names)}
    paths = [(path.parent / str(r["path"])) for r in rows]
    _check_exists(path.parent, paths, path)
    return VideoSplit(paths, [index[str(r["label"])] for r in rows], names, f"manifest {path} ({split})")


def read_split(data: str | Path, split: str, *, split_dir: str | Path | None = None, fold: int = 1,
               val_fraction: float = 0.2, seed: int = 0) -> VideoSplit:
    """The videos of `split` ("train" or "test") from whichever layout `data` (and `split_dir`) is."""
    if split not in SPLIT_DIRS:
        raise GardenerError(f"split {split!r}: expected 'train' or 'test'")
    data = Path(data)
    if not data.exists():
        raise GardenerError(f"--data {data}: no such file or folder")
    if data.is_file():
        if data.suffix.lower() not in (".csv", ".jsonl"):
            raise GardenerError(f"--data {data}: a file must be a .csv or .jsonl manifest of path,label")
        return read_manifest(data, split)
    if split_dir is None:
        return read_folders(data, split, val_fraction, seed)
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise GardenerError(f"--split-dir {split_dir}: not a folder")
    if (split_dir / "classInd.txt").is_file():
        return read_ucf101(data, split_dir, fold, split)
    if any(_HMDB.match(p.name) for p in split_dir.iterdir()):
        return read_hmdb51(data, split_dir, fold, split)
    raise GardenerError(f"--split-dir {split_dir}: neither UCF101 (classInd.txt) nor HMDB51 "
                        f"(<class>_test_split<N>.txt) split files")
