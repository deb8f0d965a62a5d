"""Decoding every supported format, EXIF orientation, colour modes, and every bad-input case."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from regard.errors import FileNotFound, ImageTooLarge, InvalidImageFormat
from regard.face.imaging import load_image


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())  # 512 x 512 RGB


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "lossless"),
    [
        ("JPEG", "RGB", False),
        ("PNG", "RGB", True),
        ("WEBP", "RGB", False),
        ("BMP", "RGB", True),
        ("TIFF", "RGB", True),
        ("GIF", "P", False),
        ("PPM", "L", True),  # Pillow writes PGM for greyscale images
    ],
)
def test_each_format_decodes_to_rgb(astronaut: Image.Image, fmt: str, mode: str, lossless: bool) -> None:
    src = astronaut.convert(mode)
    raw = encode(src, fmt)
    out = load_image(raw)
    assert out.dtype == np.uint8
    assert out.shape == (512, 512, 3)
    expected = np.asarray(src.convert("RGB"), dtype=np.int16)
    err = np.abs(out.astype(np.int16) - expected).mean()
    assert err == 0 if lossless else err < 12


def test_pgm_header_is_greyscale(astronaut: Image.Image) -> None:
    raw = encode(astronaut.convert("L"), "PPM")
    assert raw.startswith(b"P5")
    out = load_image(raw)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_path_and_bytes_agree(astronaut: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    astronaut.save(path)
    assert (load_image(path) == load_image(path.read_bytes())).all()
    assert (load_image(str(path)) == load_image(bytearray(path.read_bytes()))).all()


def test_gif_first_frame(tmp_path: Path) -> None:
    red = Image.new("RGB", (32, 16), (255, 0, 0))
    blue = Image.new("RGB", (32, 16), (0, 0, 255))
    raw = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    out = load_image(raw)
    assert out.shape == (16, 32, 3)
    assert tuple(out[8, 8]) == (255, 0, 0)


def test_exif_orientation_is_applied(astronaut: Image.Image) -> None:
    wide = astronaut.crop((0, 0, 512, 256))  # 512 wide, 256 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    raw = encode(wide, "JPEG", exif=exif.tobytes())
    out = load_image(raw)
    assert out.shape == (512, 256, 3)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(mode: str) -> None:
    img = Image.new(mode, (8, 8), (0, 0) if mode == "LA" else (0, 0, 0, 0))
    out = load_image(encode(img, "PNG"))
    assert out.shape == (8, 8, 3)
    assert (out == 255).all()


def test_sixteen_bit_greyscale() -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = load_image(encode(img, "PNG"))
    assert out.shape == (8, 8, 3)
    assert out[..., 0].max() == 255 and out[0, 0, 0] == 0


def test_palette_with_transparency() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([10, 20, 30] * 256)
    raw = encode(img, "PNG", transparency=0)
    assert (load_image(raw) == 255).all()


# -- bad input -------------------------------------------------------------------------------------


def test_empty_input() -> None:
    with pytest.raises(InvalidImageFormat, match="empty"):
        load_image(b"")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(InvalidImageFormat):
        load_image(path)


def test_random_bytes() -> None:
    with pytest.raises(InvalidImageFormat):
        load_image(np.random.default_rng(0).bytes(4096))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_truncated_file(astronaut: Image.Image, fmt: str) -> None:
    raw = encode(astronaut, fmt)
    with pytest.raises(InvalidImageFormat):
        load_image(raw[: len(raw) // 2])


def test_corrupt_body(astronaut: Image.Image) -> None:
    raw = bytearray(encode(astronaut, "PNG"))
    raw[200:400] = bytes(200)  # zero out part of the compressed stream (CRC mismatch)
    with pytest.raises(InvalidImageFormat):
        load_image(bytes(raw))


def test_unsupported_format(astronaut: Image.Image) -> None:
    raw = encode(astronaut.resize((64, 64)), "ICO")
    with pytest.raises(InvalidImageFormat, match="not supported"):
        load_image(raw)


def test_too_many_bytes(astronaut: Image.Image) -> None:
    raw = encode(astronaut, "PNG")
    with pytest.raises(ImageTooLarge):
        load_image(raw, max_bytes=len(raw) - 1)


def test_too_many_bytes_from_path(astronaut: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    astronaut.save(path)
    with pytest.raises(ImageTooLarge):
        load_image(path, max_bytes=1000)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 12000 x 12000 one-bit pixels compress to a few kilobytes but decode to 144 megapixels.
    bomb = encode(Image.new("1", (12000, 12000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        load_image(bomb)


def test_pixel_limit_is_configurable(astronaut: Image.Image) -> None:
    with pytest.raises(ImageTooLarge):
        load_image(encode(astronaut, "PNG"), max_pixels=512 * 512 - 1)
    assert load_image(encode(astronaut, "PNG"), max_pixels=512 * 512).shape == (512, 512, 3)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    """A path that names no file is "file not found" (issue 19), not an image format error."""
    with pytest.raises(FileNotFound, match=r"^file not found: "):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(FileNotFound, match=r"^not a file: "):
        load_image(tmp_path)
