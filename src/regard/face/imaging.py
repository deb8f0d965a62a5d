"""Decode images from bytes or paths into RGB arrays, safely.

Accepts JPEG, PNG, WebP, BMP, TIFF, GIF (first frame) and PGM/PPM. EXIF orientation
is applied, greyscale, palette and alpha images become RGB. Every way an input can be
unusable raises :class:`~regard.errors.InvalidImageFormat` or
:class:`~regard.errors.ImageTooLarge`; nothing else escapes.

Memory: the header's size and mode are checked against the pixel limit and the decoded-bytes
limit before any pixel is decoded; the decoded image is then converted to the ``H x W x 3``
uint8 result band by band, so a decode holds the decoded image, the result and one band of at
most :data:`BAND_PIXELS` pixels, never a float or whole-image intermediate (issue 15: a 77 KB
16-bit PNG of 6,300 x 6,300 pixels took 1.27 GB through float64; it now peaks near 260 MB of
process RSS, see tests/face/test_imaging_hardening.py).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from regard.errors import FileNotFound, ImageTooLarge, InvalidImageFormat
from regard.types import Box, RGBImage

#: Formats regard decodes (Pillow's names).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "MPO"})

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
#: Bytes per pixel of a decoded image as Pillow holds it, by mode: one byte for bilevel,
#: greyscale and palette images, two for 16-bit greyscale, four for every other mode (Pillow
#: stores RGB, YCbCr and LA in four bytes too).
DECODED_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
#: Pixels converted at once (a band of whole rows); bounds the conversion's working memory.
BAND_PIXELS = 1 << 20


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Bytes the decoded pixels of a ``width x height`` image in ``mode`` take."""
    return width * height * DECODED_BYTES_PER_PIXEL.get(mode, 4)


def read_source(source: bytes | bytearray | memoryview | str | Path, max_bytes: int) -> bytes:
    """Return the encoded bytes of ``source`` (bytes or a file path), enforcing ``max_bytes``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise FileNotFound(f"file not found: {path}") from exc
        except OSError as exc:
            raise FileNotFound(f"cannot read file {path}: {exc.strerror}") from exc
        if not path.is_file():
            raise FileNotFound(f"not a file: {path}")
        if size > max_bytes:
            raise ImageTooLarge(f"image is {size} bytes; the limit is {max_bytes}")
        data = path.read_bytes()
    if not data:
        raise InvalidImageFormat("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    return data


def load_image(
    source: bytes | bytearray | memoryview | str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decoded_bytes: int | None = None,
) -> RGBImage:
    """Decode ``source`` into an ``H x W x 3`` uint8 RGB array, upright per EXIF orientation.

    ``max_decoded_bytes`` bounds :func:`decoded_bytes` of the declared mode and size, checked
    before decoding; ``None`` means four bytes per pixel of ``max_pixels`` (the most any mode
    takes, so by default the pixel limit alone decides, as before the limit existed).
    """
    if max_decoded_bytes is None:
        max_decoded_bytes = 4 * max_pixels
    data = read_source(source, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidImageFormat("data is not an image in a supported format") from exc
        with img:
            fmt = (img.format or "").upper()
            if fmt not in SUPPORTED_FORMATS:
                raise InvalidImageFormat(f"image format {fmt or 'unknown'} is not supported")
            width, height = img.size
            if width <= 0 or height <= 0:
                raise InvalidImageFormat("image has no pixels")
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            size = decoded_bytes(img.mode, width, height)
            if size > max_decoded_bytes:
                raise ImageTooLarge(
                    f"image is {width}x{height} in mode {img.mode}, {size} bytes decoded; "
                    f"the limit is {max_decoded_bytes}"
                )
            try:
                img.seek(0)
                img.load()
                # In place: exif_transpose otherwise returns a whole copy even when upright.
                ImageOps.exif_transpose(img, in_place=True)
                return _to_rgb_array(img)
            except Image.DecompressionBombError as exc:
                raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
            except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
                raise InvalidImageFormat(f"image data is truncated or corrupt: {exc}") from exc


_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _to_rgb_array(img: Image.Image) -> RGBImage:
    """The decoded image as a new ``H x W x 3`` uint8 array, converted one band of rows at a time.

    16-bit and 32-bit greyscale is scaled to 0..255 by the image's peak when the peak is above
    255 (``round(v * 255 / peak)``, negatives as 0), in integers; a peak of 255 or less is kept.
    """
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    wide = img.mode in _WIDE_MODES
    peak = max(int(cast(tuple[int, int], img.getextrema())[1]), 0) if wide else 0
    rows = max(1, BAND_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = img if (top, bottom) == (0, height) else img.crop((0, top, width, bottom))
        if wide:
            out[top:bottom] = _scale_wide(np.asarray(band), peak)[..., None]
        else:
            out[top:bottom] = np.asarray(_to_rgb(band), dtype=np.uint8)
    return out


def _scale_wide(values: npt.NDArray[Any], peak: int) -> npt.NDArray[np.uint8]:
    """16/32-bit greyscale values as 8 bits: clipped to 0..peak, then scaled by 255/peak if peak > 255."""
    clipped = np.clip(values.astype(np.int64), 0, peak)
    if peak > 255:
        clipped = (clipped * 255 + peak // 2) // peak
    return clipped.astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, palette and alpha images become 8-bit RGB (alpha over white)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in {"RGBA", "LA", "PA"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def image_size(image: RGBImage) -> tuple[int, int]:
    """(width, height) of a decoded image."""
    return int(image.shape[1]), int(image.shape[0])


def to_png_bytes(image: RGBImage) -> bytes:
    """Encode an RGB array as PNG (for drawing and tests)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


#: A face crop's margin around the detected box, as a share of the box's larger side.
CROP_MARGIN = 0.25


def face_crop_jpeg(image: RGBImage, box: Box, *, max_side: int = 320, quality: int = 90) -> bytes:
    """The face in ``box`` (pixels) with a margin, scaled down to at most ``max_side`` pixels a
    side, as JPEG: what a reviewer sees of a face, never the whole image."""
    width, height = image_size(image)
    pad = CROP_MARGIN * max(box.width, box.height)
    left = max(0, int(box.left - pad))
    top = max(0, int(box.top - pad))
    right = min(width, round(box.right + pad))
    bottom = min(height, round(box.bottom + pad))
    if right <= left or bottom <= top:
        raise ValueError("the face box lies outside the image")
    crop = Image.fromarray(image[top:bottom, left:right])
    crop.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
