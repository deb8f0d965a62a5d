"""Face analysis from dlib's 68 landmarks: Rekognition's landmark names, pose, quality, eyes and mouth.

No gender, age, emotion or race is inferred here or anywhere in regard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from regard.types import Detection, FaceAnalysis, Flag, Point, Pose, Quality, RGBImage

# Rekognition's landmark names -> indices into dlib's 68-point layout (averaged when several).
# "Left" and "right" are as seen in the image, as in Rekognition's responses.
LANDMARK_MAP: dict[str, tuple[int, ...]] = {
    "eyeLeft": (36, 37, 38, 39, 40, 41),
    "eyeRight": (42, 43, 44, 45, 46, 47),
    "nose": (30,),
    "mouthLeft": (48,),
    "mouthRight": (54,),
    "leftEyeBrowLeft": (17,),
    "leftEyeBrowRight": (21,),
    "leftEyeBrowUp": (19,),
    "rightEyeBrowLeft": (22,),
    "rightEyeBrowRight": (26,),
    "rightEyeBrowUp": (24,),
    "leftEyeLeft": (36,),
    "leftEyeRight": (39,),
    "leftEyeUp": (37, 38),
    "leftEyeDown": (40, 41),
    "rightEyeLeft": (42,),
    "rightEyeRight": (45,),
    "rightEyeUp": (43, 44),
    "rightEyeDown": (46, 47),
    "noseLeft": (31,),
    "noseRight": (35,),
    "mouthUp": (51,),
    "mouthDown": (57,),
    "leftPupil": (36, 37, 38, 39, 40, 41),
    "rightPupil": (42, 43, 44, 45, 46, 47),
    "upperJawlineLeft": (1,),
    "midJawlineLeft": (4,),
    "chinBottom": (8,),
    "midJawlineRight": (12,),
    "upperJawlineRight": (15,),
}

# A generic 3D face (millimetre-like units; x right, y up, z towards the camera) for pose.
_MODEL_3D = np.array(
    [
        (0.0, 0.0, 0.0),  # nose tip (30)
        (0.0, -330.0, -65.0),  # chin (8)
        (-225.0, 170.0, -135.0),  # image-left eye outer corner (36)
        (225.0, 170.0, -135.0),  # image-right eye outer corner (45)
        (-150.0, -150.0, -125.0),  # image-left mouth corner (48)
        (150.0, -150.0, -125.0),  # image-right mouth corner (54)
        (0.0, 170.0, -135.0 + 20.0),  # between the eyes (27)
    ]
)
_MODEL_IDX = (30, 8, 36, 45, 48, 54, 27)

#: Eye aspect ratio above which an eye counts as open.
EAR_OPEN = 0.20
#: Inner-lip gap over mouth width above which the mouth counts as open.
MOUTH_OPEN = 0.12


def named_landmarks(points68: Sequence[Point]) -> dict[str, Point]:
    pts = np.asarray(points68, dtype=np.float64)
    return {
        name: (float(pts[list(idx), 0].mean()), float(pts[list(idx), 1].mean()))
        for name, idx in LANDMARK_MAP.items()
    }


def estimate_pose(points68: Sequence[Point]) -> Pose:
    """Roll, yaw and pitch in degrees by fitting a scaled-orthographic camera to a generic 3D face.

    Roll is positive when the face tilts clockwise in the image; yaw positive when the
    face turns towards the image's right; pitch positive when it tilts up.
    """
    pts = np.asarray(points68, dtype=np.float64)
    image_pts = pts[list(_MODEL_IDX)]
    image_pts = image_pts - image_pts.mean(axis=0)
    image_pts[:, 1] *= -1.0  # y up, like the model
    model = _MODEL_3D - _MODEL_3D.mean(axis=0)
    # Solve image = model @ M (M is 3x2) in least squares, then orthonormalise.
    m, *_ = np.linalg.lstsq(model, image_pts, rcond=None)
    r1, r2 = m[:, 0], m[:, 1]
    s1, s2 = np.linalg.norm(r1), np.linalg.norm(r2)
    if s1 == 0 or s2 == 0:
        return Pose(0.0, 0.0, 0.0)
    r1, r2 = r1 / s1, r2 / s2
    r3 = np.cross(r1, r2)
    rot = np.stack([r1, r2, r3 / max(np.linalg.norm(r3), 1e-12)])
    u, _, vt = np.linalg.svd(rot)
    rot = u @ vt
    pitch = math.degrees(math.atan2(-rot[1, 2], rot[2, 2]))
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, rot[0, 2]))))
    eye_l = pts[36:42].mean(axis=0)
    eye_r = pts[42:48].mean(axis=0)
    roll = math.degrees(math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))
    return Pose(roll=_clamp180(roll), yaw=_clamp180(yaw), pitch=_clamp180(pitch))


def _clamp180(value: float) -> float:
    return max(-180.0, min(180.0, value))


def _eye_aspect_ratio(eye: np.ndarray) -> float:
    vertical = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
    horizontal = 2.0 * np.linalg.norm(eye[0] - eye[3])
    return float(vertical / horizontal) if horizontal > 0 else 0.0


def _flag(value: float, threshold: float, spread: float) -> Flag:
    """A yes/no call with a confidence that grows with the distance from the threshold."""
    z = (value - threshold) / spread
    p = 1.0 / (1.0 + math.exp(-z))
    is_on = p >= 0.5
    return Flag(value=is_on, confidence=round(100.0 * (p if is_on else 1.0 - p), 3))


def eyes_open(points68: Sequence[Point]) -> Flag:
    pts = np.asarray(points68, dtype=np.float64)
    ear = (_eye_aspect_ratio(pts[36:42]) + _eye_aspect_ratio(pts[42:48])) / 2.0
    return _flag(ear, EAR_OPEN, 0.03)


def mouth_open(points68: Sequence[Point]) -> Flag:
    pts = np.asarray(points68, dtype=np.float64)
    gap = np.linalg.norm(pts[62] - pts[66])
    width = np.linalg.norm(pts[48] - pts[54])
    ratio = float(gap / width) if width > 0 else 0.0
    return _flag(ratio, MOUTH_OPEN, 0.04)


def quality(image: RGBImage, detection: Detection) -> Quality:
    """Brightness (mean luma) and sharpness (variance of the Laplacian) of the face box, on 0-100."""
    b = detection.box
    h, w = image.shape[:2]
    x0, y0 = max(0, int(b.left)), max(0, int(b.top))
    x1, y1 = min(w, math.ceil(b.right)), min(h, math.ceil(b.bottom))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return Quality(brightness=0.0, sharpness=0.0)
    crop = image[y0:y1, x0:x1].astype(np.float64)
    luma = crop @ np.array([0.299, 0.587, 0.114])
    brightness = float(luma.mean() / 255.0 * 100.0)
    # Normalise the face to ~100 px high so sharpness does not depend on resolution.
    step = max(1, (y1 - y0) // 100)
    small = luma[::step, ::step]
    lap = -4.0 * small[1:-1, 1:-1] + small[:-2, 1:-1] + small[2:, 1:-1] + small[1:-1, :-2] + small[1:-1, 2:]
    variance = float(lap.var()) if lap.size else 0.0
    sharpness = float(100.0 * (1.0 - math.exp(-variance / 300.0)))
    return Quality(brightness=round(brightness, 3), sharpness=round(sharpness, 3))


def analyze_face(image: RGBImage, detection: Detection, points68: Sequence[Point]) -> FaceAnalysis:
    """Everything regard reports about a face, from the image and its 68 landmarks."""
    return FaceAnalysis(
        detection=detection,
        landmarks=named_landmarks(points68),
        pose=estimate_pose(points68),
        quality=quality(image, detection),
        eyes_open=eyes_open(points68),
        mouth_open=mouth_open(points68),
        landmarks68=tuple(points68),
    )
