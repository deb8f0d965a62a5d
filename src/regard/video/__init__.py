"""Faces in stored video: decoding (PyAV), sampling, tracking and per-timestamp results.

Stored video only: regard does not identify people in live streams (AI Act art. 5).
"""

from __future__ import annotations

from regard.video.analyze import TimedFace, VideoAnalysis, analyze, track_templates
from regard.video.decode import (
    Frame,
    VideoCancelled,
    VideoError,
    VideoMetadata,
    probe,
    sample_frames,
    sha256_of,
)
from regard.video.track import Track, Tracker, TrackerParams

__all__ = [
    "Frame",
    "TimedFace",
    "Track",
    "Tracker",
    "TrackerParams",
    "VideoAnalysis",
    "VideoCancelled",
    "VideoError",
    "VideoMetadata",
    "analyze",
    "probe",
    "sample_frames",
    "sha256_of",
    "track_templates",
]
