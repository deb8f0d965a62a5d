"""Faces in a stored video: sample, detect, analyse, track, and report per timestamp as Rekognition does.

Per sampled frame the engine's detector runs alone (no fallback cascade: it costs seconds on a frame
without faces, and the next sample gets another chance), for faces of at least
``settings.video_min_face_size`` pixels, and each face gets the cheap analysis that
FaceDetail needs (landmarks, pose, quality, eyes and mouth). Templates are computed only when the
:class:`~regard.video.track.Tracker` asks: when a face starts a track, and then every few samples or
when its box changes a lot, so each person is embedded a few times per track, not every frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.face import imaging
from regard.face.engine import DEFAULT_DETECTOR, Engine
from regard.service.images import FaceDetail
from regard.types import Detection, Embeddings, RGBImage
from regard.video.decode import VideoCancelled, VideoError, VideoMetadata, probe, sample_frames, sha256_of
from regard.video.track import EmbedFn, Track, Tracker, TrackerParams

__all__ = [
    "TimedFace",
    "VideoAnalysis",
    "VideoCancelled",
    "VideoError",
    "analyze",
    "track_templates",
]


@dataclass(frozen=True)
class TimedFace:
    """One face in one sampled frame."""

    timestamp_millis: int
    frame_index: int
    track_id: int
    detail: FaceDetail  # box in ratios of the displayed frame


@dataclass
class VideoAnalysis:
    """Everything found in one video."""

    metadata: VideoMetadata
    sha256: str
    faces: list[TimedFace]  # by timestamp, then largest first
    tracks: list[Track]
    frames_sampled: int
    detections: int = 0  # faces detected over all samples (== len(faces))
    embeddings_computed: int = 0  # templates computed: far fewer than detections
    sample_fps: float = 0.0
    tracker: TrackerParams = field(default_factory=TrackerParams)


def _embedder(engine: Engine, rgb: RGBImage, dets: Sequence[Detection]) -> EmbedFn:
    """What the tracker calls for templates: the engine's embedder on the chosen faces of this frame."""

    def embed(indices: Sequence[int]) -> Embeddings:
        return engine.embed(rgb, [dets[i] for i in indices])

    return embed


def _detector_name(engine: Engine) -> str:
    chosen = engine.settings.detector
    return DEFAULT_DETECTOR if chosen == "default" else chosen


def analyze(
    engine: Engine,
    path: Path,
    *,
    fps: float | None = None,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    tracker: TrackerParams | None = None,
) -> VideoAnalysis:
    """Faces of the video at ``path``, sampled at ``fps`` (default ``settings.video_sample_fps``).

    ``settings`` default to the engine's. ``progress(millis done, duration millis)`` is called after
    each sample; ``cancelled()`` is asked before each decoded frame and True raises
    :class:`VideoCancelled`. A video over the limits, not a video, truncated or corrupt raises
    :class:`VideoError` (nothing partial is returned).
    """
    cfg = settings if settings is not None else engine.settings
    rate = cfg.video_sample_fps if fps is None else fps
    if not rate > 0:
        raise InvalidParameter(f"the sampling rate must be positive, not {rate!r}")
    path = Path(path)
    metadata = probe(path, cfg)
    digest = sha256_of(path)
    track = Tracker(tracker)
    detector = _detector_name(engine)
    faces: list[TimedFace] = []
    sampled = 0
    for frame in sample_frames(path, rate, cfg, cancelled):
        sampled += 1
        rgb = frame.rgb
        height, width = rgb.shape[:2]
        dets = engine.detect(rgb, detector=detector, min_face_size=cfg.video_min_face_size)

        ids, _ = track.update(frame.timestamp_millis, frame.index, dets, _embedder(engine, rgb, dets))
        for d, tid in zip(dets, ids, strict=True):
            faces.append(
                TimedFace(
                    frame.timestamp_millis,
                    frame.index,
                    tid,
                    FaceDetail.of(engine.analyze(rgb, d), width, height),
                )
            )
            t = track.tracks[tid]
            if t.best_frame_index == frame.index and t.boxes[-1][1] == frame.index:
                with contextlib.suppress(ValueError):  # a box wholly outside the frame: no crop
                    t.best_crop = imaging.face_crop_jpeg(rgb, d.box)
        if progress is not None:
            progress(min(frame.timestamp_millis, metadata.duration_millis), metadata.duration_millis)
    if progress is not None:
        progress(metadata.duration_millis, metadata.duration_millis)
    return VideoAnalysis(
        metadata=metadata,
        sha256=digest,
        faces=faces,
        tracks=list(track.tracks),
        frames_sampled=sampled,
        detections=len(faces),
        embeddings_computed=track.embeddings_computed,
        sample_fps=rate,
        tracker=track.params,
    )


def track_templates(analysis: VideoAnalysis) -> dict[int, list[np.ndarray]]:
    """Track id -> the templates to search the collection with (a few per track, best first)."""
    return {t.track_id: list(t.templates) for t in analysis.tracks if t.templates}
