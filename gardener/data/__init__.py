"""Video classification data: sources (folders, UCF101, HMDB51, manifests), PyAV decoding, clips."""
from .clips import ClipOptions, ClipSpec, EpochSampler, EvalClips, TrainClips, probe_all
from .sources import VideoSplit, read_split
from .video import VideoError, VideoInfo, frame_cache, probe, read_frames, write_video

__all__ = ["ClipOptions", "ClipSpec", "EpochSampler", "EvalClips", "TrainClips", "VideoError", "VideoInfo", "VideoSplit",
           "frame_cache", "probe", "probe_all", "read_frames", "read_split", "write_video"]
