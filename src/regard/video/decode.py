"""Stored video decoded with PyAV (FFmpeg): metadata, limits, and frames sampled by presentation time.

Every failure of the video itself (not a video, a codec FFmpeg cannot decode, a truncated or corrupt
stream, a file over the limits of :class:`~regard.config.Settings`) is a :class:`VideoError` with a
message a person can act on; a job shows it as its StatusMessage. FFmpeg's own errors never escape.

Rotation: phones store portrait video as a landscape stream with a display matrix (the ``rotate``
tag). Frames come out already turned for display, and the metadata's width and height are those of
the displayed frame, as a viewer shows it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.stream
import numpy as np

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.types import RGBImage

#: A stream that ends more than this many seconds (and more than two frames) before the duration
#: its container declares for the video stream is reported as truncated.
TRUNCATION_SLACK_SECONDS = 0.5


class VideoError(InvalidParameter):
    """The video cannot be used: not a video, undecodable, truncated or corrupt, or over a limit."""


class VideoCancelled(Exception):
    """Work on a video stopped because its caller asked (``cancelled()`` returned True).

    Not a :class:`~regard.errors.RegardError`: a cancelled job did not fail.
    """


@dataclass(frozen=True)
class VideoMetadata:
    """What Rekognition Video reports as VideoMetadata, plus the rotation applied."""

    codec: str  # FFmpeg's decoder name: "h264", "vp9", "mpeg4", ...
    format: str  # the container's long name, as Rekognition reports it: "QuickTime / MOV", ...
    duration_millis: int
    frame_rate: float  # average frames per second (variable frame rate: the mean)
    frame_width: int  # of the displayed (rotated) frame
    frame_height: int
    rotation: int  # clockwise degrees applied to get the display orientation (0/90/180/270)
    format_name: str = ""  # FFmpeg's short name of the container ("mov,mp4,m4a,3gp,3g2,mj2", ...)
    size_bytes: int = 0
    #: whether ``duration_millis`` is the video stream's own (else the container's, which an audio
    #: track may lengthen): only then does a stream that ends early count as truncated
    video_duration_known: bool = True


@dataclass(frozen=True)
class Frame:
    """One decoded frame, ready for the face engine."""

    index: int  # index of the decoded frame in the stream (0-based)
    timestamp_millis: int  # presentation time from the stream start
    rgb: RGBImage  # H x W x 3 uint8, already rotated for display


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file, hex: how audit records name a video."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings.from_env()


def _open(path: Path) -> Any:
    """The container at ``path`` opened for reading, with its video stream; VideoError otherwise."""
    if not path.is_file():
        raise VideoError(f"video file {path} does not exist or is not a file")
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(f"not a video regard can read: {_reason(exc)}") from exc
    if _video_stream(container) is None:
        container.close()
        raise VideoError("the file holds no video stream")
    return container


def _video_stream(container: Any) -> Any:
    """The picture: the first video stream that is not a still (cover art); None if there is none."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError):
        return str(exc.strerror or exc)
    return str(exc)


def _clockwise(frame: Any) -> int:
    """Clockwise degrees (0/90/180/270) that turn ``frame`` to its display orientation."""
    try:
        ccw = int(frame.rotation)  # counter-clockwise, from the display matrix; 0 without one
    except (AttributeError, ValueError, TypeError):
        return 0
    return (-round(ccw / 90) * 90) % 360


def _rotate(rgb: RGBImage, clockwise: int) -> RGBImage:
    if clockwise == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=-(clockwise // 90)))


def _start(stream: Any) -> int:
    return int(stream.start_time) if stream.start_time is not None else 0


def _stream_seconds(stream: Any) -> float | None:
    """The video stream's own duration: its header's, or Matroska's DURATION tag; None if unknown."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = str(tag).split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def _duration_seconds(container: Any, stream: Any) -> tuple[float, bool]:
    """The video's duration and whether it is the video stream's own (not the container's, which
    may be an audio track's, longer than the picture)."""
    own = _stream_seconds(stream)
    if own is not None:
        return own, True
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base, len(container.streams) == 1
    return 0.0, False


def _frame_rate(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe(path: Path, settings: Settings | None = None) -> VideoMetadata:
    """The video's metadata, after checking it against the settings' limits.

    Decodes the first frame (to learn the rotation and to be sure the stream decodes at all).
    Raises :class:`VideoError`: not a video, too large, too long, too many pixels, no decodable frame.
    """
    path = Path(path)
    cfg = _settings(settings)
    size = path.stat().st_size if path.is_file() else 0
    if size > cfg.video_max_bytes:
        raise VideoError(f"the video has {size:,} bytes; the limit is {cfg.video_max_bytes:,}")
    container = _open(path)
    try:
        stream = _video_stream(container)
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width * height > cfg.video_max_pixels:
            raise VideoError(
                f"frames of {width} x {height} = {width * height:,} pixels exceed the limit of "
                f"{cfg.video_max_pixels:,} pixels"
            )
        duration, own = _duration_seconds(container, stream)
        if duration > cfg.video_max_seconds:
            raise VideoError(f"the video lasts {duration:,.1f} s; the limit is {cfg.video_max_seconds:,} s")
        first = _first_frame(container, stream)
        clockwise = _clockwise(first)
        width, height = int(first.width), int(first.height)
        if width * height > cfg.video_max_pixels:
            raise VideoError(
                f"frames of {width} x {height} = {width * height:,} pixels exceed the limit of "
                f"{cfg.video_max_pixels:,} pixels"
            )
        if clockwise in (90, 270):
            width, height = height, width
        return VideoMetadata(
            codec=str(ctx.name),
            format=str(container.format.long_name),
            duration_millis=round(duration * 1000),
            frame_rate=_frame_rate(stream),
            frame_width=width,
            frame_height=height,
            rotation=clockwise,
            format_name=str(container.format.name),
            size_bytes=size,
            video_duration_known=own,
        )
    finally:
        container.close()


def _first_frame(container: Any, stream: Any) -> Any:
    try:
        for frame in container.decode(stream):
            return frame
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"the video stream cannot be decoded: {_reason(exc)}") from exc
    raise VideoError("the video stream holds no decodable frame")


def sample_frames(
    path: Path,
    fps: float,
    settings: Settings | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[Frame]:
    """Frames at most every ``1/fps`` seconds of presentation time, decoded once in one pass.

    A frame is taken when at least ``1/fps`` seconds have passed since the last one taken (the first
    frame is always taken), so variable frame rate and dropped frames are handled by their
    timestamps, not by counting. Every frame is decoded (inter-frame codecs need them all); only
    those taken are converted to RGB. The limits of :func:`probe` apply.

    A truncated or corrupt stream raises ``VideoError("... at 2.3 s: ...")`` after yielding the
    frames it could decode. ``cancelled()`` is asked before each frame; True raises
    :class:`VideoCancelled`.
    """
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise InvalidParameter(
            f"the sampling rate must be a positive number of frames per second, not {fps!r}"
        )
    path = Path(path)
    meta = probe(path, settings)
    interval = Fraction(1) / Fraction(fps).limit_denominator(1_000_000)
    container = _open(path)
    try:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        start = _start(stream)
        time_base = stream.time_base or Fraction(1, 90_000)
        frame_step = (
            Fraction(1) / Fraction(meta.frame_rate).limit_denominator(1_000_000) if meta.frame_rate else 0
        )
        last_taken: Fraction | None = None
        seen = Fraction(0)
        index = -1
        frames = container.decode(stream)
        while True:
            if cancelled is not None and cancelled():
                raise VideoCancelled(f"cancelled at {float(seen):.1f} s")
            try:
                frame = next(frames)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                raise VideoError(
                    f"the video is truncated or corrupt at {float(seen):.1f} s: {_reason(exc)}"
                ) from exc
            index += 1
            if frame.pts is not None:  # before the start (an edit list's pre-roll) counts as the start
                when = max(Fraction(0), (int(frame.pts) - start) * time_base)
            else:
                when = seen + frame_step if index else Fraction(0)
            seen = max(seen, when)
            if last_taken is not None and when - last_taken < interval:
                continue
            last_taken = when
            clockwise = _clockwise(frame)
            rgb = _rotate(frame.to_ndarray(format="rgb24"), clockwise)
            yield Frame(index=index, timestamp_millis=round(when * 1000), rgb=rgb)
        declared = meta.duration_millis / 1000
        last_frame_end = float(seen) + float(frame_step)
        slack = max(TRUNCATION_SLACK_SECONDS, 2 * float(frame_step))
        if meta.video_duration_known and declared - last_frame_end > slack:
            raise VideoError(
                f"the video is truncated at {float(seen):.1f} s: its container declares {declared:.1f} s"
            )
    finally:
        container.close()
