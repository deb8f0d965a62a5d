"""Test videos generated with PyAV from the public-domain portraits (no video is committed).

Each maker writes one small file and returns what a test needs to know about it: who appears when
and where, the timestamps written, the rotation set. Nothing here is a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

BACKGROUND = (96, 104, 112)


@dataclass(frozen=True)
class Appearance:
    """``name``'s portrait on screen from ``start`` to ``end`` seconds (end excluded), its centre
    moving linearly from ``at`` to ``to`` (ratios of the frame) and its height from ``size`` to
    ``grow`` (ratios of the frame's height)."""

    name: str
    start: float
    end: float
    at: tuple[float, float]
    to: tuple[float, float]
    size: float
    grow: float


@dataclass(frozen=True)
class Made:
    path: Path
    codec: str
    fps: float
    width: int  # of the stored frames
    height: int
    frames: int
    timestamps_millis: list[int] = field(default_factory=list)
    appearances: list[Appearance] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.frames / self.fps


#: container format, codec, pixel format, encoder options by file extension
FORMATS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "mp4": ("mp4", "libx264", "yuv420p", {"preset": "ultrafast"}),
    "mov": ("mov", "libx264", "yuv420p", {"preset": "ultrafast"}),
    "mkv": ("matroska", "libx264", "yuv420p", {"preset": "ultrafast"}),
    "webm": ("webm", "libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}),
    "avi": ("avi", "mpeg4", "yuv420p", {"qscale": "3"}),
}
#: FFmpeg's decoder name for each encoder
DECODER = {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4"}


#: Head-and-shoulders crop of each portrait (left, top, right, bottom as ratios), around the face
#: MTCNN finds in it, so that a face fills half the picture as in a close shot.
CROPS = {
    "obama": (0.3, 0.0, 0.8, 0.55),
    "obama2": (0.15, 0.08, 0.9, 0.7),
    "obama3": (0.38, 0.05, 0.71, 0.35),
    "biden": (0.35, 0.02, 0.82, 0.36),
}


def portraits(folder: Path, *, crop: bool = True) -> dict[str, np.ndarray]:
    """The portraits of ``folder`` (obama, obama2, obama3, biden) as RGB arrays, cropped to head and
    shoulders (:data:`CROPS`) unless ``crop`` is False."""
    out = {}
    for path in sorted(folder.glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        if crop and path.stem in CROPS:
            left, top, right, bottom = CROPS[path.stem]
            w, h = image.size
            image = image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
        out[path.stem] = np.asarray(image)
    return out


def _open(path: Path, ext: str, fps: Fraction, width: int, height: int, **kw: Any) -> tuple[Any, Any]:
    fmt, codec, pix, options = FORMATS[ext]
    movflags = {"movflags": "+faststart"} if ext in ("mp4", "mov") and kw.pop("faststart", False) else {}
    container = av.open(str(path), mode="w", format=fmt, options=movflags)
    stream = container.add_stream(codec, rate=fps, options=dict(options))
    stream.width, stream.height, stream.pix_fmt = width, height, pix
    return container, stream


def _write(container: Any, stream: Any, frame: np.ndarray, pts: int | None = None) -> None:
    vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
    if pts is not None:
        vf.pts = pts
        vf.time_base = stream.codec_context.time_base
    for packet in stream.encode(vf):
        container.mux(packet)


def _close(container: Any, stream: Any) -> None:
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def paste(canvas: np.ndarray, portrait: np.ndarray, centre: tuple[float, float], height: float) -> None:
    """``portrait`` scaled to ``height`` ratios of the canvas's height, centred at ``centre``."""
    ch, cw = canvas.shape[:2]
    ph, pw = portrait.shape[:2]
    h = max(8, round(height * ch))
    w = max(8, round(pw * h / ph))
    small = np.asarray(Image.fromarray(portrait).resize((w, h), Image.Resampling.BILINEAR))
    x0, y0 = round(centre[0] * cw - w / 2), round(centre[1] * ch - h / 2)
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(cw, x0 + w), min(ch, y0 + h)
    if ax1 > ax0 and ay1 > ay0:
        canvas[ay0:ay1, ax0:ax1] = small[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]


def scene(
    width: int, height: int, t: float, faces: dict[str, np.ndarray], appearances: Sequence[Appearance]
) -> np.ndarray:
    """The frame at ``t`` seconds: a plain background with whoever is on screen then."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for a in appearances:
        if a.start <= t < a.end:
            f = (t - a.start) / max(a.end - a.start, 1e-9)
            centre = (a.at[0] + f * (a.to[0] - a.at[0]), a.at[1] + f * (a.to[1] - a.at[1]))
            paste(canvas, faces[a.name], centre, a.size + f * (a.grow - a.size))
    return canvas


def make_people(
    path: Path,
    faces: dict[str, np.ndarray],
    appearances: Sequence[Appearance],
    *,
    seconds: float,
    fps: int = 10,
    width: int = 640,
    height: int = 360,
    ext: str = "mp4",
) -> Made:
    """A constant-frame-rate video of ``appearances`` on a plain background."""
    container, stream = _open(path, ext, Fraction(fps), width, height)
    n = round(seconds * fps)
    for i in range(n):
        _write(container, stream, scene(width, height, i / fps, faces, appearances))
    _close(container, stream)
    return Made(
        path,
        FORMATS[ext][1],
        fps,
        width,
        height,
        n,
        [round(i * 1000 / fps) for i in range(n)],
        list(appearances),
    )


def make_pattern(
    path: Path,
    *,
    ext: str,
    seconds: float = 1.0,
    fps: int = 10,
    width: int = 320,
    height: int = 240,
    faststart: bool = False,
) -> Made:
    """A face-free moving pattern: a red square marking the stored frame's top-left corner and a
    white bar moving left to right."""
    container, stream = _open(path, ext, Fraction(fps), width, height, faststart=faststart)
    n = round(seconds * fps)
    for i in range(n):
        _write(container, stream, pattern(width, height, i / max(n - 1, 1)))
    _close(container, stream)
    return Made(path, FORMATS[ext][1], fps, width, height, n, [round(i * 1000 / fps) for i in range(n)])


def pattern(width: int, height: int, f: float) -> np.ndarray:
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUND
    frame[: height // 4, : width // 4] = (230, 20, 20)
    x = round(f * (width - 10))
    frame[height // 2 :, x : x + 10] = 255
    return frame


def make_rotated(path: Path, clockwise: int = 90, *, width: int = 320, height: int = 240) -> Made:
    """A landscape stream whose display matrix turns it ``clockwise`` degrees (a phone's portrait
    video carries ``rotate=90``): the decoder must rotate it."""
    container, stream = _open(path, "mp4", Fraction(10), width, height)
    stream.set_display_rotation(-clockwise)  # PyAV takes counter-clockwise degrees
    n = 10
    for i in range(n):
        _write(container, stream, pattern(width, height, i / (n - 1)))
    _close(container, stream)
    return Made(path, "libx264", 10, width, height, n, [i * 100 for i in range(n)])


#: Presentation times (ms) of the variable-frame-rate video: irregular gaps, bursts and a pause.
VFR_MILLIS = [0, 40, 80, 200, 230, 260, 500, 510, 520, 530, 900, 1000, 1033, 1400, 1450, 1900, 2000]


def make_vfr(path: Path, millis: Sequence[int] = VFR_MILLIS, *, ext: str = "mp4") -> Made:
    """Frames at exactly the presentation times ``millis`` (time base 1/1000)."""
    fmt, codec, pix, options = FORMATS[ext]
    container = av.open(str(path), mode="w", format=fmt)
    stream = container.add_stream(codec, rate=Fraction(25), options=dict(options))
    stream.width, stream.height, stream.pix_fmt = 320, 240, pix
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.time_base = Fraction(1, 1000)
    end = max(millis[-1], 1)
    for ms in millis:
        _write(container, stream, pattern(320, 240, ms / end), pts=ms)
    _close(container, stream)
    return Made(path, codec, len(millis) / (end / 1000), 320, 240, len(millis), list(millis))


def truncate(source: Path, target: Path, keep: float = 0.6) -> Path:
    """The first ``keep`` of ``source``'s bytes."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def make_with_audio(path: Path, *, video_seconds: float = 1.0, audio_seconds: float = 3.0) -> Made:
    """A Matroska file whose sound track outlasts its picture (as a clip's closing music does)."""
    container, stream = _open(path, "mkv", Fraction(10), 320, 240)
    audio = container.add_stream("pcm_s16le", rate=8000)
    n = round(video_seconds * 10)
    for i in range(n):
        _write(container, stream, pattern(320, 240, i / max(n - 1, 1)))
    for packet in stream.encode():
        container.mux(packet)
    for k in range(round(audio_seconds * 10)):
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        sound.sample_rate, sound.pts = 8000, k * 800
        for packet in audio.encode(sound):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()
    return Made(path, "libx264", 10, 320, 240, n, [i * 100 for i in range(n)])


def garble(source: Path, target: Path, *, start: float = 0.3, end: float = 0.7, seed: int = 0) -> Path:
    """``source`` with random bytes written over the middle (from ``start`` to ``end`` of its size)."""
    data = bytearray(source.read_bytes())
    lo, hi = int(len(data) * start), int(len(data) * end)
    data[lo:hi] = np.random.default_rng(seed).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target
