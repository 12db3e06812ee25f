"""Draw one product photo of the procedural catalogue from its attributes (PIL + NumPy, no download).

Each garment is a silhouette (category, sleeve length, garment length, neckline) filled with a colour and a
pattern, shaded by a fabric look, and photographed with nuisance: background tint, scale/position jitter,
small rotation, lighting and sensor noise — so at the default ``noise`` items with equal attributes differ pixel
by pixel. At ``noise=0`` only a pattern's phase and a fabric's texture still vary with the item: two solid cotton
items with equal attributes are then pixel-identical.

Garments are drawn on a square canvas of ``_CANVAS`` pixels a side (1.5x the default 64 px image) and
downsampled to the requested image size at the end; the helpers below return canvas-sized arrays.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLOURS_RGB = {
    "black": (28, 28, 30),
    "white": (238, 238, 236),
    "grey": (128, 128, 132),
    "navy": (28, 38, 92),
    "blue": (42, 88, 204),
    "teal": (22, 140, 140),
    "green": (44, 150, 64),
    "yellow": (238, 208, 52),
    "orange": (238, 128, 32),
    "red": (198, 32, 42),
    "pink": (238, 142, 182),
    "purple": (118, 52, 160),
    "brown": (118, 74, 40),
    "beige": (218, 198, 158),
}

_CANVAS = 96  # drawn at 1.5x the default 64 px, then downsampled with a box filter (anti-aliasing)
_K = _CANVAS / 128  # texture sizes below are given for a 128 px canvas
_YY, _XX = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32)


def _poly(points, scale=_CANVAS):
    return [(x * scale, y * scale) for x, y in points]


def _sleeves(draw, sleeve: str, shoulder_y: float, left_x: float, right_x: float) -> None:
    if sleeve == "sleeveless":
        return
    reach = {"short": (0.13, 0.16), "long": (0.19, 0.44)}[sleeve]
    dx, dy = reach
    w = 0.10
    draw.polygon(
        _poly(
            [
                (left_x, shoulder_y),
                (left_x - dx, shoulder_y + dy),
                (left_x - dx + w, shoulder_y + dy + 0.04),
                (left_x, shoulder_y + 0.16),
            ]
        ),
        fill=255,
    )
    draw.polygon(
        _poly(
            [
                (right_x, shoulder_y),
                (right_x + dx, shoulder_y + dy),
                (right_x + dx - w, shoulder_y + dy + 0.04),
                (right_x, shoulder_y + 0.16),
            ]
        ),
        fill=255,
    )


def _neckline(draw, neckline: str, centre_x: float, top_y: float) -> None:
    """Cut the neckline out of the mask (fill=0)."""
    if neckline == "crew":
        draw.ellipse(_poly([(centre_x - 0.07, top_y - 0.05), (centre_x + 0.07, top_y + 0.06)]), fill=0)
    elif neckline == "v-neck":
        draw.polygon(
            _poly([(centre_x - 0.08, top_y - 0.01), (centre_x + 0.08, top_y - 0.01), (centre_x, top_y + 0.17)]), fill=0
        )
    elif neckline == "square":
        draw.rectangle(_poly([(centre_x - 0.08, top_y - 0.01), (centre_x + 0.08, top_y + 0.08)]), fill=0)


HEM_Y = {"short": 0.58, "knee": 0.74, "long": 0.92}


def garment_mask(attributes: dict) -> tuple[np.ndarray, np.ndarray]:
    """Silhouette mask and a detail mask (buttons, seams, handles), both ``(_CANVAS, _CANVAS) float32`` in [0, 1]."""
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    detail = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw, ddraw = ImageDraw.Draw(mask), ImageDraw.Draw(detail)
    category = attributes["category"]
    sleeve = attributes.get("sleeve", "sleeveless")
    if category in ("tops", "shirts", "outerwear"):
        bottom = HEM_Y[attributes.get("length", "short")] if category == "outerwear" else 0.8
        left, right = (0.30, 0.70) if category == "outerwear" else (0.33, 0.67)
        draw.polygon(_poly([(left, 0.22), (right, 0.22), (right + 0.01, bottom), (left - 0.01, bottom)]), fill=255)
        _sleeves(draw, sleeve, 0.22, left, right)
        if category == "outerwear":
            ddraw.line(_poly([(0.5, 0.24), (0.5, bottom)]), fill=255, width=3)
            ddraw.polygon(_poly([(0.43, 0.22), (0.5, 0.36), (0.57, 0.22)]), fill=255)
        else:
            _neckline(draw, attributes.get("neckline", "crew"), 0.5, 0.22)
        if category == "shirts":
            for y in np.linspace(0.34, 0.74, 5):
                ddraw.ellipse(_poly([(0.49, y - 0.012), (0.51, y + 0.012)]), fill=255)
            ddraw.polygon(_poly([(0.40, 0.20), (0.5, 0.29), (0.46, 0.30)]), fill=255)
            ddraw.polygon(_poly([(0.60, 0.20), (0.5, 0.29), (0.54, 0.30)]), fill=255)
    elif category == "dresses":
        hem = HEM_Y[attributes.get("length", "knee")]
        draw.polygon(
            _poly([(0.38, 0.18), (0.62, 0.18), (0.60, 0.42), (0.74, hem), (0.26, hem), (0.40, 0.42)]), fill=255
        )
        _sleeves(draw, sleeve, 0.18, 0.38, 0.62)
        _neckline(draw, attributes.get("neckline", "crew"), 0.5, 0.18)
        ddraw.line(_poly([(0.40, 0.42), (0.60, 0.42)]), fill=255, width=2)
    elif category == "skirts":
        hem = HEM_Y[attributes.get("length", "knee")]
        draw.polygon(_poly([(0.37, 0.20), (0.63, 0.20), (0.76, hem), (0.24, hem)]), fill=255)
        ddraw.rectangle(_poly([(0.37, 0.20), (0.63, 0.25)]), fill=255)
    elif category in ("trousers", "shorts"):
        hem = 0.92 if category == "trousers" else 0.52
        draw.polygon(
            _poly([(0.32, 0.14), (0.68, 0.14), (0.72, hem), (0.53, hem), (0.5, 0.36), (0.47, hem), (0.28, hem)]),
            fill=255,
        )
        ddraw.rectangle(_poly([(0.32, 0.14), (0.68, 0.19)]), fill=255)
    elif category == "footwear":
        for x0, y0 in ((0.14, 0.40), (0.22, 0.62)):
            draw.polygon(
                _poly(
                    [
                        (x0, y0 + 0.14),
                        (x0 + 0.02, y0 + 0.02),
                        (x0 + 0.22, y0),
                        (x0 + 0.30, y0 + 0.06),
                        (x0 + 0.62, y0 + 0.12),
                        (x0 + 0.64, y0 + 0.20),
                        (x0, y0 + 0.20),
                    ]
                ),
                fill=255,
            )
            ddraw.rectangle(_poly([(x0, y0 + 0.17), (x0 + 0.64, y0 + 0.20)]), fill=255)
    elif category == "bags":
        draw.rectangle(_poly([(0.24, 0.40), (0.76, 0.84)]), fill=255)
        ddraw.arc(_poly([(0.34, 0.16), (0.66, 0.56)]), 180, 360, fill=255, width=5)
        ddraw.line(_poly([(0.24, 0.52), (0.76, 0.52)]), fill=255, width=2)
    else:
        raise ValueError(f"no silhouette for category {category!r}")
    return np.asarray(mask, np.float32) / 255.0, np.asarray(detail, np.float32) / 255.0


# Cloth whose brightest channel is below _DARK (black; navy, the next darkest, is 92) barely changes under a darker
# tone or a multiplicative shade (0.82 x black is still black): its checks and its fabric look are drawn lighter.
_DARK = 64.0
_PETALS = (np.array([250.0, 220.0, 70.0]), np.array([200.0, 40.0, 90.0]))  # yellow or magenta flowers


def _contrast(rgb: np.ndarray) -> np.ndarray:
    return np.array([30.0, 30.0, 34.0]) if rgb.mean() > 170 else np.array([240.0, 240.0, 236.0])


def pattern_fill(pattern: str, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ``(_CANVAS, _CANVAS, 3) float32`` texture of ``pattern`` in colour ``rgb`` (with a contrasting second tone)."""
    yy, xx = _YY, _XX
    base = np.broadcast_to(rgb, (_CANVAS, _CANVAS, 3)).astype(np.float32).copy()
    other = _contrast(rgb)
    period = rng.uniform(11, 15) * _K
    phase = rng.uniform(0, period)
    if pattern == "solid":
        return base
    if pattern == "striped":
        on = ((yy + phase) % period) < period * 0.45
    elif pattern == "dotted":
        on = (((xx + phase) % period - period / 2) ** 2 + ((yy + phase) % period - period / 2) ** 2) < (
            period * 0.22
        ) ** 2
    elif pattern == "checked":
        on = (((xx + phase) // period + (yy + phase) // period) % 2) == 0
        # a darker tone of the colour; black cannot get darker, so its checks are a lighter tone
        other = rgb * 0.55 if rgb.max() >= _DARK else rgb + (255 - rgb) * 0.4
    elif pattern == "floral":
        petals = Image.new("L", (_CANVAS, _CANVAS), 0)
        draw = ImageDraw.Draw(petals)
        for cx, cy in rng.uniform(16 * _K, _CANVAS - 16 * _K, size=(16, 2)):
            for angle in np.linspace(0, 2 * np.pi, 5, endpoint=False):
                px, py = cx + 4 * _K * np.cos(angle), cy + 4 * _K * np.sin(angle)
                draw.ellipse((px - 3 * _K, py - 3 * _K, px + 3 * _K, py + 3 * _K), fill=255)
        on = np.asarray(petals) > 0
        other = max(_PETALS, key=lambda petal: float(np.linalg.norm(petal - rgb)))  # the petal colour that shows
    elif pattern == "graphic":
        diamond = np.abs(xx - 64 * _K) + np.abs(yy - 62 * _K)
        on = (diamond < 20 * _K) & (diamond > 9 * _K)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    base[on] = other
    return base


def fabric_shading(fabric: str, rng: np.random.Generator) -> np.ndarray:
    """A ``(_CANVAS, _CANVAS, 1) float32`` shade (1 = unchanged) that gives the fabric its look: see apply_fabric."""
    yy, xx = _YY, _XX
    if fabric == "cotton":
        return np.ones((_CANVAS, _CANVAS, 1), np.float32)
    elif fabric == "denim":
        shade = 0.82 + 0.18 * (((xx + yy + rng.uniform(0, 4)) % 4) < 2)  # twill: 1-px diagonals
    elif fabric == "knit":
        shade = 0.80 + 0.20 * (0.5 + 0.5 * np.cos(2 * np.pi * xx / (5.0 * _K)))
    elif fabric == "leather":
        cx, cy = rng.uniform(40, 70) * _K, rng.uniform(35, 60) * _K
        shade = 0.85 + 0.55 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (14.0 * _K) ** 2)))
    else:
        raise ValueError(f"unknown fabric {fabric!r}")
    return shade[..., None].astype(np.float32)


def apply_fabric(texture: np.ndarray, shade: np.ndarray, dark: bool) -> np.ndarray:
    """Shade a ``(_CANVAS, _CANVAS, 3)`` texture with a fabric's ``shade`` so the fabric shows on every colour.

    The shade multiplies the colour (darker twill lines, knit ribs, a leather sheen). On ``dark`` cloth a product
    barely moves, so there the shade multiplies the distance to white instead and the lines come out lighter.
    """
    return 255.0 - (255.0 - texture) * shade if dark else texture * shade


def render_item(attributes: dict, rng: np.random.Generator, image_size: int = 64, noise: float = 1.0) -> np.ndarray:
    """Render one product photo.

    Args:
        attributes: category, colour, pattern, fabric and the optional sleeve, neckline and length.
        rng: per-item generator (the catalogue derives it from its seed and the item index).
        image_size: output side in pixels.
        noise: nuisance strength; 0 gives clean centred renders, 1 the default photo variation.

    Returns:
        ``(image_size, image_size, 3) uint8`` RGB image.
    """
    rgb = np.clip(np.array(COLOURS_RGB[attributes["colour"]]) + rng.normal(0, 8 * noise, 3), 0, 255).astype(np.float32)
    mask, detail = garment_mask(attributes)
    texture = pattern_fill(attributes["pattern"], rgb, rng)
    texture = apply_fabric(texture, fabric_shading(attributes["fabric"], rng), dark=rgb.max() < _DARK)
    texture *= 1.0 - 0.35 * detail[..., None]
    np.clip(texture, 0, 255, out=texture)
    background = np.clip(235 + rng.normal(0, 14 * noise, 3), 0, 255).astype(np.float32)
    alpha = mask[..., None]
    photo = background + (texture - background) * alpha

    image = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    scale = 1.0 + rng.uniform(-0.12, 0.06) * noise
    angle = rng.uniform(-8, 8) * noise
    shift = rng.uniform(-0.06, 0.06, 2) * _CANVAS * noise
    fill = tuple(int(c) for c in background)
    image = image.rotate(angle, resample=Image.BILINEAR, translate=tuple(shift), fillcolor=fill)
    if scale != 1.0:
        side = int(round(_CANVAS * scale))
        resized = image.resize((side, side), Image.BILINEAR)
        canvas = Image.new("RGB", (_CANVAS, _CANVAS), fill)
        offset = (_CANVAS - side) // 2
        if side <= _CANVAS:
            canvas.paste(resized, (offset, offset))
        else:
            canvas.paste(resized.crop((-offset, -offset, -offset + _CANVAS, -offset + _CANVAS)))
        image = canvas
    image = image.resize((image_size, image_size), Image.BOX)

    pixels = np.asarray(image, np.float32)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    direction = rng.uniform(-1, 1, 2)
    lighting = (
        1.0 + 0.15 * noise * (direction[0] * (xx - 0.5) + direction[1] * (yy - 0.5)) + rng.uniform(-0.08, 0.08) * noise
    )
    pixels = pixels * lighting[..., None].astype(np.float32) + rng.normal(0, 5 * noise, pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)
