"""Issue 15, item 6: a small file must not cost huge memory to decode.

A 6,300 x 6,300 16-bit greyscale PNG compresses to about 77 KB but used to take 1.1 GB of RSS
through a float64 conversion. It is under the default pixel limit (39.7 M < 40 M) and the default
decoded-bytes limit (79 MB < 160 MB), so it is decoded; the conversion to 8-bit RGB is done in
integers, band by band, and the decode is measured in a child process to stay under 400 MB of
peak RSS (it measures about 250 MB: the 79 MB decoded image, the 119 MB result, the
interpreter). A lower decoded-bytes limit refuses it before any pixel is decoded.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regard.errors import ImageTooLarge
from regard.face.imaging import BAND_PIXELS, decoded_bytes, load_image

SIDE = 6300
RSS_LIMIT_MB = 400

# The child's own high-water mark (VmHWM, this process's memory only). Not ru_maxrss: Linux keeps
# that across fork and exec, so under a large parent (the whole suite) it reports the parent's.
CHILD = """
import json, sys
from regard.face.imaging import load_image

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

data = open(sys.argv[1], "rb").read()
before = hwm_kb()
out = load_image(data)
peak = hwm_kb()
print(json.dumps({"before_kb": before, "peak_kb": peak, "shape": list(out.shape),
                  "dtype": str(out.dtype), "max": int(out.max())}))
"""


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def huge_16bit_png() -> bytes:
    img = Image.fromarray(np.zeros((SIDE, SIDE), dtype=np.uint16))
    assert img.mode == "I;16"
    data = png(img)
    del img
    assert len(data) < 200_000  # a small file...
    assert decoded_bytes("I;16", SIDE, SIDE) == 2 * SIDE * SIDE  # ... of 79 MB decoded
    return data


def test_huge_16bit_png_decodes_in_bounded_memory(huge_16bit_png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "huge16.png"
    path.write_bytes(huge_16bit_png)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    )
    report = json.loads(child.stdout)
    assert report["shape"] == [SIDE, SIDE, 3] and report["dtype"] == "uint8" and report["max"] == 0
    peak_mb = report["peak_kb"] / 1024  # VmHWM is in KiB
    assert peak_mb < RSS_LIMIT_MB, report
    # The decode itself adds about the decoded image plus the result (79 + 119 MB), not 1 GB.
    assert (report["peak_kb"] - report["before_kb"]) / 1024 < 300, report


def test_decoded_bytes_limit_refuses_before_decoding(huge_16bit_png: bytes) -> None:
    limit = 2 * SIDE * SIDE - 1
    with pytest.raises(ImageTooLarge, match="bytes decoded"):
        load_image(huge_16bit_png, max_decoded_bytes=limit)
    # The header alone is enough: with the pixel data cut off the answer is still "too large",
    # not "truncated", so nothing was decoded before the check.
    truncated = huge_16bit_png[:200]
    with pytest.raises(ImageTooLarge, match="bytes decoded"):
        load_image(truncated, max_decoded_bytes=limit)


def test_decoded_bytes_counts_the_mode() -> None:
    assert decoded_bytes("L", 10, 10) == 100
    assert decoded_bytes("I;16B", 10, 10) == 200
    assert decoded_bytes("RGB", 10, 10) == 400  # Pillow holds RGB in four bytes per pixel
    assert decoded_bytes("I", 10, 10) == 400
    rgb = png(Image.new("RGB", (100, 100)))
    grey = png(Image.new("L", (100, 100)))
    with pytest.raises(ImageTooLarge):
        load_image(rgb, max_decoded_bytes=39_999)
    assert load_image(rgb, max_decoded_bytes=40_000).shape == (100, 100, 3)
    assert load_image(grey, max_decoded_bytes=10_000).shape == (100, 100, 3)


def test_default_decoded_bytes_limit_follows_the_pixel_limit() -> None:
    """By default four bytes per allowed pixel: the pixel limit alone decides, as before."""
    rgba = png(Image.new("RGBA", (100, 100)))
    assert load_image(rgba, max_pixels=10_000).shape == (100, 100, 3)


def test_modest_16bit_png_maps_full_range_to_8_bits() -> None:
    levels = np.arange(256, dtype=np.uint16) * 257  # 0, 257, ..., 65535
    arr = np.tile(levels, (16, 1))
    out = load_image(png(Image.fromarray(arr)))
    assert out.shape == (16, 256, 3) and out.dtype == np.uint8
    assert (out == np.arange(256, dtype=np.uint8)[None, :, None]).all()


def test_16bit_matches_the_float_reference() -> None:
    """Integer scaling gives what the old float64 path gave (round(v * 255 / peak)), within one
    level where the float rounds a tie to even."""
    arr = np.random.default_rng(0).integers(0, 4096, size=(64, 80), dtype=np.uint16)  # 12-bit data
    out = load_image(png(Image.fromarray(arr)))
    peak = float(arr.max())
    reference = np.clip(np.rint(arr.astype(np.float64) * 255.0 / peak), 0, 255)
    assert np.abs(out[..., 0].astype(np.int16) - reference.astype(np.int16)).max() <= 1
    assert out[..., 0].max() == 255  # stretched to the image's peak, as before
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16bit_peak_under_256_is_kept() -> None:
    arr = np.arange(200, dtype=np.uint16).reshape(10, 20)
    out = load_image(png(Image.fromarray(arr)))
    assert (out[..., 0] == arr).all()


def test_32bit_greyscale_negatives_are_black() -> None:
    arr = np.array([[-5, 0, 1000], [2000, 500, 4000]], dtype=np.int32)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="I").save(buf, format="TIFF")
    out = load_image(buf.getvalue())[..., 0]
    assert out.tolist() == [[0, 0, 64], [128, 32, 255]]


def test_16bit_across_several_bands() -> None:
    """A 16-bit image taller than one band is scaled by the whole image's peak, not each band's."""
    width = 512
    height = 3 * BAND_PIXELS // width + 7
    arr = np.zeros((height, width), dtype=np.uint16)
    arr[0, 0] = 1000  # the peak, in the first band only
    arr[-1, -1] = 500
    out = load_image(png(Image.fromarray(arr)), max_bytes=50_000_000)
    assert out[0, 0, 0] == 255 and out[-1, -1, 0] == 128 and int(out.sum()) == 3 * (255 + 128)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_banded_conversion_equals_pillow(mode: str) -> None:
    """Images over one band (here 3) decode to what Pillow's whole-image conversion gives."""
    side = 1500
    assert side * side > 2 * BAND_PIXELS
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8))
    src = rgb.convert(mode)
    expected = src.convert("RGB")
    if mode == "RGBA":
        src.putalpha(Image.fromarray(rng.integers(0, 256, size=(side, side), dtype=np.uint8)))
        white = Image.new("RGBA", src.size, (255, 255, 255, 255))
        expected = Image.alpha_composite(white, src).convert("RGB")
    out = load_image(png(src), max_bytes=50_000_000)
    assert (out == np.asarray(expected)).all()


def test_exif_orientation_on_a_banded_image() -> None:
    img = Image.new("RGB", (1200, 1000), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = load_image(buf.getvalue())
    assert out.shape == (1200, 1000, 3)
    assert out[2, -3, 0] > 200 and out[2, 2, 0] < 50  # the red corner is now top-right


def test_the_engine_applies_the_decoded_bytes_setting() -> None:
    """REGARD_MAX_IMAGE_DECODED_BYTES reaches the engine: a 16-bit picture over it is refused."""
    import io

    from PIL import Image

    from regard.config import Settings
    from regard.errors import ImageTooLarge
    from regard.face.engine import Engine

    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), dtype=np.uint16)).save(buf, format="PNG")
    roomy = Engine(Settings(max_image_decoded_bytes=20_000))
    assert roomy.load_image(buf.getvalue()).shape == (100, 100, 3)
    tight = Engine(Settings(max_image_decoded_bytes=19_999))  # 100 x 100 x 2 bytes
    with pytest.raises(ImageTooLarge):
        tight.load_image(buf.getvalue())
