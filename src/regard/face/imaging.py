"""Decode images from bytes or paths into RGB arrays, safely.

Accepts JPEG, PNG, WebP, BMP, TIFF, GIF (first frame) and PGM/PPM. EXIF orientation
is applied, greyscale, palette and alpha images become RGB. Every way an input can be
unusable raises :class:`~regard.errors.InvalidImageFormat` or
:class:`~regard.errors.ImageTooLarge`; nothing else escapes.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from regard.errors import ImageTooLarge, InvalidImageFormat
from regard.types import RGBImage

#: Formats regard decodes (Pillow's names).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "MPO"})

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


def read_source(source: bytes | bytearray | memoryview | str | Path, max_bytes: int) -> bytes:
    """Return the encoded bytes of ``source`` (bytes or a file path), enforcing ``max_bytes``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidImageFormat(f"cannot read image file {path}: {exc.strerror}") from exc
        if not path.is_file():
            raise InvalidImageFormat(f"{path} is not a file")
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
) -> RGBImage:
    """Decode ``source`` into an ``H x W x 3`` uint8 RGB array, upright per EXIF orientation."""
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
            try:
                img.seek(0)
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(upright)
            except Image.DecompressionBombError as exc:
                raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
            except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
                raise InvalidImageFormat(f"image data is truncated or corrupt: {exc}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, palette, 16-bit and alpha images become 8-bit RGB (alpha over white)."""
    if img.mode == "RGB":
        return img
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8))
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
