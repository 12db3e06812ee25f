"""Bad image files built in code, for the bad-input suite."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_bytes(colour: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    """A small valid JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def bomb_jpeg(width: int, height: int) -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels: a decompression bomb."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


#: A PPM whose header has a letter in the width: PIL raises ValueError (not OSError) while reading it.
MALFORMED_PPM = b"P6\n4 x4\n255\n" + bytes(48)


def greyscale_bytes(values: list[list[float]], dtype: str, image_format: str, **save_options) -> bytes:
    """A greyscale image file of ``values`` stored as ``dtype`` (``"uint16"`` -> PIL mode I;16, ``"int32"`` -> I,
    ``"float32"`` -> F): the high-bit-depth images PIL would clip to white or black when converting to RGB."""
    buffer = io.BytesIO()
    Image.fromarray(np.array(values, dtype=dtype)).save(buffer, format=image_format, **save_options)
    return buffer.getvalue()
