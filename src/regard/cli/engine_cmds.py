"""``regard detect``, ``regard compare``, ``regard embed`` and ``regard calibrate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image, ImageDraw

from regard.cli.output import emit_json, emit_table
from regard.engine import Engine
from regard.errors import InvalidParameter
from regard.types import Detection, FaceAnalysis, RGBImage

_detector_option = click.option(
    "--detector", default=None, help="hog, mtcnn or cnn (default: the measured best)."
)


def _engine(detector: str | None) -> Engine:
    engine = Engine()
    if detector:
        engine.detector(detector)  # validate early
    return engine


def face_to_dict(analysis: FaceAnalysis, width: int, height: int) -> dict[str, Any]:
    """A face as plain JSON-ready data (pixels and Rekognition-style ratios)."""
    d = analysis.detection
    return {
        "box": {"left": d.box.left, "top": d.box.top, "width": d.box.width, "height": d.box.height},
        "bounding_box": d.box.to_ratios(width, height),
        "confidence": d.confidence,
        "detector": d.detector,
        "landmarks": {k: {"x": v[0], "y": v[1]} for k, v in analysis.landmarks.items()},
        "pose": {"roll": analysis.pose.roll, "yaw": analysis.pose.yaw, "pitch": analysis.pose.pitch},
        "quality": {"brightness": analysis.quality.brightness, "sharpness": analysis.quality.sharpness},
        "eyes_open": {"value": analysis.eyes_open.value, "confidence": analysis.eyes_open.confidence},
        "mouth_open": {"value": analysis.mouth_open.value, "confidence": analysis.mouth_open.confidence},
    }


def draw(image: RGBImage, detections: list[Detection], out: Path) -> None:
    """Write ``image`` with each box and its five landmarks drawn on it."""
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(max(image.shape[:2]) / 300))
    for det in detections:
        b = det.box
        pen.rectangle([b.left, b.top, b.right, b.bottom], outline=(0, 255, 0), width=width)
        r = max(2, round(b.width / 40))
        for x, y in det.landmarks:
            pen.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
        pen.text((b.left, max(0.0, b.top - 12)), f"{det.confidence:.0f}", fill=(0, 255, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--draw", "draw_to", type=click.Path(path_type=Path), help="Write an annotated image.")
@click.option("--max-faces", default=100, show_default=True, type=click.IntRange(1, 100))
@_detector_option
def detect(image: Path, as_json: bool, draw_to: Path | None, max_faces: int, detector: str | None) -> None:
    """Find faces in IMAGE: boxes, landmarks, pose and quality."""
    engine = _engine(detector)
    rgb = engine.load_image(image)
    dets = engine.detect(rgb, detector=detector, max_faces=max_faces)
    h, w = rgb.shape[:2]
    faces = [face_to_dict(engine.analyze(rgb, d), w, h) for d in dets]
    if draw_to is not None:
        draw(rgb, dets, draw_to)
    if as_json:
        emit_json({"image": str(image), "width": w, "height": h, "faces": faces})
        return
    click.echo(f"{image}: {w}x{h}, {len(faces)} face(s)")
    emit_table(
        ["#", "left", "top", "width", "height", "conf", "roll", "yaw", "pitch", "bright", "sharp"],
        [
            [
                i + 1,
                f["box"]["left"],
                f["box"]["top"],
                f["box"]["width"],
                f["box"]["height"],
                f["confidence"],
                f["pose"]["roll"],
                f["pose"]["yaw"],
                f["pose"]["pitch"],
                f["quality"]["brightness"],
                f["quality"]["sharpness"],
            ]
            for i, f in enumerate(faces)
        ],
    )


def _largest_face_template(engine: Engine, path: Path, detector: str | None) -> np.ndarray:
    rgb = engine.load_image(path)
    dets = engine.detect(rgb, detector=detector, max_faces=1)
    if not dets:
        raise InvalidParameter(f"no face found in {path}")
    return np.asarray(engine.embed(rgb, dets)[0], dtype=np.float32)


@click.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_detector_option
def compare(a: Path, b: Path, as_json: bool, detector: str | None) -> None:
    """Compare the largest face in A with the largest face in B."""
    engine = _engine(detector)
    result = engine.compare(
        _largest_face_template(engine, a, detector), _largest_face_template(engine, b, detector)
    )
    data = {
        "a": str(a),
        "b": str(b),
        "similarity": round(result.similarity, 3),
        "estimated_fmr": result.fmr,
        "distance": round(result.distance, 6),
        "calibration": engine.calibration.version,
    }
    if as_json:
        emit_json(data)
        return
    click.echo(
        f"similarity {data['similarity']:.1f}/100  (estimated false-match rate {result.fmr:.2g}, "
        f"distance {result.distance:.4f})"
    )


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--max-faces", default=100, show_default=True, type=click.IntRange(1, 100))
@_detector_option
def embed(image: Path, as_json: bool, max_faces: int, detector: str | None) -> None:
    """Print the 128-d template of each face in IMAGE."""
    engine = _engine(detector)
    rgb = engine.load_image(image)
    dets = engine.detect(rgb, detector=detector, max_faces=max_faces)
    vectors = engine.embed(rgb, dets)
    h, w = rgb.shape[:2]
    data = {
        "image": str(image),
        "model": engine.embedder.identity.key,
        "faces": [
            {"bounding_box": d.box.to_ratios(w, h), "embedding": [round(float(x), 7) for x in v]}
            for d, v in zip(dets, vectors, strict=True)
        ],
    }
    if as_json:
        emit_json(data)
        return
    click.echo(f"{image}: {len(dets)} face(s), model {data['model']}")
    for i, v in enumerate(vectors):
        click.echo(f"{i + 1}: " + " ".join(f"{x:+.4f}" for x in v))


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the table.")
@click.option(
    "--all-subjects",
    is_flag=True,
    help="Fit on every subject instead of leaving a third of them apart for checking.",
)
@click.option("--version", "version", default=None, help="Version label (default: dataset name).")
def calibrate(dataset: Path, out: Path, all_subjects: bool, version: str | None) -> None:
    """Measure a distance -> similarity -> FMR table on DATASET (a folder with manifest.csv
    and a subject column), e.g. to replace the shipped one with one made on your own data."""
    from tqdm import tqdm

    from regard.calibrate import build_table, held_apart, pair_distances
    from regard.evaluation.dataset import TemplateSource, compute_templates, read_dataset

    engine = Engine()
    data = read_dataset(dataset, keep_subject=None if all_subjects else lambda s: not held_apart(s))
    if not data.has_identities:
        raise InvalidParameter("calibration needs a 'subject' column in manifest.csv")
    templates = compute_templates(
        TemplateSource(engine),
        data,
        engine.settings.cache_dir / "templates",
        progress=lambda rows, n: tqdm(rows, total=n, desc="embedding", unit="img"),
    )
    found = templates.acquired
    subjects = np.array(data.subjects)[found]
    genuine, impostor = pair_distances(templates.embeddings[found], subjects)
    table = build_table(
        genuine,
        impostor,
        model=engine.embedder.identity.key,
        dataset=dataset.name,
        version=version or dataset.name,
    )
    table["subjects"] = len(set(subjects))
    table["images_without_face"] = int((~found).sum())
    out.write_text(json.dumps(table, indent=1) + "\n")
    click.echo(
        f"wrote {out}: {table['counts']['genuine']} genuine and {table['counts']['impostor']} "
        f"impostor pairs from {table['subjects']} subjects"
    )


commands = [detect, compare, embed, calibrate]
