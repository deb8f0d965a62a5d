"""``regard detect``, ``regard compare``, ``regard embed`` and ``regard calibrate``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from regard.cli.output import emit_json, emit_table
from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.scoring.normalize import FitOptions
from regard.service import render
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
        "bounding_box": render.bounding_box(d.box.to_ratios(width, height)),
        "confidence": d.confidence,
        "detector": d.detector,
        "landmarks": {k: {"x": v[0], "y": v[1]} for k, v in analysis.landmarks.items()},
        "pose": {"roll": analysis.pose.roll, "yaw": analysis.pose.yaw, "pitch": analysis.pose.pitch},
        "quality": {"brightness": analysis.quality.brightness, "sharpness": analysis.quality.sharpness},
        "eyes_open": {"value": analysis.eyes_open.value, "confidence": analysis.eyes_open.confidence},
        "mouth_open": {"value": analysis.mouth_open.value, "confidence": analysis.mouth_open.confidence},
    }


def label_size(width: int, height: int) -> int:
    """Text height, in pixels, of the row labels :func:`draw` writes on a ``width`` x ``height`` image:
    3.5% of the shorter side, at least 12 px, so a label stays legible at any image size."""
    return max(12, round(min(width, height) * 0.035))


def draw(image: RGBImage, detections: list[Detection], out: Path) -> None:
    """Write ``image`` with each box, its five landmarks and its row number in the printed table
    (1 = the first row) drawn on it; the number sits on a filled tag above the box (inside the
    image), sized to the image so it can be read at any size."""
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    height, width = image.shape[:2]
    line = max(2, round(max(height, width) / 300))
    font = ImageFont.load_default(size=label_size(width, height))
    for row, det in enumerate(detections, start=1):
        b = det.box
        pen.rectangle([b.left, b.top, b.right, b.bottom], outline=(0, 255, 0), width=line)
        r = max(2, round(b.width / 40))
        for x, y in det.landmarks:
            pen.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
        text = str(row)
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        pad = max(2, (bottom - top) // 4)
        tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
        x0 = min(max(0.0, b.left), max(0.0, width - tag_w))
        y0 = b.top - tag_h if b.top - tag_h >= 0 else min(b.top, max(0.0, height - tag_h))
        pen.rectangle([x0, y0, x0 + tag_w, y0 + tag_h], fill=(0, 255, 0))
        pen.text((x0 + pad - left, y0 + pad - top), text, fill=(0, 0, 0), font=font)
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
    """The template of the face ``path`` stands for: its largest (:meth:`Engine.probe`, as CompareFaces)."""
    probe = engine.probe(engine.load_image(path), detector=detector)
    if probe is None:
        raise InvalidParameter(f"no face found in {path}")
    return np.asarray(probe.face.embedding, dtype=np.float32)


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
        "score": round(result.score, 6),
        "scoring": engine.scorer.identity(),
    }
    if as_json:
        emit_json(data)
        return
    click.echo(
        f"similarity {data['similarity']:.1f}/100  (estimated false-match rate {result.fmr:.2g}, "
        f"distance {result.distance:.4f}, normalized score {result.score:.4f})"
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
            {
                "bounding_box": render.bounding_box(d.box.to_ratios(w, h)),
                "embedding": [round(float(x), 7) for x in v],
            }
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
@click.argument("datasets", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder to write normalizer.json and calibration.json to (use it with REGARD_SCORING_DIR).",
)
@click.option(
    "--all-subjects",
    is_flag=True,
    help="Fit on every image instead of keeping a part of each set apart for checking "
    "(regard.scoring.calibrate.is_held_apart: a third of celeba_dev's subjects, half of any other set's).",
)
@click.option("--version", "version", default=None, help="Version label (default: the datasets' names).")
@click.option("--clusters", default=FitOptions.clusters, show_default=True, type=click.IntRange(2, 1000))
@click.option(
    "--target-fmr", default=FitOptions.target_fmr, show_default=True, type=click.FloatRange(1e-6, 0.1)
)
@click.option("--iterations", default=FitOptions.iterations, show_default=True, type=click.IntRange(1, 10))
@click.option("--strength", default=FitOptions.strength, show_default=True, type=click.FloatRange(0.0, 2.0))
@click.option(
    "--offset-quantile",
    default=FitOptions.offset_quantile,
    show_default=True,
    type=click.FloatRange(0.5, 1.0, min_open=True),
    help="Limit offsets to this quantile of the pool's (and 1 minus it); 1: no limit.",
)
@click.option(
    "--members",
    default=FitOptions.members,
    show_default=True,
    type=click.IntRange(1, 20),
    help="k-means clusterings (seeds) whose offsets are averaged; 1: a single clustering.",
)
@click.option("--raw", is_flag=True, help="No normalizer: a table on raw distances (regard before 0.2).")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Embedding processes."
)
def calibrate(
    datasets: tuple[Path, ...],
    out: Path,
    all_subjects: bool,
    version: str | None,
    clusters: int,
    target_fmr: float,
    iterations: int,
    strength: float,
    offset_quantile: float,
    members: int,
    raw: bool,
    workers: int,
) -> None:
    """Fit the fair score normalizer and the score -> similarity -> FMR table on DATASETS.

    Each DATASET is a folder with manifest.csv (a subject column where the same person appears
    more than once; without one, every image is taken to be a different person). Pool several,
    as diverse as the people the system will see: the normalizer is fitted without demographic
    labels, and the table makes one similarity mean one false-match rate across all of them.
    """
    from tqdm import tqdm

    from regard.evaluation.dataset import TemplateSource, compute_templates, read_dataset
    from regard.scoring.calibrate import Part, fit_scoring

    engine = Engine()
    source = TemplateSource(engine)
    parts: list[Part] = []
    for folder in datasets:
        name = folder.resolve().name
        data = read_dataset(folder, keep_subject=None if all_subjects else _kept_for_fitting(name))
        templates = compute_templates(
            source,
            data,
            engine.settings.cache_dir / "templates",
            workers=workers,
            progress=lambda rows, n: tqdm(rows, total=n, desc="embedding", unit="img"),
        )
        found = templates.acquired
        parts.append(Part(name, templates.embeddings[found], np.array(data.subjects)[found]))
        click.echo(f"{name}: {int(found.sum())} of {len(found)} images with a face")
    label = version or "+".join(p.name for p in parts)
    options = FitOptions(
        clusters=clusters,
        target_fmr=target_fmr,
        iterations=iterations,
        strength=strength,
        offset_quantile=offset_quantile,
        members=members,
    )
    normalizer, _table, table_data = fit_scoring(
        parts,
        model=engine.embedder.identity.key,
        version=label,
        options=options,
        normalize=not raw,
        provenance={
            "held_apart": "none (all images)" if all_subjects else "regard.scoring.calibrate.is_held_apart",
            "made_by": " ".join(
                ["regard calibrate", *(str(d) for d in datasets)]
                + [f"--clusters {clusters} --target-fmr {target_fmr:g} --iterations {iterations}"]
                + [f"--strength {strength:g} --offset-quantile {offset_quantile:g} --members {members}"]
                + (["--all-subjects"] if all_subjects else [])
                + (["--raw"] if raw else [])
            ),
            "template_identity": source.identity(),
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    if normalizer is not None:
        normalizer.save(out / "normalizer.json")
    elif (out / "normalizer.json").exists():
        (out / "normalizer.json").unlink()  # a raw table must not be read with a stale normalizer
    (out / "calibration.json").write_text(json.dumps(table_data, indent=1) + "\n")
    click.echo(
        f"wrote {out}: {'no normalizer (raw distances)' if normalizer is None else 'normalizer.json'}"
        f" and calibration.json from {table_data['counts']['genuine']} genuine and "
        f"{table_data['counts']['impostor']} impostor pairs"
    )


def _kept_for_fitting(dataset: str) -> Callable[[str], bool]:
    """The samples of ``dataset`` that fitting may see (the rest is held apart for checking)."""
    from regard.scoring.calibrate import is_held_apart

    return lambda subject: not is_held_apart(dataset, subject)


commands = [detect, compare, embed, calibrate]
