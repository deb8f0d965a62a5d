"""What the detector fallback cascade and the flip-mean templates cost, side by side in one run.

Prints:

1. detection on celeba_dev photos where the default detector (MTCNN) finds a face, with the
   fallback cascade on and off: the same faces, the same time (the cascade is never called);
2. on FairFace crops (spread over demographics/fairface_train) where MTCNN finds nothing: the time
   MTCNN takes to fail, the time the cascade adds, and which step recovers each crop;
3. the descriptor alone vs the flip-mean template (chip and mirror in one batch), in ms/face;
4. faceless pictures (scikit-image's faceless photos, and background crops of the PASCAL photos
   in detection/dlib away from every labelled or detected face), where every step runs: the
   pictures each cascade prefix finds a (false) face in, and its time per picture;
5. a faceless photo at 640x480, 1600x1200 and 4032x3024 (scikit-image's coffee, resized), every
   cascade prefix, with the padding steps as shipped (they enlarge the padded image only up to
   ``PAD_UPSAMPLE_MAX_SIDE``) and enlarging it at any size (as before that limit), side by side.

Timings are the best of ``--reps`` passes, the two variants interleaved photo by photo so that
a busy machine weighs on both alike.

Usage: .venv/bin/python bench/bench_fallback.py [--photos 40] [--crops 400] [--reps 3]
       [--sections 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import _timed as _best
from regard.config import Settings
from regard.face.align import face_chips
from regard.face.detect import fallback
from regard.face.detect.base import alignment_box
from regard.face.embed import mean_of_mirrors, with_mirrors
from regard.face.engine import Engine
from regard.types import RGBImage

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REGARD_DATASETS", ROOT.parent / "shared" / "datasets"))


def _rows(folder: Path, n: int) -> list[dict[str, str]]:
    """``n`` rows spread evenly over the manifest."""
    with open(folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    step = max(1, len(rows) // max(n, 1))
    return rows[::step][:n]


def _on_off(on: Engine, off: Engine, images: list[RGBImage], reps: int) -> None:
    t_on = np.zeros(len(images))
    t_off = np.zeros(len(images))
    same = 0
    for i, image in enumerate(images):
        a, b = on.detect(image), off.detect(image)
        same += a == b
        t_on[i] = _best(lambda im=image: on.detect(im), reps)
        t_off[i] = _best(lambda im=image: off.detect(im), reps)
    n = len(images)
    print(f"\n1. detection where MTCNN finds a face: {n} celeba_dev photos")
    print(f"   fallback 'none'         {t_off.mean() * 1000:8.1f} ms/photo")
    ratio = t_on.sum() / t_off.sum()
    label = f"fallback '{','.join(on.fallback_steps())}'"
    print(f"   {label:24s}{t_on.mean() * 1000:8.1f} ms/photo   ratio {ratio:.3f}")
    print(f"   identical detections on {same}/{n} photos")


def _cascade(on: Engine, crops: list[tuple[str, RGBImage]], scanned: int, reps: int) -> None:
    print(f"\n2. FairFace crops where MTCNN finds nothing: {len(crops)} of {scanned} scanned")
    if not crops:
        return
    steps = on.fallback_steps()
    # The step that finds a crop: the first cascade prefix that finds it.
    cut = [",".join(steps[:k]) for k in range(1, len(steps) + 1)]
    prefixes = [Engine(replace(on.settings, detect_fallback=c)) for c in cut]
    for engine in prefixes:
        engine.predictors = on.predictors
    t_fail, t_all = np.zeros(len(crops)), np.zeros(len(crops))
    finder = []
    for i, (_, image) in enumerate(crops):
        found = on.detect(image)
        step = next((steps[k] for k, e in enumerate(prefixes) if e.detect(image)), "nothing")
        finder.append(step if found else "nothing")
        t_fail[i] = _best(lambda im=image: on.detect(im, detector="mtcnn"), reps)
        t_all[i] = _best(lambda im=image: on.detect(im), reps)
    extra = t_all - t_fail
    for key in [*steps, "nothing"]:
        mine = np.asarray(finder) == key
        cost = f"   the cascade adds {extra[mine].mean() * 1000:6.1f} ms" if mine.any() else ""
        label = "still no face" if key == "nothing" else f"found by {key}"
        print(f"   {label:24s} {int(mine.sum()):4d}{cost}")
    print(f"   MTCNN failing           {t_fail.mean() * 1000:8.1f} ms/crop")
    print(f"   MTCNN + cascade         {t_all.mean() * 1000:8.1f} ms/crop")
    ms = extra * 1000
    spread = f"median {np.median(ms):.1f}, max {ms.max():.1f}"
    print(f"   the cascade adds        {ms.mean():8.1f} ms/crop ({spread})")


def _flip(engine: Engine, images: list[RGBImage], reps: int) -> None:
    chips_list = []
    for image in images:
        dets = engine.detect(image, max_faces=1)
        if dets:
            chips_list.append(face_chips(image, [alignment_box(dets[0])], engine.predictors))
    chips = np.concatenate(chips_list)
    n = len(chips)
    emb = engine.embedder
    emb.embed_chips(chips[:2])
    t_plain = t_flip = float("inf")
    for _ in range(reps):  # interleaved
        t_plain = min(t_plain, _best(lambda: emb.embed_chips(chips), 1))
        t_flip = min(t_flip, _best(lambda: mean_of_mirrors(emb.embed_chips(with_mirrors(chips))), 1))
    print(f"\n3. descriptor, {n} faces in one batch ({engine.settings.embed_backend}):")
    print(f"   chip only               {t_plain / n * 1000:8.2f} ms/face")
    print(f"   flip-mean (2 chips)     {t_flip / n * 1000:8.2f} ms/face   x{t_flip / t_plain:.2f}")


SKIMAGE_FACELESS = (
    "coffee",
    "chelsea",
    "rocket",
    "horse",
    "coins",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
    "clock",
    "colorwheel",
    "logo",
    "cell",
)


def _faceless(engine: Engine, crops_per_photo: int) -> list[tuple[str, RGBImage]]:
    """scikit-image's faceless photos, and square background crops (80 px and up) of the PASCAL
    photos of detection/dlib that keep half a box away from every labelled or detected face."""
    import re

    out: list[tuple[str, RGBImage]] = []
    for name in SKIMAGE_FACELESS:
        image = np.asarray(getattr(data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / max(1e-9, float(np.ptp(image)))).astype(np.uint8)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append((name, np.ascontiguousarray(image[..., :3])))
    folder = DATASETS / "detection" / "dlib"
    xml = "".join((folder / f).read_text() for f in ("training.xml", "testing.xml") if (folder / f).is_file())
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for m in re.finditer(r"<image file='([^']+)'[^>]*>(.*?)</image>", xml, re.S):
        found = re.findall(r"top='(-?\d+)' left='(-?\d+)' width='(\d+)' height='(\d+)'", m.group(2))
        boxes.setdefault(m.group(1), []).extend(
            (float(b[1]), float(b[0]), float(b[2]), float(b[3])) for b in found
        )
    rng = np.random.default_rng(0)
    for name, labelled in sorted(boxes.items()):
        image = engine.load_image(folder / name)
        h, w = image.shape[:2]
        faces = labelled + [
            (d.box.left, d.box.top, d.box.width, d.box.height)
            for det in ("hog", "cnn", "mtcnn")
            for d in engine.detect(image, detector=det)
        ]
        got = 0
        for _ in range(400):
            if got >= crops_per_photo or min(h, w) <= 80:
                break
            side = int(rng.integers(80, min(h, w)))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            if any(
                x < fl + fw * 1.5
                and fl - fw * 0.5 < x + side
                and y < ft + fh * 1.5
                and ft - fh * 0.5 < y + side
                for fl, ft, fw, fh in faces
            ):
                continue
            out.append((f"{name}@{x},{y},{side}", np.ascontiguousarray(image[y : y + side, x : x + side])))
            got += 1
    return out


def _false_faces(on: Engine, pictures: list[tuple[str, RGBImage]]) -> None:
    steps = on.fallback_steps()
    cascades = ["none"] + [",".join(steps[:k]) for k in range(1, len(steps) + 1)]
    engines = [Engine(replace(on.settings, detect_fallback=c)) for c in cascades]
    for engine in engines:
        engine.predictors = on.predictors
    print(f"\n4. faceless pictures: {len(pictures)} (every cascade step runs on them)")
    for cascade, engine in zip(cascades, engines, strict=True):
        times, false = np.zeros(len(pictures)), []
        for i, (name, image) in enumerate(pictures):
            found = engine.detect(image)
            times[i] = _best(lambda im=image, e=engine: e.detect(im), 1)
            if found:
                false.append(name)
        cost = f"{times.mean() * 1000:8.1f} ms/picture"
        print(f"   {cascade:28s} false faces in {len(false):3d}   {cost}   {false}")


def _large_faceless(on: Engine, reps: int) -> None:
    steps = on.fallback_steps()
    cascades = ["none"] + [",".join(steps[:k]) for k in range(1, len(steps) + 1)]
    engines = [Engine(replace(on.settings, detect_fallback=c)) for c in cascades]
    for engine in engines:
        engine.predictors = on.predictors
    shipped = fallback.PAD_UPSAMPLE_MAX_SIDE
    print(f"\n5. a faceless photo: padding steps enlarging up to {shipped} px (shipped) / any size (before)")
    for width, height in ((640, 480), (1600, 1200), (4032, 3024)):
        photo = np.asarray(Image.fromarray(data.coffee()).resize((width, height)))
        for cascade, engine in zip(cascades, engines, strict=True):
            times = []
            for limit in (shipped, 10**9):  # interleaved, so a busy machine weighs on both alike
                fallback.PAD_UPSAMPLE_MAX_SIDE = limit
                try:
                    assert engine.detect(photo) == []
                    times.append(_best(lambda e=engine, im=photo: e.detect(im), reps))
                finally:
                    fallback.PAD_UPSAMPLE_MAX_SIDE = shipped
            now, before = times
            print(
                f"   {width}x{height} {cascade:26s} {now * 1000:8.0f} ms / {before * 1000:8.0f} ms"
                f"   ratio {now / before:.2f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=40, help="celeba_dev photos for 1 and 3")
    parser.add_argument("--crops", type=int, default=400, help="FairFace crops scanned for 2")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--faceless-crops", type=int, default=15, help="background crops per PASCAL photo for 4"
    )
    parser.add_argument("--sections", default="1,2,3,4,5", help="which of the sections to run")
    args = parser.parse_args()
    sections = {int(x) for x in args.sections.split(",")}
    celeba = DATASETS / "recognition" / "celeba_dev"
    if not celeba.is_dir():
        print(f"datasets folder {celeba} is absent", file=sys.stderr)
        return 1
    base = Settings.from_env(onnx_provider="cpu", detector="default")
    on = Engine(replace(base, detect_fallback=Settings().detect_fallback))  # the shipped cascade
    off = Engine(replace(base, detect_fallback="none"))
    off.predictors = on.predictors  # share the shape predictors (loaded once)
    print(f"cpu cores: {os.cpu_count()}; onnx threads: {base.threads or 'default'}")

    photos = [on.load_image(celeba / r["path"]) for r in _rows(celeba, args.photos * 2)]
    hits = [im for im in photos if on.detect(im, detector="mtcnn")][: args.photos]
    if 1 in sections:
        _on_off(on, off, hits, args.reps)

    fairface = DATASETS / "demographics" / "fairface_train"
    if 2 not in sections:
        pass
    elif fairface.is_dir():
        rows = _rows(fairface, args.crops)
        crops = []
        for row in rows:
            image = on.load_image(fairface / row["path"])
            if not on.detect(image, detector="mtcnn"):
                crops.append((row["race"], image))
        _cascade(on, crops, len(rows), args.reps)
        print(f"   by race (misses): {dict(sorted(Counter(r for r, _ in crops).items()))}")
    else:
        print(f"\n2. skipped: {fairface} is absent")

    if 3 in sections:
        _flip(on, hits, args.reps)
    if 4 in sections:
        _false_faces(on, _faceless(on, args.faceless_crops))
    if 5 in sections:
        _large_faceless(on, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
