"""Faces in a generated video: who appears when, in how many tracks, with how few embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regard.config import Settings
from regard.face.engine import Engine
from regard.video.analyze import VideoAnalysis, VideoCancelled, analyze, track_templates
from regard.video.decode import VideoError

from . import videos as v

FPS = 5.0
STEP = 1000 / FPS  # ms between samples


@pytest.fixture(scope="module")
def people_analysis(engine: Engine, people: v.Made) -> VideoAnalysis:
    return analyze(engine, people.path, fps=FPS)


def _spans(analysis: VideoAnalysis) -> dict[int, tuple[int, int]]:
    spans: dict[int, tuple[int, int]] = {}
    for f in analysis.faces:
        lo, hi = spans.get(f.track_id, (f.timestamp_millis, f.timestamp_millis))
        spans[f.track_id] = (min(lo, f.timestamp_millis), max(hi, f.timestamp_millis))
    return spans


def _who(engine: Engine, analysis: VideoAnalysis, faces: dict[str, np.ndarray]) -> dict[int, str]:
    """Track id -> the portrait (obama or biden) its templates are nearest to."""
    refs = {name: engine.probe(faces[name]) for name in ("obama", "biden")}
    out: dict[int, str] = {}
    for tid, templates in track_templates(analysis).items():
        dist = {
            name: min(float(np.linalg.norm(t - p.face.embedding)) for t in templates)
            for name, p in refs.items()
            if p is not None
        }
        out[tid] = min(dist, key=lambda n: dist[n])
    return out


def test_people_appear_at_their_timestamps_in_two_tracks(
    engine: Engine, people: v.Made, people_analysis: VideoAnalysis, faces: dict[str, np.ndarray]
) -> None:
    a = people_analysis
    assert a.frames_sampled == 25
    assert len(a.tracks) == 2
    who = _who(engine, a, faces)
    assert sorted(who.values()) == ["biden", "obama"]
    spans = _spans(a)
    expected = {"obama": (1000, 3000), "biden": (2000, 4000)}
    for tid, name in who.items():
        first, last = spans[tid]
        start, end = expected[name]
        assert abs(first - start) <= STEP, (name, first)
        assert abs(last - (end - STEP)) <= STEP, (name, last)  # the last sample before it leaves
        track = a.tracks[tid]
        assert (track.first_millis, track.last_millis) == (first, last)
    # nobody outside those spans
    assert all(1000 - STEP <= f.timestamp_millis < 4000 + STEP for f in a.faces)
    # both on screen at 2.4 s
    assert {f.track_id for f in a.faces if f.timestamp_millis == 2400} == set(who)


def test_embeddings_are_computed_far_fewer_times_than_detections(people_analysis: VideoAnalysis) -> None:
    a = people_analysis
    assert a.detections == len(a.faces) >= 16
    assert a.embeddings_computed == sum(t.embeddings for t in a.tracks)
    assert 2 <= a.embeddings_computed <= a.detections // 3
    for track in a.tracks:
        assert 1 <= len(track.templates) <= 3
        assert track.templates[0].shape == (128,)
        assert track.best_crop[:2] == b"\xff\xd8"  # a JPEG of the best face, for reviewers


def test_face_details_are_in_ratios_of_the_frame(people: v.Made, people_analysis: VideoAnalysis) -> None:
    a = people_analysis
    assert (a.metadata.frame_width, a.metadata.frame_height) == (people.width, people.height)
    for f in a.faces:
        box = f.detail.bounding_box
        assert 0 <= box.left < 1 and 0 <= box.top < 1 and 0 < box.width < 0.5 and 0 < box.height < 1
        assert f.frame_index == f.timestamp_millis * people.fps // 1000
        assert f.detail.confidence > 50
    # obama moves right and grows: his box's centre and width increase along the track
    obama = max(a.tracks, key=lambda t: t.boxes[-1][2].width)
    xs = [b.left + b.width / 2 for _, _, b in obama.boxes]
    ws = [b.width for _, _, b in obama.boxes]
    assert xs[-1] > xs[0] + 50 and ws[-1] > ws[0] * 1.3


def test_the_video_without_faces_yields_none(engine: Engine, no_faces: v.Made) -> None:
    a = analyze(engine, no_faces.path, fps=FPS)
    assert a.faces == [] and a.tracks == [] and a.embeddings_computed == 0
    assert a.frames_sampled == 15
    assert track_templates(a) == {}


def test_progress_reaches_the_duration(engine: Engine, no_faces: v.Made) -> None:
    calls: list[tuple[int, int]] = []
    analyze(engine, no_faces.path, fps=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3000, 3000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_cancelled_raises_video_cancelled(engine: Engine, no_faces: v.Made) -> None:
    asked = 0

    def cancelled() -> bool:
        nonlocal asked
        asked += 1
        return asked > 4

    with pytest.raises(VideoCancelled):
        analyze(engine, no_faces.path, fps=FPS, cancelled=cancelled)


def test_default_rate_comes_from_settings(engine: Engine, no_faces: v.Made) -> None:
    a = analyze(engine, no_faces.path, settings=Settings(video_sample_fps=1.0))
    assert a.sample_fps == 1.0 and a.frames_sampled == 3


def test_truncated_and_fake_videos_fail_with_video_error(
    engine: Engine, truncated: tuple[v.Made, Path], tmp_path: Path
) -> None:
    with pytest.raises(VideoError, match="truncated"):
        analyze(engine, truncated[1], fps=FPS)
    fake = tmp_path / "fake.mkv"
    fake.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 100)
    with pytest.raises(VideoError):
        analyze(engine, fake, fps=FPS)


def test_faces_under_the_video_minimum_are_not_reported(engine: Engine, people: v.Made) -> None:
    # the faces of the people video are 47 to 82 px wide
    a = analyze(engine, people.path, fps=1, settings=Settings(video_min_face_size=120))
    assert a.faces == [] and a.frames_sampled == 5
    b = analyze(engine, people.path, fps=1, settings=Settings(video_min_face_size=60))
    assert 0 < len(b.faces) < len(analyze(engine, people.path, fps=1).faces)


def test_video_settings_come_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "REGARD_VIDEO_SAMPLE_FPS": "2.5",
            "REGARD_VIDEO_MIN_FACE_SIZE": "60",
            "REGARD_VIDEO_MAX_SECONDS": "60",
        }
    )
    assert (s.video_sample_fps, s.video_min_face_size, s.video_max_seconds) == (2.5, 60, 60)
    assert Settings().video_sample_fps == 5.0 and Settings().video_max_bytes == 10 * 1024**3


def _celeba_pairs(engine: Engine, datasets: Path, wanted: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``wanted`` celeba_dev people, each with two photos showing one face: (subject, photo shown in
    the video, template of the other photo). Taken in manifest order among those whose two photos
    match clearly (distance under 0.45), so that the test is about the video, not the model."""
    import csv

    from PIL import Image

    folder = datasets / "recognition" / "celeba_dev"
    by_subject: dict[str, list[str]] = {}
    with (folder / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            by_subject.setdefault(row["subject"], []).append(row["path"])
    chosen: list[tuple[str, np.ndarray, np.ndarray]] = []
    for subject, paths in by_subject.items():
        if len(paths) < 2:
            continue
        shown, other = (np.asarray(Image.open(folder / p).convert("RGB")) for p in paths[:2])
        if len(engine.detect(shown)) != 1 or len(engine.detect(other)) != 1:
            continue
        a, b = engine.probe(shown), engine.probe(other)
        assert a is not None and b is not None
        if float(np.linalg.norm(a.face.embedding - b.face.embedding)) < 0.45:
            chosen.append((subject, shown, b.face.embedding))
        if len(chosen) == wanted:
            break
    return chosen


@pytest.mark.dataset
def test_people_of_the_dataset_are_found_in_their_tracks(
    engine: Engine, datasets: Path, video_dir: Path
) -> None:
    people = _celeba_pairs(engine, datasets, 2)
    assert len(people) == 2
    faces = {subject: shown for subject, shown, _ in people}
    (first, _, first_t), (second, _, second_t) = people
    appearances = [
        v.Appearance(first, 0.5, 2.5, at=(0.25, 0.5), to=(0.35, 0.5), size=0.8, grow=0.95),
        v.Appearance(second, 1.5, 3.5, at=(0.75, 0.5), to=(0.7, 0.45), size=0.8, grow=0.8),
    ]
    made = v.make_people(video_dir / "celeba.mp4", faces, appearances, seconds=4.0)
    a = analyze(engine, made.path, fps=FPS)
    templates = track_templates(a)
    spans = _spans(a)
    for probe, (start, end) in ((first_t, (500, 2500)), (second_t, (1500, 3500))):
        nearest = min(templates, key=lambda t: min(float(np.linalg.norm(x - probe)) for x in templates[t]))
        assert min(float(np.linalg.norm(x - probe)) for x in templates[nearest]) < 0.6
        lo, hi = spans[nearest]
        assert abs(lo - start) <= STEP and abs(hi - (end - STEP)) <= STEP
    assert a.embeddings_computed <= a.detections // 3
