"""QualityFilter: the measured bars a face must clear at each level, and why a face falls short."""

from __future__ import annotations

from dataclasses import dataclass

from regard.errors import InvalidParameter
from regard.types import FaceAnalysis

QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True, slots=True)
class QualityBar:
    """The least a face must show to be indexed at one QualityFilter level."""

    min_brightness: float  # 0-100, mean luma of the face box
    min_sharpness: float  # 0-100, regard.face.analyze's Laplacian measure
    min_confidence: float  # detection confidence, 0-100
    #: Shorter side of the face box, in pixels of an image up to HD (shorter side 1080 px); in a
    #: larger image the bar grows in proportion (:func:`min_face_side`).
    min_side_px: float
    max_yaw: float  # degrees
    max_pitch: float  # degrees


#: QualityFilter -> bar. AUTO is LOW: only clearly unusable faces are left out.
QUALITY_BARS: dict[str, QualityBar] = {
    "LOW": QualityBar(10.0, 5.0, 50.0, 20.0, 70.0, 60.0),
    "MEDIUM": QualityBar(20.0, 15.0, 70.0, 40.0, 50.0, 45.0),
    "HIGH": QualityBar(30.0, 30.0, 90.0, 64.0, 35.0, 30.0),
}
QUALITY_BARS["AUTO"] = QUALITY_BARS["LOW"]


#: Rekognition's documented detection floor: a face no smaller than 40x40 pixels in a 1920x1080
#: image, larger images needing a proportionally larger face. regard reads this as: the bars'
#: pixel sizes hold up to an image whose shorter side is 1080 px and grow with the shorter side
#: beyond it, so a face's box is judged relative to the image it is in.
HD_SHORT_SIDE = 1080


def min_face_side(bar: QualityBar, width: int, height: int) -> float:
    """The least shorter side, in pixels, a face box needs in a ``width`` x ``height`` image to
    clear ``bar``: ``min_side_px``, scaled by the image's shorter side over 1080 when it is larger."""
    return bar.min_side_px * max(1.0, min(width, height) / HD_SHORT_SIDE)


def check_quality_filter(quality_filter: str) -> str:
    """``quality_filter`` when it is one of :data:`QUALITY_FILTERS`; InvalidParameter otherwise."""
    if quality_filter not in QUALITY_FILTERS:
        raise InvalidParameter(f"QualityFilter must be one of {', '.join(QUALITY_FILTERS)}")
    return quality_filter


def quality_reasons(analysis: FaceAnalysis, quality_filter: str, width: int, height: int) -> list[str]:
    """Why a face of a ``width`` x ``height`` image falls short of a QualityFilter level (empty: it
    passes). NONE passes everything. SMALL_BOUNDING_BOX is judged relative to the image
    (:func:`min_face_side`)."""
    if quality_filter == "NONE":
        return []
    bar = QUALITY_BARS[quality_filter]
    d = analysis.detection
    reasons: list[str] = []
    if analysis.quality.brightness < bar.min_brightness:
        reasons.append("LOW_BRIGHTNESS")
    if analysis.quality.sharpness < bar.min_sharpness:
        reasons.append("LOW_SHARPNESS")
    if d.confidence < bar.min_confidence:
        reasons.append("LOW_CONFIDENCE")
    if min(d.box.width, d.box.height) < min_face_side(bar, width, height):
        reasons.append("SMALL_BOUNDING_BOX")
    if abs(analysis.pose.yaw) > bar.max_yaw or abs(analysis.pose.pitch) > bar.max_pitch:
        reasons.append("EXTREME_POSE")
    if len(reasons) >= 2:
        reasons.append("LOW_FACE_QUALITY")
    return reasons
