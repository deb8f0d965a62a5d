"""Decoding stored video with PyAV: metadata, rotation, variable frame rate, sampling, failures, limits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.video.decode import VideoCancelled, VideoError, probe, sample_frames, sha256_of

from . import videos as v

EXPECTED_FORMAT = {
    "mp4": "QuickTime / MOV",
    "mov": "QuickTime / MOV",
    "mkv": "Matroska / WebM",
    "webm": "Matroska / WebM",
    "avi": "AVI (Audio Video Interleaved)",
}


@pytest.mark.parametrize("ext", sorted(v.FORMATS))
def test_every_format_opens_with_its_metadata(formats: dict[str, v.Made], ext: str) -> None:
    made = formats[ext]
    meta = probe(made.path)
    assert meta.codec == v.DECODER[made.codec]
    assert meta.format == EXPECTED_FORMAT[ext]
    assert meta.frame_rate == pytest.approx(made.fps)
    assert (meta.frame_width, meta.frame_height) == (made.width, made.height)
    assert meta.rotation == 0
    assert abs(meta.duration_millis - made.duration * 1000) <= 1000 / made.fps
    assert meta.size_bytes == made.path.stat().st_size
    frames = list(sample_frames(made.path, made.fps))
    assert [f.timestamp_millis for f in frames] == made.timestamps_millis
    assert [f.index for f in frames] == list(range(made.frames))
    assert all(f.rgb.shape == (made.height, made.width, 3) and f.rgb.dtype == np.uint8 for f in frames)


def test_rotation_metadata_turns_a_landscape_stream_to_portrait(rotated: v.Made) -> None:
    meta = probe(rotated.path)
    assert meta.rotation == 90
    assert (meta.frame_width, meta.frame_height) == (rotated.height, rotated.width)  # 240 x 320
    frame = next(iter(sample_frames(rotated.path, 5)))
    assert frame.rgb.shape == (rotated.width, rotated.height, 3)

    # turned clockwise: the red square of the stored frame's top-left corner is at the top-right, the
    # white bar of its bottom-left edge along the top-left, the bottom is background
    def corner(rows: slice, cols: slice) -> np.ndarray:
        return np.asarray(frame.rgb[rows, cols].reshape(-1, 3).mean(axis=0))

    red, white = corner(slice(0, 20), slice(-20, None)), corner(slice(0, 5), slice(0, 20))
    assert red[0] > 180 and red[1] < 60
    assert white.min() > 200
    for bottom in (corner(slice(-20, None), slice(0, 20)), corner(slice(-20, None), slice(-20, None))):
        assert np.abs(bottom - v.BACKGROUND).max() < 25


@pytest.mark.parametrize("clockwise", [180, 270])
def test_every_rotation_is_applied(video_dir: Path, clockwise: int) -> None:
    made = v.make_rotated(video_dir / f"rotated{clockwise}.mp4", clockwise)
    meta = probe(made.path)
    assert meta.rotation == clockwise
    frames = list(sample_frames(made.path, made.fps))
    for k, frame in enumerate(frames):
        stored = v.pattern(made.width, made.height, k / (made.frames - 1))
        expected = np.rot90(stored, k=-clockwise // 90)
        assert frame.rgb.shape == expected.shape == (meta.frame_height, meta.frame_width, 3)
        assert np.abs(frame.rgb.astype(int) - expected).mean() < 6


def test_variable_frame_rate_timestamps_are_the_pts_written(vfr: v.Made) -> None:
    every = [f.timestamp_millis for f in sample_frames(vfr.path, 1000)]
    assert len(every) == len(vfr.timestamps_millis)
    assert all(abs(a - b) <= 1 for a, b in zip(every, vfr.timestamps_millis, strict=True))


@pytest.mark.parametrize("fps", [1.0, 2.5, 5.0])
def test_sampling_takes_frames_at_most_every_interval_by_time(
    vfr: v.Made, people: v.Made, fps: float
) -> None:
    for made in (vfr, people):
        taken = [f.timestamp_millis for f in sample_frames(made.path, fps)]
        assert taken[0] == 0
        assert all(b - a >= 1000 / fps - 1 for a, b in itertools.pairwise(taken))
        # and no longer gap than needed: a frame is skipped only when it came too early
        written = made.timestamps_millis
        for a, b in itertools.pairwise(taken):
            between = [t for t in written if a < t < b]
            assert all(t - a < 1000 / fps - 1 for t in between)
        assert taken == [t for t in written if t in taken]


def test_constant_rate_sampling_picks_every_other_frame(people: v.Made) -> None:
    frames = list(sample_frames(people.path, 5))
    assert [f.index for f in frames] == list(range(0, people.frames, 2))
    assert [f.timestamp_millis for f in frames] == [i * 200 for i in range(people.frames // 2)]


def test_truncated_file_fails_after_yielding_the_good_frames(truncated: tuple[v.Made, Path]) -> None:
    whole, cut = truncated
    got: list[int] = []
    with pytest.raises(VideoError, match=r"truncated or corrupt at \d+\.\d s|truncated at \d+\.\d s") as err:
        for frame in sample_frames(cut, whole.fps):
            got.append(frame.timestamp_millis)
    assert 0 < len(got) < whole.frames
    assert got == whole.timestamps_millis[: len(got)]
    assert f"{got[-1] / 1000:.1f} s" in str(err.value)
    assert isinstance(err.value, InvalidParameter)


def test_a_text_file_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(VideoError, match="not a video"):
        probe(fake)
    with pytest.raises(VideoError, match="not a video"):
        list(sample_frames(fake, 5))


def test_a_missing_file_and_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="does not exist"):
        probe(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError):
        probe(tmp_path / "empty.mp4")


def test_limits_give_clear_errors(people: v.Made) -> None:
    size = people.path.stat().st_size
    with pytest.raises(VideoError, match=f"{size:,} bytes; the limit is 1,000"):
        probe(people.path, Settings(video_max_bytes=1000))
    with pytest.raises(VideoError, match=r"lasts 5\.0 s; the limit is 4 s"):
        probe(people.path, Settings(video_max_seconds=4))
    with pytest.raises(VideoError, match="640 x 360 = 230,400 pixels exceed the limit of 230,399 pixels"):
        probe(people.path, Settings(video_max_pixels=640 * 360 - 1))
    with pytest.raises(VideoError, match="limit"):
        next(iter(sample_frames(people.path, 5, Settings(video_max_seconds=4))))
    meta = probe(people.path, Settings(video_max_bytes=size, video_max_seconds=5, video_max_pixels=640 * 360))
    assert meta.duration_millis == 5000


def test_sampling_rate_must_be_positive(people: v.Made) -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(InvalidParameter):
            next(iter(sample_frames(people.path, bad)))


def test_cancelled_stops_decoding(people: v.Made) -> None:
    seen: list[int] = []
    with pytest.raises(VideoCancelled):
        for frame in sample_frames(people.path, 5, cancelled=lambda: len(seen) >= 3):
            seen.append(frame.index)
    assert len(seen) == 3


def test_sha256_of_names_the_file(people: v.Made) -> None:
    import hashlib

    assert sha256_of(people.path) == hashlib.sha256(people.path.read_bytes()).hexdigest()


def test_a_sound_track_longer_than_the_picture_is_not_truncation(video_dir: Path) -> None:
    made = v.make_with_audio(video_dir / "with_audio.mkv", video_seconds=1.0, audio_seconds=3.0)
    meta = probe(made.path)
    assert meta.duration_millis == 1000
    assert [f.timestamp_millis for f in sample_frames(made.path, made.fps)] == made.timestamps_millis


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_garbled_bytes_give_frames_or_a_video_error_never_another_error(
    formats: dict[str, v.Made], video_dir: Path, ext: str
) -> None:
    for seed in range(3):
        bad = v.garble(formats[ext].path, video_dir / f"garbled{seed}.{ext}", seed=seed)
        try:
            frames = list(sample_frames(bad, 5))
        except VideoError as exc:
            assert exc.message
        else:
            assert all(f.rgb.ndim == 3 for f in frames)
