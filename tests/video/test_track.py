"""The tracker on hand-made detections: IoU association, template re-identification, splits, and how
often it asks for embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from regard.types import Box, Detection, Embeddings
from regard.video.track import Tracker, TrackerParams, quality


def det(left: float, top: float, side: float, confidence: float = 99.0) -> Detection:
    box = Box(left, top, side, side)
    pts = ((left, top),) * 5
    return Detection(box, confidence, pts, "test")  # type: ignore[arg-type]


def person(seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return vec / np.linalg.norm(vec)  # two people ~1.4 apart, as unit vectors in 128-d are


class Scene:
    """Embeds detections as the person each one is said to be (a little noise per call)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.rng = np.random.default_rng(0)

    def embedder(self, who: Sequence[int]):  # type: ignore[no-untyped-def]
        def embed(indices: Sequence[int]) -> Embeddings:
            self.calls.append(len(indices))
            rows = [
                person(who[i]) + self.rng.normal(scale=0.01, size=128).astype(np.float32) for i in indices
            ]
            return np.asarray(rows, dtype=np.float32)

        return embed


def run(tracker: Tracker, scene: Scene, frames: Sequence[Sequence[tuple[Detection, int]]]) -> list[list[int]]:
    ids = []
    for k, faces in enumerate(frames):
        got, _ = tracker.update(k * 200, k * 2, [d for d, _ in faces], scene.embedder([p for _, p in faces]))
        ids.append(got)
    return ids


def test_a_moving_face_is_one_track_embedded_once() -> None:
    tracker, scene = Tracker(), Scene()
    ids = run(tracker, scene, [[(det(100 + 5 * k, 80, 60), 1)] for k in range(8)])
    assert ids == [[0]] * 8
    assert tracker.embeddings_computed == 1 and scene.calls == [1]
    track = tracker.tracks[0]
    assert (track.first_millis, track.last_millis, len(track.boxes)) == (0, 1400, 8)


def test_a_face_is_embedded_again_every_n_samples() -> None:
    tracker, scene = Tracker(TrackerParams(embed_every=3)), Scene()
    run(tracker, scene, [[(det(100, 80, 60), 1)] for _ in range(10)])
    assert tracker.embeddings_computed == 4  # samples 0, 3, 6, 9
    assert len(tracker.tracks[0].templates) == 3  # at most max_templates kept


def test_a_face_growing_a_lot_is_embedded_again() -> None:
    tracker, scene = Tracker(), Scene()
    sides = [40, 44, 48, 53, 58, 64, 70]  # x1.6 in six samples
    run(tracker, scene, [[(det(100, 80, s), 1)] for s in sides])
    assert len(tracker.tracks) == 1
    assert tracker.embeddings_computed == 2  # at 40 and once past 40 x 1.5 = 60
    assert tracker.tracks[0].qualities[0] == quality(det(100, 80, 64))


def test_a_jump_is_followed_by_template_and_a_stranger_starts_a_track() -> None:
    tracker, scene = Tracker(), Scene()
    ids = run(
        tracker,
        scene,
        [
            [(det(100, 80, 60), 1)],
            [(det(400, 200, 60), 1)],  # same person, no overlap: joins by template
            [(det(405, 200, 60), 1), (det(50, 50, 60), 2)],  # a stranger arrives
        ],
    )
    assert ids == [[0], [0], [0, 1]]
    assert len(tracker.tracks) == 2


def test_people_crossing_are_split_when_the_template_disagrees() -> None:
    tracker, scene = Tracker(TrackerParams(embed_every=1)), Scene()
    ids = run(tracker, scene, [[(det(100, 80, 60), 1)], [(det(105, 80, 60), 1)], [(det(108, 80, 60), 2)]])
    assert ids == [[0], [0], [1]]
    assert tracker.tracks[0].last_millis == 200


def test_a_track_ends_after_max_misses_and_the_face_returns_as_a_new_track() -> None:
    params = TrackerParams(max_misses=2)
    tracker, scene = Tracker(params), Scene()
    here = [(det(100, 80, 60), 1)]
    ids = run(tracker, scene, [here, [], [], here, [], [], [], here])
    assert ids == [[0], [], [], [0], [], [], [], [1]]  # back within 2 misses: same track; after 3: new


def test_two_faces_side_by_side_keep_their_tracks() -> None:
    tracker, scene = Tracker(), Scene()
    frames = [[(det(100 + 3 * k, 80, 60), 1), (det(300 - 3 * k, 90, 70), 2)] for k in range(10)]
    ids = run(tracker, scene, frames)
    assert all(sorted(i) == [0, 1] for i in ids)
    assert ids[0] == ids[-1]
    assert tracker.embeddings_computed == 2
