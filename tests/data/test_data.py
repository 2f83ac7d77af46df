"""Video data: decoding, dataset layouts and their quirks, clip sampling, unreadable files, bad input."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from conftest import VIDEO_CLASSES

from gardener.data import ClipSpec, EvalClips, TrainClips, VideoInfo, probe, probe_all, read_frames, read_split
from gardener.data.clips import eval_indices, train_indices
from gardener.data.synthetic import write_hmdb51_splits, write_ucf101_splits
from gardener.data.video import write_video
from gardener.errors import GardenerError


def _ramp(frames: int = 90, size: int = 32) -> np.ndarray:
    """Frame t is uniformly grey at level 2 t: the decoded level tells which frame it is."""
    return np.repeat(np.arange(frames, dtype=np.uint8)[:, None, None, None] * 2, size * size * 3).reshape(
        frames, size, size, 3)


@pytest.mark.parametrize("suffix,codec", [(".mp4", "mpeg4"), (".avi", "mpeg4"), (".mkv", "libx264"),
                                          (".webm", "libvpx")])
def test_every_container_decodes_the_asked_frames_with_or_without_seeking(tmp_path, suffix, codec):
    path = write_video(tmp_path / f"ramp{suffix}", _ramp(), codec=codec)
    info = probe(path)
    assert (info.frames, info.height, info.width) == (90, 32, 32)
    wanted = np.array([80, 60, 61, 3, 60])
    seeking = read_frames(path, wanted, info)
    sequential = read_frames(path, wanted, VideoInfo(info.frames, info.fps, info.height, info.width, False))
    assert seeking.shape == (5, 32, 32, 3) and seeking.dtype == np.uint8
    np.testing.assert_array_equal(seeking, sequential)
    np.testing.assert_allclose(seeking.reshape(5, -1).mean(1), wanted * 2, atol=3)


def test_frame_cache_decodes_each_video_once_and_returns_the_same_frames(tmp_path, monkeypatch):
    from gardener.data import frame_cache, video

    paths = [write_video(tmp_path / f"ramp{k}.mp4", _ramp(frames=30)) for k in range(3)]
    infos = [probe(p) for p in paths]
    wanted = np.array([20, 3, 3, 29, 0])
    plain = [read_frames(p, wanted, i) for p, i in zip(paths, infos)]
    decoded = []
    real = video._decode
    monkeypatch.setattr(video, "_decode", lambda path, indices, info: decoded.append(path) or real(path, indices, info))
    one_video = 30 * 32 * 32 * 3
    with frame_cache(2 * one_video):  # room for two of the three videos
        for _ in range(3):
            for p, i, expected in zip(paths, infos, plain):
                np.testing.assert_array_equal(read_frames(p, wanted, i), expected)
        assert video._CACHE["used"] == 2 * one_video
    # the first two decoded once each; the third, over budget, at every read
    assert decoded == [paths[0], paths[1], paths[2], paths[2], paths[2]]
    assert video._CACHE["limit"] == 0 and not video._CACHE["videos"]  # nothing kept after the block
    read_frames(paths[0], wanted, infos[0])
    assert decoded[-1] == paths[0]


def test_class_folders_sorted_and_held_out_split_is_stratified(video_root):
    train, test = read_split(video_root, "train", seed=1), read_split(video_root, "test", seed=1)
    assert train.classes == sorted(VIDEO_CLASSES) == test.classes
    assert not set(train.paths) & set(test.paths) and len(train) + len(test) == 41
    assert sorted(set(test.labels)) == [0, 1, 2, 3]
    assert read_split(video_root, "test", seed=1).paths == test.paths  # the seed decides it
    assert read_split(video_root, "test", seed=2).paths != test.paths


def test_train_and_test_subfolders_are_used_when_present(tmp_path, video_root):
    for split, pick in (("train", slice(0, 6)), ("val", slice(6, 10))):
        for name in VIDEO_CLASSES:
            (tmp_path / split / name).mkdir(parents=True)
            for video in sorted((video_root / name).glob(f"{name}_*.mp4"))[pick]:
                shutil.copy(video, tmp_path / split / name / video.name)
    assert len(read_split(tmp_path, "train")) == 24 and len(read_split(tmp_path, "test")) == 16


def test_ucf101_numbering_comes_from_classind_and_labels_from_folders(tmp_path):
    from gardener.data.synthetic import motion_clip

    rng = np.random.default_rng(0)
    files = {}
    # Python sorts 'HandstandPushups' < 'apply_eye'; UCF101's classInd is case-insensitive.
    for folder, stem in (("apply_eye", "apply_eye"), ("HandstandPushups", "HandStandPushups"),
                         ("Basketball", "Basketball")):
        (tmp_path / "videos" / folder).mkdir(parents=True)
        files[folder] = [write_video(tmp_path / "videos" / folder / f"v_{stem}_g0{k}_c01.avi",
                                     motion_clip("up", 8, 16, rng)) for k in range(3)]
    split_dir = write_ucf101_splits(tmp_path / "ucfTrainTestlist", files, tmp_path / "videos")
    assert (split_dir / "classInd.txt").read_text().split() == ["1", "apply_eye", "2", "Basketball", "3",
                                                                 "HandstandPushups"]
    train = read_split(tmp_path / "videos", "train", split_dir=split_dir)
    test = read_split(tmp_path / "videos", "test", split_dir=split_dir)
    assert train.classes == ["apply_eye", "Basketball", "HandstandPushups"] != sorted(train.classes)
    handstand = [lab for p, lab in zip(train.paths, train.labels) if "HandStandPushups" in p.name]
    assert handstand == [2, 2] and len(test) == 3 and sorted(test.labels) == [0, 1, 2]


def test_hmdb51_tags_choose_train_test_and_unused(tmp_path, video_root):
    files = {name: sorted((video_root / name).glob(f"{name}_*.mp4")) for name in VIDEO_CLASSES}
    split_dir = write_hmdb51_splits(tmp_path / "splits", files, test_every=3, unused_every=5)
    train = read_split(video_root, "train", split_dir=split_dir)
    test = read_split(video_root, "test", split_dir=split_dir)
    assert train.classes == sorted(VIDEO_CLASSES)
    # per class of 10: k % 5 == 4 unused (k = 4, 9), k % 3 == 0 test (0, 3, 6), the rest train (1, 2, 5, 7, 8)
    assert (len(train), len(test)) == (4 * 5, 4 * 3)


def test_csv_and_jsonl_manifests(tmp_path, video_root):
    videos = sorted(video_root.glob("*/*_00[0-3].mp4"))
    rows = [{"path": str(p.relative_to(video_root)), "label": p.parent.name,
             "split": "test" if p.stem.endswith("3") else "train"} for p in videos]
    (video_root / "list.csv").write_text("path,label,split\n" + "".join(
        f"{r['path']},{r['label']},{r['split']}\n" for r in rows))
    (video_root / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("list.csv", "list.jsonl"):
        train, test = read_split(video_root / name, "train"), read_split(video_root / name, "test")
        assert (len(train), len(test)) == (12, 4) and train.classes == sorted(VIDEO_CLASSES)


def test_unreadable_video_is_skipped_with_a_warning_or_fails_with_strict(video_root, caplog):
    split = read_split(video_root, "train", val_fraction=0.01)
    assert any(p.name == "broken.mp4" for p in split.paths)
    with caplog.at_level(logging.WARNING, logger="gardener.data"):
        clean, infos = probe_all(split)
    assert "skipping 1 unreadable video(s)" in caplog.text and "broken.mp4" in caplog.text
    assert len(clean) == len(split) - 1 and clean.skipped[0]["path"].endswith("broken.mp4")
    assert all(i.frames == 16 for i in infos)
    with pytest.raises(GardenerError, match="unreadable video.*--strict"):
        probe_all(split, strict=True)


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file or folder"), ("empty", "no class folders holding videos"),
    ("missing_listed", "missing under"), ("unknown_class", "which classInd.txt does not list"),
    ("not_manifest", "must be a .csv or .jsonl"),
])
def test_bad_data_gives_a_clear_error(tmp_path, video_root, case, message):
    root, kwargs = tmp_path / "nothing", {}
    if case == "empty":
        (root / "class_without_videos").mkdir(parents=True)
    elif case in ("missing_listed", "unknown_class"):
        files = {name: sorted((video_root / name).glob(f"{name}_*.mp4"))[:3] for name in VIDEO_CLASSES}
        split_dir = write_ucf101_splits(tmp_path / "splits", files, video_root)
        listing = split_dir / "trainlist01.txt"
        extra = "red_to_blue/v_gone.avi 1\n" if case == "missing_listed" else "dancing/v_dance.avi 9\n"
        listing.write_text(listing.read_text() + extra)
        root, kwargs = video_root, {"split_dir": split_dir}
    elif case == "not_manifest":
        root = tmp_path / "notes.txt"
        root.write_text("x")
    with pytest.raises(GardenerError, match=message):
        read_split(root, "train", **kwargs)


def test_clip_sampling_loops_short_videos_and_spreads_eval_clips():
    spec = ClipSpec(frames=8, sampling_rate=4, test_clips=3)
    short = train_indices(20, spec, np.random.default_rng(0))
    assert short.tolist() == [0, 4, 8, 12, 16, 0, 4, 8]  # 32 frames wanted of 20: loop back
    long = train_indices(100, spec, np.random.default_rng(0))
    assert np.all(np.diff(long) == 4) and long[-1] < 100
    starts = [c[0] for c in eval_indices(100, spec)]
    assert starts == [0, 34, 68] and all(c[-1] < 100 for c in eval_indices(100, spec))


def test_clips_are_uint8_and_deterministic_per_seed_epoch_and_video(video_root):
    split, infos = probe_all(read_split(video_root, "train"))
    spec = ClipSpec(frames=8, sampling_rate=2, size=24, test_clips=2, test_crops=3)
    clips = TrainClips(split, infos, spec, seed=5)
    a, again, next_epoch = clips[3], clips[3], clips[len(split) + 3]
    assert a["pixel_values"].shape == (8, 3, 24, 24) and str(a["pixel_values"].dtype) == "torch.uint8"
    assert (a["pixel_values"] == again["pixel_values"]).all() and a["labels"] == next_epoch["labels"]
    assert not (a["pixel_values"] == next_epoch["pixel_values"]).all()
    views = EvalClips(split, infos, spec)[0]["pixel_values"]
    assert views.shape == (6, 8, 3, 24, 24)


def test_resizing_stays_uint8_and_within_one_level_of_the_float_computation():
    import torch
    import torch.nn.functional as F

    from gardener.data.clips import _resize

    clip = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 150, 200), dtype=np.uint8))
    for size in ((224, 224), (64, 96)):  # up and down
        fast = _resize(clip, *size)
        exact = F.interpolate(clip.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        assert fast.dtype == torch.uint8 and fast.shape == (4, 3, *size)
        assert (fast.float() - exact.round().clamp(0, 255)).abs().max() <= 1


def test_ucf101_like_data_is_what_ucf101_holds_and_trains_at_224(tmp_path):
    import av

    from gardener.data.synthetic import make_dataset

    info = make_dataset(tmp_path / "ucf", classes=("grow", "pass"), per_class=2, frames=70, seed=0, ucf101_like=True)
    paths = sorted((tmp_path / "ucf" / "videos").rglob("*"))
    videos = [p for p in paths if p.is_file()]
    assert info["count"] == 4 and all(p.suffix == ".avi" for p in videos)
    with av.open(str(videos[0])) as container:
        stream = container.streams.video[0]
        kinds = {str(frame.pict_type) for frame in container.decode(stream)}
        assert stream.codec_context.name == "mpeg4" and (stream.width, stream.height) == (320, 240)
        assert float(stream.average_rate) == 25 and stream.frames == 70
    assert any(k in ("B", "3", "PictureType.B") for k in kinds), kinds
    split, infos = probe_all(read_split(tmp_path / "ucf" / "videos", "train", split_dir=tmp_path / "ucf" / "splits"))
    item = TrainClips(split, infos, ClipSpec(frames=16, sampling_rate=4, size=224))[0]
    assert tuple(item["pixel_values"].shape) == (16, 3, 224, 224) and str(item["pixel_values"].dtype) == "torch.uint8"


def test_repeated_augmentation_crops_one_decoded_clip_several_times(video_root):
    import torch

    from gardener.train.state import collate

    split, infos = probe_all(read_split(video_root, "train"))
    spec = ClipSpec(frames=8, sampling_rate=2, size=24, scale=(0.3, 1.0))
    one, two = TrainClips(split, infos, spec, seed=3), TrainClips(split, infos, spec, seed=3, num_sample=2)
    item = two[5]
    assert tuple(item["pixel_values"].shape) == (2, 8, 3, 24, 24) and item["labels"] == [split.labels[5]] * 2
    assert torch.equal(item["pixel_values"][0], one[5]["pixel_values"])  # the first sample is the plain one
    assert not torch.equal(item["pixel_values"][0], item["pixel_values"][1])  # the second is cropped anew
    assert torch.equal(two[5]["pixel_values"], item["pixel_values"])  # deterministic per (seed, epoch, video)
    batch = collate([two[0], two[1], two[2]])
    assert tuple(batch["pixel_values"].shape) == (6, 8, 3, 24, 24) and batch["labels"].tolist() == [
        split.labels[0]] * 2 + [split.labels[1]] * 2 + [split.labels[2]] * 2
    with pytest.raises(GardenerError, match="--num-sample 0"):
        TrainClips(split, infos, spec, num_sample=0)
