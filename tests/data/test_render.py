"""The drawn catalogue shows what its captions say: every fabric and pattern is visible on every colour."""

import numpy as np
import pytest
from PIL import Image

from course_utils.data.render import COLOURS_RGB, apply_fabric, garment_mask, render_item

PLAIN = {"category": "tops", "sleeve": "short", "neckline": "crew", "pattern": "solid", "fabric": "cotton"}
# The default photos add sensor noise of standard deviation 5 to every pixel; a look must move the garment by more.
MIN_FABRIC_CHANGE = 6.0
MIN_PATTERN_CHANGE = 15.0
# The 64-px pixels wholly inside the garment (noise off, the garment is neither moved nor turned)
INSIDE = np.asarray(Image.fromarray((garment_mask(PLAIN)[0] * 255).astype(np.uint8)).resize((64, 64), Image.BOX)) == 255


def mean_change(colour: str, **look) -> float:
    """Mean absolute change of the garment's pixels (its most changed channel) that ``look`` makes, noise off."""
    changes = []
    for seed in range(4):
        plain = render_item({**PLAIN, "colour": colour}, np.random.default_rng(seed), noise=0.0)
        styled = render_item({**PLAIN, "colour": colour, **look}, np.random.default_rng(seed), noise=0.0)
        difference = np.abs(styled.astype(np.float32) - plain.astype(np.float32))[INSIDE]
        changes.append(difference.mean(axis=0).max())
    return float(np.mean(changes))


@pytest.mark.parametrize("colour", list(COLOURS_RGB))
def test_every_fabric_and_pattern_shows_on_every_colour(colour):
    # Before 2026-12-05 a multiplicative shade left black denim, knit and leather within 3-4 of black cotton, black
    # checks (a darker tone of black) within 7, yellow flowers on yellow within 5: captions said what no pixel showed.
    for fabric in ("denim", "knit", "leather"):
        assert mean_change(colour, fabric=fabric) >= MIN_FABRIC_CHANGE, (colour, fabric)
    for pattern in ("striped", "dotted", "checked", "floral", "graphic"):
        assert mean_change(colour, pattern=pattern) >= MIN_PATTERN_CHANGE, (colour, pattern)


def test_a_shade_darkens_light_cloth_and_lightens_dark_cloth():
    shade = np.array([[[0.8], [1.0]]], np.float32)
    light = np.full((1, 2, 3), 200.0, np.float32)
    dark = np.full((1, 2, 3), 20.0, np.float32)
    np.testing.assert_allclose(apply_fabric(light, shade, dark=False), light * shade)
    np.testing.assert_allclose(apply_fabric(dark, shade, dark=True)[0, :, 0], [255 - 235 * 0.8, 20.0])
