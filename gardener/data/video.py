"""Decoding video files with PyAV: probe once, then read only the frames a clip needs."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".wmv")


class VideoError(Exception):
    """A file PyAV cannot open or decode."""


@dataclass(frozen=True)
class VideoInfo:
    """What sampling needs to know about a video: its frame count and, for seeking, its timing."""

    frames: int
    fps: float
    height: int
    width: int
    seekable: bool


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"cannot open: {exc.__class__.__name__}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Frame count, rate and size of a video; decodes its first frame to make sure it is readable."""
    import av

    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream))
            count = stream.frames
            if count <= 0:  # containers without a frame count: count the packets
                container.seek(0)
                count = sum(1 for packet in container.demux(stream) if packet.size)
        except (av.FFmpegError, StopIteration, OSError) as exc:
            raise VideoError(f"cannot decode: {exc.__class__.__name__}: {exc}") from None
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        seekable = stream.time_base is not None and first.pts is not None
        return VideoInfo(int(count), rate, first.height, first.width, bool(seekable))


_CACHE: dict = {"limit": 0, "used": 0, "videos": {}}


@contextmanager
def frame_cache(max_bytes: int) -> Iterator[None]:
    """While inside, keep whole decoded videos in memory, up to `max_bytes` in all.

    For small datasets read many times in one process (the demo's dozens of short finetuning
    runs): each video is decoded once. Videos beyond the budget are decoded per read as usual.
    DataLoader worker processes keep their own copies, so it pays with `workers=0`.
    """
    previous = dict(_CACHE)
    _CACHE.update(limit=max(0, int(max_bytes)), used=0, videos={})
    try:
        yield
    finally:
        _CACHE.clear()
        _CACHE.update(previous)


def read_frames(path: str | Path, indices: np.ndarray, info: VideoInfo) -> np.ndarray:
    """The frames at `indices` (0-based, any order, repeats allowed) as uint8 (len, H, W, 3).

    Decoding starts from the key frame before the first wanted frame when the container can
    seek, and stops after the last wanted frame. Inside `frame_cache`, whole videos are kept.
    """
    if _CACHE["limit"]:
        stat = os.stat(path)  # a changed file is decoded again
        key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
        video = _CACHE["videos"].get(key)
        size = info.frames * info.height * info.width * 3
        if video is None and _CACHE["used"] + size <= _CACHE["limit"]:
            video = _decode(path, np.arange(info.frames), info)
            _CACHE["videos"][key] = video
            _CACHE["used"] += video.nbytes
        if video is not None:
            return video[np.asarray(indices, dtype=np.intp)]
    return _decode(path, indices, info)


def _decode(path: str | Path, indices: np.ndarray, info: VideoInfo) -> np.ndarray:
    import av

    wanted = sorted(set(int(i) for i in indices))
    got: dict[int, np.ndarray] = {}
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        if _in_worker():  # as many workers as cores: threads per decoder only add switching
            stream.thread_count = 1
        else:
            stream.thread_type = "AUTO"
        start = _seek(container, stream, wanted[0], info)
        try:
            for index, frame in _numbered(container, stream, start, info):
                if index > wanted[-1]:
                    break
                if index in wanted:
                    got[index] = frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise VideoError(f"cannot decode: {exc.__class__.__name__}: {exc}") from None
    if len(got) < len(wanted):
        if start is not None:  # the seek landed after the wanted frame: decode from the start instead
            return _decode(path, indices, VideoInfo(info.frames, info.fps, info.height, info.width, False))
        last = max(got) if got else None
        got = _fill_missing(got, wanted, last)
    return np.stack([got[int(i)] for i in indices])


def _in_worker() -> bool:
    """Whether this runs in a DataLoader worker process."""
    import torch.utils.data

    return torch.utils.data.get_worker_info() is not None


def _seek(container, stream, first: int, info: VideoInfo) -> float | None:
    """Seek near frame `first`; returns the stream's start time in seconds, or None if not seeking."""
    if not info.seekable or first < 2 * max(1, int(info.fps)):
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    target = int((start + first / info.fps) / stream.time_base)
    container.seek(target, stream=stream, backward=True, any_frame=False)
    return start


def _numbered(container, stream, start: float | None, info: VideoInfo):
    """(frame index, frame) pairs: counted from 0, or read from timestamps after a seek."""
    for position, frame in enumerate(container.decode(stream)):
        if start is None or frame.pts is None:
            yield position, frame
        else:
            yield int(round((float(frame.pts * stream.time_base) - start) * info.fps)), frame


def _fill_missing(got: dict[int, np.ndarray], wanted: list[int], last: int | None) -> dict[int, np.ndarray]:
    """A container that holds fewer frames than it declared: repeat the last decoded frame."""
    if last is None:
        raise VideoError("no frame could be decoded")
    for index in wanted:
        if index not in got:
            got[index] = got[max(k for k in got if k <= index)] if any(k <= index for k in got) else got[last]
    return got


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4", b_frames: int = 0) -> Path:
    """Write uint8 (T, H, W, 3) frames as a video file (used by tests and synthetic data); MPEG-4
    Part 2 with `b_frames` consecutive B-frames at most, as UCF101's DivX/XviD files have."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1  # one encoder thread, and frames converted here (`_yuv_frame`)
        if codec == "mpeg4":
            stream.options = {"qscale": "3"}
            stream.codec_context.max_b_frames = b_frames
            stream.codec_context.gop_size = 12
        elif codec == "libx264":
            # lossless: flat areas stay flat, and the same frames give the same bytes (crf encoding of
            # these small synthetic clips varied from run to run, even on one thread)
            stream.options = {"qp": "0", "preset": "fast"}
        for array in frames:
            for packet in stream.encode(_yuv_frame(array)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _yuv_frame(rgb: np.ndarray):
    """A yuv420p frame (BT.601, limited range, as FFmpeg's default conversion) computed here in numpy.

    Left to swscale, the same RGB frame converted in two processes gave frames a level apart in a
    few % of the synthetic videos (its SIMD paths differ with the process's memory layout), and
    then different bytes; this conversion is exact integer arithmetic on every machine.
    """
    import av

    height, width = rgb.shape[:2]
    if height % 2 or width % 2:  # 4:2:0 needs even sides; leave odd sizes to FFmpeg
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    r, g, b = (rgb[..., k].astype(np.int32) for k in range(3))
    y = (66 * r + 129 * g + 25 * b + 128 >> 8) + 16
    u = (-38 * r - 74 * g + 112 * b + 128 >> 8) + 128
    v = (112 * r - 94 * g - 18 * b + 128 >> 8) + 128
    def half(c):  # the mean of each 2 x 2 block, rounded
        return (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2] + 2) >> 2
    planes = np.concatenate([y.reshape(-1), half(u).reshape(-1), half(v).reshape(-1)])
    return av.VideoFrame.from_ndarray(planes.astype(np.uint8).reshape(height * 3 // 2, width), format="yuv420p")
