"""A DeepFashion-MultiModal folder written from the procedural catalogue, in the dataset's documented layout.

The real dataset is not on these machines. To run the real-photo profile on its loader end to end, this writes each
drawn garment as ``images/<GENDER>-<Category>-id_<product>-01_1_front.jpg`` (its mirror image as the product's
``02_2_side`` view), a ``captions.json`` of descriptions in the dataset's wording ("The lady wears a long-sleeve
dress with striped patterns. ..."), and the shape, fabric and pattern label files with the codes of the official
README as revised in 2023 (neckline 0-6, no gap at 3: the loader's tables, which cite the issue). Footwear and
bags, absent from DeepFashion's full-body photos, are left out.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import ImageOps

from course_utils.data.deepfashion import FABRIC, PATTERN, SHAPE_COLUMNS
from course_utils.data.records import Catalogue

CATEGORIES = {
    "tops": "Tees_Tanks",
    "shirts": "Blouses_Shirts",
    "dresses": "Dresses",
    "skirts": "Skirts",
    "trousers": "Pants",
    "shorts": "Shorts",
    "outerwear": "Jackets_Coats",
}
NOUNS = {
    "tops": "T-shirt",
    "shirts": "shirt",
    "dresses": "dress",
    "skirts": "skirt",
    "trousers": "pants",
    "shorts": "shorts",
    "outerwear": "jacket",
}
SLEEVES = {"sleeveless": "sleeveless", "short": "short-sleeve", "long": "long-sleeve"}
NECKLINES = {"v-neck": "V-shape", "square": "square", "crew": "round"}
FABRICS = {"denim": "denim", "cotton": "cotton", "leather": "leather", "knit": "knitted"}
PATTERNS = {"floral": "floral", "graphic": "graphic", "striped": "striped", "solid": "pure color"}  # else "other"
LOWER = ("skirts", "trousers", "shorts")


def code_of(names: dict[int, str], value: str) -> int:
    """The label code of ``value`` in one of the loader's code tables."""
    return next(code for code, name in names.items() if name == value)


def write_deepfashion_multimodal(root: Path, catalogue: Catalogue) -> list[str]:
    """Write ``catalogue``'s garments to ``root`` in DeepFashion-MultiModal's layout; return the image names."""
    (root / "images").mkdir(parents=True)
    (root / "labels" / "shape").mkdir(parents=True)
    (root / "labels" / "texture").mkdir(parents=True)
    captions, shape_lines, fabric_lines, pattern_lines = {}, [], [], []
    for number, item in enumerate(catalogue):
        attributes = item.attributes
        if attributes["category"] not in CATEGORIES:
            continue
        gender = ("MEN", "WOMEN")[number % 2]
        product = f"{gender}-{CATEGORIES[attributes['category']]}-id_{number:08d}"
        sleeve = SLEEVES.get(attributes.get("sleeve", ""), "NA")
        neckline = NECKLINES.get(attributes.get("neckline", ""), "NA")
        fabric = FABRICS[attributes["fabric"]]
        pattern = PATTERNS.get(attributes["pattern"], "other")
        noun = NOUNS[attributes["category"]]
        person = ("The gentleman", "The lady")[gender == "WOMEN"]
        text = (
            f"{person} wears a {'' if sleeve == 'NA' else sleeve + ' '}{noun} with {pattern} patterns. "
            f"The {noun} is with {fabric} fabric."
        )
        garment = 1 if attributes["category"] in LOWER else 0  # fabric and pattern columns: upper, lower, outer
        fabric_codes = [code_of(FABRIC, "NA")] * 3
        pattern_codes = [code_of(PATTERN, "NA")] * 3
        fabric_codes[garment], pattern_codes[garment] = code_of(FABRIC, fabric), code_of(PATTERN, pattern)
        shape_values = {"sleeve_length": sleeve, "neckline": neckline}  # every other shape label: NA
        shape = [code_of(names, shape_values.get(column, "NA")) for column, names in SHAPE_COLUMNS]
        image = item.image
        for view, picture in (("01_1_front", image), ("02_2_side", ImageOps.mirror(image))):
            name = f"{product}-{view}.jpg"
            picture.save(root / "images" / name, quality=95)
            captions[name] = text
            shape_lines.append(" ".join([name, *map(str, shape)]))
            fabric_lines.append(" ".join([name, *map(str, fabric_codes)]))
            pattern_lines.append(" ".join([name, *map(str, pattern_codes)]))
    (root / "captions.json").write_text(json.dumps(captions, indent=1))
    (root / "labels" / "shape" / "shape_anno_all.txt").write_text("\n".join(shape_lines) + "\n")
    (root / "labels" / "texture" / "fabric_ann.txt").write_text("\n".join(fabric_lines) + "\n")
    (root / "labels" / "texture" / "pattern_ann.txt").write_text("\n".join(pattern_lines) + "\n")
    return list(captions)
