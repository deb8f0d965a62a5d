"""Test videos, generated once per session into a temporary folder from the public-domain portraits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from . import videos as v

#: obama from 1.0 s to 3.0 s, moving up and right and growing; biden from 2.0 s to 4.0 s, drifting
#: left. 5 s of 640 x 360 at 10 fps.
PEOPLE = [
    v.Appearance("obama", 1.0, 3.0, at=(0.2, 0.5), to=(0.4, 0.45), size=0.35, grow=0.6),
    v.Appearance("biden", 2.0, 4.0, at=(0.8, 0.55), to=(0.72, 0.5), size=0.45, grow=0.45),
]


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def faces(fr_images: Path) -> dict[str, np.ndarray]:
    return v.portraits(fr_images)


@pytest.fixture(scope="session")
def formats(video_dir: Path) -> dict[str, v.Made]:
    """One second of a face-free pattern in each container: mp4, mov, mkv, webm, avi."""
    return {ext: v.make_pattern(video_dir / f"pattern.{ext}", ext=ext) for ext in v.FORMATS}


@pytest.fixture(scope="session")
def people(video_dir: Path, faces: dict[str, np.ndarray]) -> v.Made:
    return v.make_people(video_dir / "people.mp4", faces, PEOPLE, seconds=5.0)


@pytest.fixture(scope="session")
def no_faces(video_dir: Path) -> v.Made:
    return v.make_pattern(video_dir / "empty.mp4", ext="mp4", seconds=3.0)


@pytest.fixture(scope="session")
def rotated(video_dir: Path) -> v.Made:
    return v.make_rotated(video_dir / "rotated.mp4", 90)


@pytest.fixture(scope="session")
def vfr(video_dir: Path) -> v.Made:
    return v.make_vfr(video_dir / "vfr.mp4")


@pytest.fixture(scope="session")
def truncated(video_dir: Path) -> tuple[v.Made, Path]:
    """A 3 s MP4 (index first, as streaming MP4s are) and its first 60% of bytes."""
    whole = v.make_pattern(video_dir / "whole.mp4", ext="mp4", seconds=3.0, faststart=True)
    return whole, v.truncate(whole.path, video_dir / "truncated.mp4")
