"""The face engine: one object that owns the loaded models and runs each stage.

Models load lazily, once per :class:`Engine`, and an engine is safe to share between
threads. The module-level verbs in :mod:`regard` use a process-wide default engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.face import imaging
from regard.face.align import face_chips
from regard.face.analyze import analyze_face
from regard.face.detect.base import MAX_FACES, Detector, alignment_box, downscale, finalize, rescale
from regard.face.detect.fallback import (
    ROTATED,
    STEPS,
    Turned,
    extend_for,
    pad_image,
    padded_min_face,
    parse_steps,
    unpad,
)
from regard.face.embed import (
    FLIP_MEAN,
    DlibEmbedder,
    Embedder,
    mean_of_mirrors,
    resnet_identity,
    with_mirrors,
)
from regard.face.landmarks import ShapePredictors
from regard.scoring.calibrate import Scorer, default_scorer, load_scorer
from regard.types import Comparison, Detection, Embeddings, Face, FaceAnalysis, ModelIdentity, RGBImage

#: The detector used when settings say "default"; chosen by measurement (docs/benchmarks.md).
DEFAULT_DETECTOR = "mtcnn"

DetectorFactory = Callable[["Engine"], Detector]


def _hog(engine: Engine) -> Detector:
    from regard.face.detect.dlib_detectors import HogDetector

    return HogDetector(engine.predictors)


def _cnn(engine: Engine) -> Detector:
    from regard.face.detect.mmod_onnx import MmodOnnxDetector

    return MmodOnnxDetector(engine.predictors, engine.settings)


def _cnn_dlib(engine: Engine) -> Detector:
    from regard.face.detect.dlib_detectors import MmodDetector

    return MmodDetector(engine.predictors)


def _mtcnn(engine: Engine) -> Detector:
    from regard.face.detect.mtcnn import MtcnnDetector

    return MtcnnDetector(threads=engine.settings.threads, cache_dir=engine.settings.cache_dir)


#: Detector name -> factory. Other modules register faster implementations here.
DETECTORS: dict[str, DetectorFactory] = {"hog": _hog, "cnn": _cnn, "cnn-dlib": _cnn_dlib, "mtcnn": _mtcnn}


def _dlib_embedder(engine: Engine) -> Embedder:
    return DlibEmbedder()


def _onnx_embedder(engine: Engine) -> Embedder:
    from regard.face.embed_onnx import OnnxEmbedder

    return OnnxEmbedder(engine.settings)


#: Embedding backend name -> factory.
EMBEDDERS: dict[str, Callable[[Engine], Embedder]] = {"dlib": _dlib_embedder, "onnx": _onnx_embedder}


@dataclass(frozen=True, slots=True)
class Probe:
    """The face a probe image stands for (its largest, analysed and embedded) and the others, analysed."""

    face: Face
    others: list[FaceAnalysis] = field(default_factory=list)  # largest first; empty unless asked for


def largest(detections: Sequence[Detection]) -> Detection | None:
    """The face a probe image stands for: the largest box (the first of equal ones); None if none.

    The one rule behind CompareFaces, SearchFacesByImage, SearchUsersByImage, ``regard compare``
    and the evaluation's templates.
    """
    return max(detections, key=lambda d: d.box.area) if detections else None


class Engine:
    """Runs decode -> detect -> analyze -> align -> embed -> compare with one set of models."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.predictors = ShapePredictors()
        self._lock = threading.Lock()
        self._detectors: dict[str, Detector] = {}
        self._embedder: Embedder | None = None
        self._scorer: Scorer | None = None
        self._fallback_steps = parse_steps(self.settings.detect_fallback)  # a bad value fails here

    # -- components -------------------------------------------------------------------------
    def detector(self, name: str | None = None) -> Detector:
        """The detector called ``name`` (default: the settings' choice)."""
        chosen = name or self.settings.detector
        if chosen == "default":
            chosen = DEFAULT_DETECTOR
        if chosen not in DETECTORS:
            raise InvalidParameter(f"unknown detector {chosen!r}; choose one of {sorted(DETECTORS)}")
        with self._lock:
            if chosen not in self._detectors:
                self._detectors[chosen] = DETECTORS[chosen](self)
            return self._detectors[chosen]

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                backend = self.settings.embed_backend
                if backend not in EMBEDDERS:
                    raise InvalidParameter(
                        f"unknown embedding backend {backend!r}; choose one of {sorted(EMBEDDERS)}"
                    )
                self._embedder = EMBEDDERS[backend](self)
            return self._embedder

    @property
    def scorer(self) -> Scorer:
        """Templates -> normalized score -> similarity and FMR.

        The parameters in ``settings.scoring_dir`` (made by ``regard calibrate``), else the shipped
        ones; refused (:class:`~regard.errors.ScoringMismatch`) when they were made for another
        model or for templates made another way (flip-mean or not).
        """
        if self._scorer is None:
            folder = self.settings.scoring_dir
            scorer = load_scorer(Path(folder).expanduser()) if folder else default_scorer()
            ident = self.model_identity
            scorer.check_model(ident.key)
            scorer.check_templates(ident.preprocessing)
            self._scorer = scorer
        return self._scorer

    @property
    def model_identity(self) -> ModelIdentity:
        """What makes this engine's templates: the packaged ResNet (whichever backend runs it; they
        agree, docs/benchmarks.md) and whether templates are flip-means. Loads no model."""
        ident = resnet_identity()
        if self.settings.embed_flip:
            return ident
        return replace(ident, preprocessing=ident.preprocessing.replace(f"+{FLIP_MEAN}", ""))

    # -- stages -----------------------------------------------------------------------------
    def load_image(self, source: bytes | str | Path, *, max_bytes: int | None = None) -> RGBImage:
        """``source`` decoded under the settings' limits (``max_bytes`` overrides the byte limit)."""
        return imaging.load_image(
            source,
            max_bytes=self.settings.max_image_bytes if max_bytes is None else max_bytes,
            max_pixels=self.settings.max_image_pixels,
            max_decoded_bytes=self.settings.max_image_decoded_bytes or None,
        )

    def detect(
        self,
        image: RGBImage,
        *,
        detector: str | None = None,
        min_face_size: int | None = None,
        max_faces: int = MAX_FACES,
    ) -> list[Detection]:
        """Faces in ``image``, largest first, at most ``max_faces`` (and never more than 100).

        Large photos are scaled down to ``settings.detect_max_side`` for detection; boxes and
        landmarks are reported in the original image's pixels. When the default detector finds
        nothing, the fallback cascade of :meth:`fallback_steps` looks again
        (:mod:`regard.face.detect.fallback`); a detector named in ``detector`` runs alone.
        """
        if max_faces < 1:
            raise InvalidParameter("max_faces must be at least 1")
        min_size = self.settings.min_face_size if min_face_size is None else min_face_size
        if min_size < 1:
            raise InvalidParameter("min_face_size must be at least 1")
        steps = self.fallback_steps(detector)
        primary = self.detector(detector)
        small, factor = downscale(image, self.settings.detect_max_side)
        min_small = max(1, round(min_size * factor))
        found = primary.detect(small, min_face_size=min_small)
        if not found and steps:
            found = self._fallback(small, primary, steps, min_small)
        return finalize([rescale(d, factor) for d in found], max_faces)

    def fallback_steps(self, detector: str | None = None) -> tuple[str, ...]:
        """The steps ``detect(image, detector=detector)`` tries when its detector finds nothing.

        Only the default detector gets them (``detector`` unset or ``"default"``, and
        ``settings.detector`` the default or its name); a caller who names a detector, even the
        default one by its name, gets exactly that detector.
        """
        if detector not in (None, "default") or self.settings.detector not in ("default", DEFAULT_DETECTOR):
            return ()
        return self._fallback_steps

    def _fallback(
        self, image: RGBImage, primary: Detector, steps: Sequence[str], min_face_size: int
    ) -> list[Detection]:
        """The first step of the cascade that finds a face, in ``image``'s pixels."""
        padded, dx, dy = pad_image(image)
        height, width = image.shape[:2]
        turned: Turned | None = None  # made for the first rotation step, shared by the second
        for step in steps:
            name = STEPS[step]
            finder = primary if name is None else self.detector(name)
            if step in ROTATED:
                turned = turned or Turned(padded, dx, dy, width, height, min_face_size)
                found = turned.find(finder)
            else:
                smallest = padded_min_face(step, padded, min_face_size)
                found = unpad(finder.detect(padded, min_face_size=smallest), dx, dy, width, height)
            if found:
                return found
        return []

    def analyze(self, image: RGBImage, detection: Detection) -> FaceAnalysis:
        """Rekognition's landmarks, pose, quality, eyes open and mouth open for one face."""
        return analyze_face(image, detection, self.predictors.points68(image, alignment_box(detection)))

    def embed(self, image: RGBImage, detections: Sequence[Detection]) -> Embeddings:
        """One 128-d descriptor per detection, computed in one batch from the full-resolution image.

        Each is the mean of the descriptors of the aligned chip and of its mirror image, both run
        in the same batch (:func:`regard.face.embed.mean_of_mirrors`).
        """
        # A face whose alignment box crosses the frame (most often one the fallback cascade found
        # on a padded image) is aligned on the picture extended with its mean colour.
        extended, boxes = extend_for(image, [alignment_box(d) for d in detections])
        chips = face_chips(extended, boxes, self.predictors)
        if not self.settings.embed_flip:
            return self.embedder.embed_chips(chips)
        return mean_of_mirrors(self.embedder.embed_chips(with_mirrors(chips)))

    def faces(
        self,
        image: RGBImage,
        *,
        detector: str | None = None,
        max_faces: int = MAX_FACES,
        min_face_size: int | None = None,
    ) -> list[Face]:
        """Detect, analyze and embed every face (largest first)."""
        dets = self.detect(image, detector=detector, max_faces=max_faces, min_face_size=min_face_size)
        vectors = self.embed(image, dets)
        return [
            Face(detection=d, analysis=self.analyze(image, d), embedding=v)
            for d, v in zip(dets, vectors, strict=True)
        ]

    def probe(self, image: RGBImage, *, detector: str | None = None, others: bool = False) -> Probe | None:
        """The largest face of ``image`` (:func:`largest`) detected, analysed and embedded; None if none.

        Its template is computed on its own, so it does not depend on the other faces in the
        picture. With ``others`` the other faces are analysed too (not embedded).
        """
        detections = self.detect(image, detector=detector)
        chosen = largest(detections)
        if chosen is None:
            return None
        face = Face(chosen, self.analyze(image, chosen), self.embed(image, [chosen])[0])
        rest = [self.analyze(image, d) for d in detections if d is not chosen] if others else []
        return Probe(face, rest)

    def compare(self, a: np.ndarray, b: np.ndarray) -> Comparison:
        """Distance, normalized score, calibrated similarity (0-100) and estimated FMR of two templates."""
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        b = np.asarray(b, dtype=np.float32).reshape(-1)
        if a.shape != b.shape:
            raise InvalidParameter(f"templates differ in size: {a.shape[0]} vs {b.shape[0]}")
        return self.scorer.compare(a, b)


_default: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine behind :mod:`regard`'s verbs."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine()
        return _default
