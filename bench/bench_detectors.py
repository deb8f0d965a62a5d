"""Detectors side by side: recall, precision, failures and time per photo.

For each detector (dlib HOG with 0 and 1 upsample, MTCNN on onnxruntime, dlib's MMOD CNN):

* ``detection/dlib``: recall and precision against the imglab boxes in ``training.xml`` and
  ``testing.xml`` (boxes marked ``ignore='1'`` are left out; a detection that overlaps one is
  neither a true nor a false positive). A detection matches a box at IoU >= 0.5 (greedy, most
  confident first); recall at IoU >= 0.3 is shown too, because detectors draw boxes of different
  shapes (dlib's are square around eyebrows-to-chin, MTCNN's taller, from forehead to chin).
* ``recognition/celeba_dev``: photos where no face was found (each photo shows one subject).
* time: milliseconds per photo over every photo above (wall clock, and this process's CPU time),
  detection as :meth:`regard.face.engine.Engine.detect` runs it (photos scaled to at most 1024 pixels,
  minimum face 20 pixels).

Every detector runs in this one process on the same photos, so the ratios between rows hold even
on a loaded machine. Run:

    .venv/bin/python bench/bench_detectors.py [--celeba-step 4] [--cnn-photos 12]

``--celeba-step`` takes every n-th celeba_dev photo (1 = all 1,396); MMOD CNN is slow on a CPU, so
it runs on the dlib set and only the first ``--cnn-photos`` of the celeba sample.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regard.face.detect.base import Detector, downscale, finalize, rescale
from regard.face.detect.dlib_detectors import HogDetector
from regard.face.engine import DEFAULT_DETECTOR, Engine
from regard.types import Box, Detection

ROOT = Path(__file__).resolve().parents[1]


def imglab_boxes(folder: Path) -> dict[str, tuple[list[Box], list[Box]]]:
    """file -> (boxes, ignored boxes) from dlib's imglab XML files."""
    out: dict[str, tuple[list[Box], list[Box]]] = {}
    for xml in ("training.xml", "testing.xml"):
        for img in ET.parse(folder / xml).getroot().iter("image"):
            keep, ignore = out.setdefault(str(img.get("file")), ([], []))
            for b in img.iter("box"):
                box = Box(*(float(b.get(k, 0)) for k in ("left", "top", "width", "height")))
                (ignore if b.get("ignore") == "1" else keep).append(box)
    return out


@dataclass
class Tally:
    truth: int = 0
    hits50: int = 0
    hits30: int = 0
    true_pos: int = 0
    false_pos: int = 0
    celeba: int = 0
    celeba_missed: int = 0
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def match(found: list[Detection], truth: list[Box], ignore: list[Box], iou: float) -> tuple[int, int, int]:
    """(truth boxes matched, true positives, false positives) by greedy matching."""
    free = list(range(len(truth)))
    tp = fp = 0
    for det in sorted(found, key=lambda d: d.confidence, reverse=True):
        best, best_iou = -1, iou
        for i in free:
            v = det.box.iou(truth[i])
            if v >= best_iou:
                best, best_iou = i, v
        if best >= 0:
            free.remove(best)
            tp += 1
        elif not any(det.box.iou(g) >= 0.3 for g in ignore):
            fp += 1
    return len(truth) - len(free), tp, fp


def timed(engine: Engine, detector: Detector, image: np.ndarray, tally: Tally) -> list[Detection]:
    """What Engine.detect does, with this detector object, timed."""
    w0, c0 = time.perf_counter(), time.process_time()
    small, factor = downscale(image, engine.settings.detect_max_side)
    found = detector.detect(small, min_face_size=max(1, round(engine.settings.min_face_size * factor)))
    result = finalize([rescale(d, factor) for d in found])
    tally.wall.append(time.perf_counter() - w0)
    tally.cpu.append(time.process_time() - c0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--celeba-step", type=int, default=4)
    parser.add_argument("--cnn-photos", type=int, default=12)
    parser.add_argument("--detectors", default="hog0,hog1,mtcnn,cnn")
    args = parser.parse_args()

    engine = Engine()
    detectors: dict[str, Detector] = {
        "hog0": HogDetector(engine.predictors, max_upsample=0),
        "hog1": HogDetector(engine.predictors, max_upsample=1),
        "mtcnn": engine.detector("mtcnn"),
        "cnn": engine.detector("cnn"),
    }
    names = [n for n in args.detectors.split(",") if n]
    tallies = {n: Tally() for n in names}

    dlib_dir = args.datasets / "detection" / "dlib"
    truth = imglab_boxes(dlib_dir)
    dlib_images = {f: engine.load_image(dlib_dir / f) for f in truth}
    celeba_dir = args.datasets / "recognition" / "celeba_dev"
    with open(celeba_dir / "manifest.csv", newline="") as fh:
        celeba = [r["path"] for r in csv.DictReader(fh)][:: args.celeba_step]

    for name in names:  # warm-up: load the models before anything is timed
        timed(engine, detectors[name], dlib_images[next(iter(truth))], Tally())
    # Photo by photo, every detector in turn, so a change in the machine's load hits all alike.
    for file, (boxes, ignore) in truth.items():
        for name in names:
            t = tallies[name]
            found = timed(engine, detectors[name], dlib_images[file], t)
            t.truth += len(boxes)
            hits, tp, fp = match(found, boxes, ignore, 0.5)
            t.hits50 += hits
            t.true_pos += tp
            t.false_pos += fp
            t.hits30 += match(found, boxes, ignore, 0.3)[0]
    for i, path in enumerate(celeba):
        image = engine.load_image(celeba_dir / path)
        for name in names:
            if name == "cnn" and i >= args.cnn_photos:
                continue
            t = tallies[name]
            t.celeba += 1
            t.celeba_missed += not timed(engine, detectors[name], image, t)
        if (i + 1) % 50 == 0:
            print(f"  celeba_dev: {i + 1}/{len(celeba)}", file=sys.stderr, flush=True)

    print()
    print(
        "| detector | recall IoU>=0.5 | precision IoU>=0.5 | recall IoU>=0.3 | celeba_dev photos | "
        "no face found | ms/photo (wall, median) | ms/photo (wall, mean) | ms/photo (CPU, mean) |"
    )
    print("|" + "---|" * 9)
    for name in names:
        t = tallies[name]
        precision = t.true_pos / max(t.true_pos + t.false_pos, 1)
        print(
            f"| {name} | {t.hits50}/{t.truth} = {t.hits50 / t.truth:.3f} | {precision:.3f} | "
            f"{t.hits30 / t.truth:.3f} | {t.celeba} | {t.celeba_missed} ({t.celeba_missed / t.celeba:.1%}) | "
            f"{np.median(t.wall) * 1000:.0f} | {np.mean(t.wall) * 1000:.0f} | {np.mean(t.cpu) * 1000:.0f} |"
        )
    print(f"\nengine.DEFAULT_DETECTOR = {DEFAULT_DETECTOR!r}")


if __name__ == "__main__":
    main()
