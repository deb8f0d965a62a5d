"""Seconds of stored video that regard.video.analyze gets through per second of CPU.

Generates 720p and 1080p H.264 videos (libx264 preset veryfast: CABAC and B-frames, as cameras and
phones write them; 30 fps; light sensor noise so the bitrate is not that of a still picture) with 0,
1, 2 and 4 of the public-domain portraits moving across the frame, then times

- ``decode``: sampling alone (every frame decoded, the sampled ones converted to RGB);
- ``analyze``: the whole analysis (decode, detection, FaceDetail analysis, tracking, templates).

CPU time is ``time.process_time()`` of this process (every thread of it: FFmpeg's decoding threads
and onnxruntime's inference threads included), so "video s / CPU s" >= 1 means real time on one
core; wall time is printed too (two cores here, shared: read it as an upper bound). Each figure is
the best of ``--reps`` runs. Generating the videos is not timed.

Usage: .venv/bin/python bench/bench_video.py [--seconds 6] [--fps 5] [--reps 2] [--images DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
from PIL import Image

from regard.config import Settings
from regard.face.engine import Engine
from regard.video.analyze import analyze
from regard.video.decode import probe, sample_frames

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path(os.environ.get("REGARD_TEST_CACHE", ROOT / ".cache" / "test-data")) / "face_recognition_images"
NAMES = ("obama", "biden", "obama2", "obama3")
T = TypeVar("T")
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def _portraits(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / f"{n}.jpg").convert("RGB")) for n in NAMES]


def make_video(path: Path, width: int, height: int, faces: list[np.ndarray], seconds: float) -> None:
    """``len(faces)`` portraits, each in its own quarter of the width, half the frame high and
    drifting; a textured background with a little noise per frame."""
    rng = np.random.default_rng(0)
    base = np.asarray(
        Image.fromarray(rng.integers(60, 160, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        ),
        dtype=np.int16,
    )
    h = height // 2
    smalls = [np.asarray(Image.fromarray(f).resize((round(f.shape[1] * h / f.shape[0]), h))) for f in faces]
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=Fraction(30), options={"preset": "veryfast", "crf": "23"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    n = round(seconds * 30)
    for i in range(n):
        frame = base + rng.integers(-3, 4, (height, width, 1), dtype=np.int16)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        for k, small in enumerate(smalls):
            sh, sw = small.shape[:2]
            x = round((k + 0.1 + 0.5 * i / n) * width / 4 - sw / 4)
            y = round(height / 4 + (height / 8) * np.sin(i / 20 + k))
            x, y = max(0, min(width - sw, x)), max(0, min(height - sh, y))
            frame[y : y + sh, x : x + sw] = small
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _best(reps: int, run: Callable[[], T]) -> tuple[float, float, T]:
    """CPU and wall seconds of the fastest of ``reps`` runs, and the last run's result."""
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(max(1, reps)):
        c, w = time.process_time(), time.perf_counter()
        result = run()
        best_cpu = min(best_cpu, time.process_time() - c)
        best_wall = min(best_wall, time.perf_counter() - w)
    return best_cpu, best_wall, result


def _decode(path: Path, fps: float) -> int:
    return sum(1 for _ in sample_frames(path, fps))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each generated video")
    parser.add_argument("--fps", type=float, default=None, help="sampling rate (default: the settings')")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--faces", default="0,1,2,4")
    args = parser.parse_args()
    settings = Settings.from_env()
    fps = settings.video_sample_fps if args.fps is None else args.fps
    engine = Engine(settings)
    portraits = _portraits(args.images)
    warm = np.zeros((720, 1280, 3), np.uint8)
    warm[100:400, 100:340] = np.asarray(Image.fromarray(portraits[0]).resize((240, 300)))
    for d in engine.detect(warm):
        engine.analyze(warm, d)
        engine.embed(warm, [d])
    print(f"sampling at {fps:g} fps; detector {engine.settings.detector}; {os.cpu_count()} CPUs")
    print(
        "| video | faces/frame | decode: video s / CPU s | analyze: CPU s | video s / CPU s | "
        "video s / wall s | detections | templates |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = SIZES[size]
            for count in (int(c) for c in args.faces.split(",")):
                path = Path(tmp) / f"{size}-{count}.mp4"
                make_video(path, width, height, portraits[:count], args.seconds)
                seconds = probe(path).duration_millis / 1000
                dcpu, _, _ = _best(args.reps, partial(_decode, path, fps))
                cpu, wall, result = _best(args.reps, partial(analyze, engine, path, fps=fps))
                print(
                    f"| {size} | {count} | {seconds / dcpu:.1f} | {cpu:.1f} | {seconds / cpu:.2f} | "
                    f"{seconds / wall:.2f} | {result.detections} | {result.embeddings_computed} |",
                    flush=True,
                )
                path.unlink()


if __name__ == "__main__":
    main()
