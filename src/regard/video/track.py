"""Faces followed across sampled frames, so that each person is embedded a few times, not every frame.

Association, per sampled frame:

1. each detection is matched to the live track whose last box overlaps it most (IoU at least
   :attr:`TrackerParams.iou_min`; greedy, best overlap first);
2. a detection left over is embedded and joins the live, unmatched track whose templates are nearest
   (distance under :attr:`TrackerParams.same_face_distance`): a face that moved or grew faster than
   IoU follows, or came back after a few missed frames; otherwise it starts a new track;
3. a matched detection is embedded only when its track's last template is
   :attr:`TrackerParams.embed_every` samples old or its box has changed a lot since (its side grew
   or shrank by :attr:`TrackerParams.reembed_scale` from the box last embedded: a face that only
   moves looks the same, one that comes closer shows more detail). If that template turns out to be far
   from the track's (``split_distance``), two people crossed: the track ends and a new one starts.

A track unmatched for more than :attr:`TrackerParams.max_misses` samples ends. Each track keeps its
:attr:`TrackerParams.max_templates` best templates (largest, most confident faces) for searching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from regard.types import Box, Detection, Embeddings

#: Embeds the detections at the given indices of the current frame: one row per index.
EmbedFn = Callable[[Sequence[int]], Embeddings]


@dataclass(frozen=True)
class TrackerParams:
    """The tracker's knobs; the defaults suit sampling at 2-5 frames per second."""

    #: Smallest overlap (intersection over union) between a track's last box and a detection for
    #: the detection to continue the track without looking at its template.
    iou_min: float = 0.3
    #: Template distance under which a detection IoU did not match joins a live track (the packaged
    #: ResNet's descriptors: same person mostly under 0.5, different people mostly above 0.6).
    same_face_distance: float = 0.5
    #: Template distance over which a detection IoU matched is someone else (people crossing).
    split_distance: float = 0.7
    #: A matched face is embedded again every this many samples (2 s at 5 fps) ...
    embed_every: int = 10
    #: ... or sooner when its box's side is this many times larger or smaller than when last embedded.
    reembed_scale: float = 1.5
    #: Samples a track may go unmatched (missed detections, a face turned away) before it ends.
    max_misses: int = 5
    #: Templates kept per track, the best by face size times detection confidence.
    max_templates: int = 3


@dataclass
class Track:
    """One face followed across samples."""

    track_id: int
    first_millis: int
    last_millis: int
    #: (timestamp in ms, frame index, box in pixels of the displayed frame), one per sample it was seen
    boxes: list[tuple[int, int, Box]] = field(default_factory=list)
    #: a few templates, best quality first
    templates: list[np.ndarray] = field(default_factory=list)
    #: quality of each template (face side in pixels x detection confidence / 100)
    qualities: list[float] = field(default_factory=list)
    #: (timestamp in ms, frame index) of the best template's face
    best_millis: int = 0
    best_frame_index: int = 0
    embeddings: int = 0  # templates computed for this track (kept or not)
    #: JPEG crop of the best template's face (what a reviewer sees); set by regard.video.analyze
    best_crop: bytes = b""
    _last_embedded_sample: int = field(default=0, repr=False)
    _last_embedded_box: Box | None = field(default=None, repr=False)
    _misses: int = field(default=0, repr=False)
    _ended: bool = field(default=False, repr=False)

    @property
    def last_box(self) -> Box:
        return self.boxes[-1][2]

    def distance(self, vector: np.ndarray) -> float:
        """Smallest Euclidean distance from ``vector`` to this track's templates."""
        if not self.templates:
            return float("inf")
        return float(min(np.linalg.norm(t - vector) for t in self.templates))


def _scale_change(box: Box, before: Box | None) -> float:
    """How many times larger or smaller ``box`` is than ``before`` (by the square root of the area)."""
    if before is None or before.area <= 0 or box.area <= 0:
        return float("inf")
    ratio = float(np.sqrt(box.area / before.area))
    return max(ratio, 1 / ratio)


def quality(detection: Detection) -> float:
    """How good a template this face makes: its shorter side in pixels times confidence / 100."""
    return min(detection.box.width, detection.box.height) * detection.confidence / 100.0


class Tracker:
    """IoU plus template association of faces across sampled frames (see the module's text)."""

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.params = params or TrackerParams()
        self.tracks: list[Track] = []
        self.embeddings_computed = 0
        self._sample = -1

    def _live(self) -> list[Track]:
        return [t for t in self.tracks if not t._ended]

    def update(
        self, timestamp_millis: int, frame_index: int, detections: Sequence[Detection], embed: EmbedFn
    ) -> tuple[list[int], list[bool]]:
        """Associate one sampled frame's detections; the track id of each, and whether each was embedded.

        ``embed`` is called at most once, with the indices of the detections that need a template.
        """
        p = self.params
        self._sample += 1
        live = self._live()
        # 1. IoU, greedy
        pairs = sorted(
            ((d.box.iou(t.last_box), di, ti) for di, d in enumerate(detections) for ti, t in enumerate(live)),
            reverse=True,
        )
        assigned: dict[int, Track] = {}
        taken: set[int] = set()
        for overlap, di, ti in pairs:
            if overlap < p.iou_min:
                break
            if di in assigned or ti in taken:
                continue
            assigned[di] = live[ti]
            taken.add(ti)
        # which detections need a template
        need = [
            di
            for di, d in enumerate(detections)
            if di not in assigned
            or self._sample - assigned[di]._last_embedded_sample >= p.embed_every
            or _scale_change(d.box, assigned[di]._last_embedded_box) >= p.reembed_scale
        ]
        vectors: dict[int, np.ndarray] = {}
        if need:
            got = embed(need)
            self.embeddings_computed += len(need)
            vectors = {di: np.asarray(got[k], dtype=np.float32) for k, di in enumerate(need)}
        # IoU matches whose template says someone else: end that track, treat as unmatched
        for di, vector in vectors.items():
            track = assigned.get(di)
            if track is not None and track.distance(vector) > p.split_distance:
                track._ended = True
                del assigned[di]
        # 2. leftovers by template, nearest first
        free = [t for t in live if t not in assigned.values() and not t._ended]
        options = sorted(
            (t.distance(vectors[di]), di, k)
            for di in vectors
            if di not in assigned
            for k, t in enumerate(free)
        )
        used: set[int] = set()
        for dist, di, k in options:
            if dist >= p.same_face_distance:
                break
            if di in assigned or k in used:
                continue
            assigned[di] = free[k]
            used.add(k)
        ids: list[int] = []
        for di, d in enumerate(detections):
            track = assigned.get(di)
            if track is None:
                track = Track(len(self.tracks), timestamp_millis, timestamp_millis)
                self.tracks.append(track)
                assigned[di] = track
            track.last_millis = timestamp_millis
            track.boxes.append((timestamp_millis, frame_index, d.box))
            track._misses = -1  # counted back to 0 below
            if di in vectors:
                self._keep(track, vectors[di], d, timestamp_millis, frame_index)
            ids.append(track.track_id)
        for track in self._live():
            track._misses += 1
            if track._misses > p.max_misses:
                track._ended = True
        return ids, [di in vectors for di in range(len(detections))]

    def _keep(self, track: Track, vector: np.ndarray, d: Detection, millis: int, frame_index: int) -> None:
        track.embeddings += 1
        track._last_embedded_sample = self._sample
        track._last_embedded_box = d.box
        q = quality(d)
        entries = sorted(
            [*zip(track.qualities, range(len(track.templates)), strict=True), (q, -1)], reverse=True
        )[: self.params.max_templates]
        if any(i == -1 for _, i in entries):
            if entries[0][1] == -1:
                track.best_millis, track.best_frame_index = millis, frame_index
            templates = [vector if i == -1 else track.templates[i] for _, i in entries]
            track.qualities = [qq for qq, _ in entries]
            track.templates = templates

    def is_best(self, track_id: int, frame_index: int) -> bool:
        """Whether ``frame_index`` holds the best template of track ``track_id`` (to crop it then)."""
        return self.tracks[track_id].best_frame_index == frame_index
