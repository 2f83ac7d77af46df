"""Synthetic data: `make-data` writes the same decoded videos for a seed, in UCF101's layout."""
from __future__ import annotations

import numpy as np
from conftest import run_cli as _cli

from gardener.data import read_split


def _frames(path) -> np.ndarray:
    from gardener.data import probe, read_frames

    info = probe(path)
    return read_frames(path, np.arange(info.frames), info)


def test_make_data_is_deterministic_and_ucf101_shaped(tmp_path):
    for name in ("a", "b"):
        assert _cli("make-data", tmp_path / name, "--classes", "move_up,grow,bounce", "--per-class", 4,
                    "--frames", 8, "--size", 32, "--seed", 3) == 0
    first, second = sorted((tmp_path / "a" / "videos").rglob("*.mp4")), sorted((tmp_path / "b" / "videos").rglob("*.mp4"))
    assert len(first) == 12 and [p.relative_to(tmp_path / "a") for p in first] == \
        [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second):  # the same decoded frames (what training sees), exactly
        assert np.array_equal(_frames(a), _frames(b)), a.name
    train = read_split(tmp_path / "a" / "videos", "train", split_dir=tmp_path / "a" / "splits")
    test = read_split(tmp_path / "a" / "videos", "test", split_dir=tmp_path / "a" / "splits")
    assert train.classes == ["bounce", "grow", "move_up"] and (len(train), len(test)) == (9, 3)
    assert _cli("make-data", tmp_path / "a") == 2  # exists: refused without --force


def test_make_data_writes_a_target_task_with_a_small_train_and_a_large_test_split(tmp_path):
    """The same actions in another scene, with N training and M test videos per class."""
    args = ["--classes", "move_up,grow", "--frames", 8, "--size", 32, "--per-class", 3, "--test-per-class", 5]
    assert _cli("make-data", tmp_path / "t", *args, "--domain", "target") == 0
    assert _cli("make-data", tmp_path / "s", *args) == 0
    train = read_split(tmp_path / "t" / "videos", "train", split_dir=tmp_path / "t" / "splits")
    test = read_split(tmp_path / "t" / "videos", "test", split_dir=tmp_path / "t" / "splits")
    assert (len(train), len(test)) == (6, 10) and not set(train.paths) & set(test.paths)
    from gardener.data import probe, read_frames

    path = train.paths[0]
    target = read_frames(path, np.arange(8), probe(path))
    source = read_frames(tmp_path / "s" / path.relative_to(tmp_path / "t"), np.arange(8), probe(path))
    assert target.shape == source.shape == (8, 32, 32, 3) and not np.array_equal(target, source)
    def top_minus_bottom(frame):  # the median colour of the top row against the bottom row
        return np.abs(np.median(frame[0], axis=0) - np.median(frame[-1], axis=0)).max()
    assert top_minus_bottom(source[0].astype(float)) <= 2  # a flat background
    assert top_minus_bottom(target[0].astype(float)) > 2  # a vertical gradient
    assert _cli("make-data", tmp_path / "x", "--domain", "mars") == 2
