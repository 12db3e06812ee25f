"""Photos from outside the catalogue decode as they look: upright by EXIF, transparency on white, large JPEGs at a
reduced scale that still leaves every model more pixels than it reads."""

import io

import numpy as np
import pytest
from PIL import Image

from course_utils.data.records import DECODE_MIN_SIDE, FileImage, decode_image

EXIF_ORIENTATION = 0x0112


def encoded(image: Image.Image, fmt: str, **options) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    buffer.seek(0)
    return buffer


def marked_landscape() -> Image.Image:
    """A 64 x 32 grey image with a red block in its top-left corner, so a rotation shows where the corner went."""
    image = Image.new("RGB", (64, 32), (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 16, 16))
    return image


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [(1, (64, 32), (4, 4)), (6, (32, 64), (27, 4)), (8, (32, 64), (4, 59)), (3, (64, 32), (59, 27))],
)
def test_the_exif_orientation_is_applied(orientation, size, red_corner):
    """A phone stores a portrait photo on its side with an orientation tag; decoding turns it upright (6: the
    stored top-left ends top-right, 8: bottom-left, 3: bottom-right)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    decoded = decode_image(encoded(marked_landscape(), "JPEG", exif=exif, quality=95), "phone.jpg")
    assert decoded.size == size
    red, green, _ = decoded.getpixel(red_corner)
    assert red > 200 and green < 60


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparency_is_laid_on_white_not_dropped(fmt):
    """Fully transparent pixels hide black here: a plain convert("RGB") would put the garment on black."""
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[:4, :, :] = (200, 0, 0, 255)  # opaque red top half; the bottom half is transparent black
    pixels[4:, :4, :] = (0, 0, 255, 128)  # half-transparent blue in the bottom-left quarter
    cut_out = Image.fromarray(pixels, "RGBA")
    assert cut_out.convert("RGB").getpixel((6, 6)) == (0, 0, 0)
    decoded = decode_image(encoded(cut_out, fmt, lossless=True), f"cut-out.{fmt.lower()}")
    assert decoded.mode == "RGB"
    assert decoded.getpixel((6, 6)) == (255, 255, 255)
    assert decoded.getpixel((2, 2)) == (200, 0, 0)
    red, green, blue = decoded.getpixel((1, 6))
    assert blue == 255 and 120 <= red == green <= 135  # half blue, half white


def test_a_palette_image_with_a_transparent_index_is_laid_on_white_too():
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    palette_image.paste(1, (0, 0, 2, 4))
    decoded = decode_image(encoded(palette_image, "PNG", transparency=0), "logo.png")
    assert decoded.getpixel((0, 0)) == (0, 128, 0) and decoded.getpixel((3, 3)) == (255, 255, 255)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_keeps_enough_pixels(tmp_path):
    """An 1800 x 2400 product photo (the full-resolution Kaggle set's size) decodes at half scale: 900 x 1200 keeps
    both sides at least DECODE_MIN_SIDE, a quarter scale would not (450 < 512)."""
    path = tmp_path / "full-resolution.jpg"
    Image.new("RGB", (1800, 2400), (20, 90, 160)).save(path, quality=90)
    decoded = FileImage(path).load()
    assert decoded.size == (900, 1200)
    assert min(decoded.size) >= DECODE_MIN_SIDE > min(decoded.size) // 2
    assert np.abs(np.asarray(decoded, np.int16) - (20, 90, 160)).max() <= 3


def test_a_small_jpeg_decodes_whole_and_unchanged(tmp_path):
    """The Kaggle sample's 60 x 80 photos: same size and the same pixels as PIL's plain decoding."""
    path = tmp_path / "sample.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 60, 3), np.uint8)).save(path, quality=90)
    with Image.open(path) as plain:
        expected = np.asarray(plain.convert("RGB"))
    assert np.array_equal(np.asarray(FileImage(path).load()), expected)
