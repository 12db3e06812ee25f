"""Issue 15, item 5: decompression bombs and every other undecodable image are skipped and counted like truncated
files, in loading (records, the fashion-product loader, the Dataset adapters) and in uploads (widgets)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from course_utils import widgets as cw
from course_utils.data import (
    Catalogue,
    CorruptImage,
    FileImage,
    ImageTextDataset,
    Item,
    OversizedImage,
    collate_skipping_unreadable,
)
from course_utils.data.fashion_product import load_fashion_product_small
from course_utils.data.records import OVERSIZED_IMAGE, UNREADABLE_IMAGE, decode_image

from .bad_files import MALFORMED_PPM, bomb_jpeg, greyscale_bytes, jpeg_bytes

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"


@pytest.mark.parametrize("name", ["bomb", "bomb-warning"])
def test_a_decompression_bomb_is_refused_naming_the_file(bad_images, name):
    with pytest.raises(OversizedImage, match=rf"refusing to decode image .*{name}\.jpg: .*MAX_IMAGE_PIXELS"):
        FileImage(bad_images[name]).load()


@pytest.mark.parametrize("name", ["truncated", "malformed", "not-an-image"])
def test_every_other_undecodable_file_is_a_corrupt_image(bad_images, name):
    with pytest.raises(CorruptImage, match=rf"cannot decode image .*{name}\.jpg"):
        FileImage(bad_images[name]).load()


def test_a_decoder_valueerror_is_caught_too(bad_images):
    """PIL reads this PPM header with int() and raises ValueError, which the old except list let through."""
    with pytest.raises(ValueError) as raw:
        Image.open(bad_images["malformed"]).load()
    assert not isinstance(raw.value, (OSError, CorruptImage))
    with pytest.raises(CorruptImage, match="ValueError"):
        FileImage(bad_images["malformed"]).load()


def test_the_loader_skips_and_counts_bombs_and_broken_files(tmp_path, bad_images):
    """One bomb no longer aborts a dataset: each bad image is dropped and counted under its reason."""
    rows = "".join(
        f"{path.stem},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Shirt {path.stem}\n"
        for path in bad_images.values()
    )
    (tmp_path / "styles.csv").write_text(HEADER + rows)
    catalogue = load_fashion_product_small(tmp_path, triplets=False)
    assert catalogue.ids == ["good"]
    assert catalogue.report.skipped == {OVERSIZED_IMAGE: 2, UNREADABLE_IMAGE: 3}
    assert sorted(catalogue.report.examples[OVERSIZED_IMAGE]) == ["bomb", "bomb-warning"]


def test_the_encoding_adapters_skip_and_list_bombs(bad_images):
    """The skip-and-count collate that the encoding and training loops use lists bombs instead of dying."""
    items = [Item(name, (name,), ("title",), {}, "test", FileImage(path)) for name, path in bad_images.items()]
    dataset = ImageTextDataset(Catalogue("bad", items), preprocess=lambda image: image.size)
    batch = next(iter(DataLoader(dataset, batch_size=len(items), collate_fn=collate_skipping_unreadable)))
    assert batch["text"] == ["good"]
    assert batch["skipped"] == ["bomb", "bomb-warning", "truncated", "malformed", "not-an-image"]


def test_retriever_image_query_from_a_bomb_file_is_a_clear_error(make_retriever, bad_images):
    with pytest.raises(OversizedImage, match="bomb.jpg"):
        make_retriever().search_by_image(str(bad_images["bomb"]))


@pytest.mark.parametrize("content", [bomb_jpeg(60000, 60000), bomb_jpeg(10000, 10000)], ids=["error", "warning"])
def test_an_uploaded_bomb_gets_a_message(make_retriever, content):
    with pytest.raises(cw.BadQuery, match=r"the image 'huge.jpg' has more than 16,777,216 pixels"):
        cw.decode_image_bytes(content, "huge.jpg")
    page = cw.run_image_query(make_retriever(), cw.Upload("huge.jpg", content), top_k=2)
    assert "fc-error" in page and "decompression bomb" in page


@pytest.mark.parametrize(
    ("content", "reason"),
    [(MALFORMED_PPM, "ValueError"), (jpeg_bytes("blue", (64, 64))[:200], "OSError"), (b"plain text", "Unidentified")],
)
def test_an_undecodable_upload_gets_a_message(make_retriever, content, reason):
    with pytest.raises(cw.BadQuery, match=rf"could not read 'x.jpg' as an image \({reason}.*choose a JPEG or PNG"):
        cw.decode_image_bytes(content, "x.jpg")
    assert "could not read" in cw.run_image_query(make_retriever(), cw.Upload("x.jpg", content), top_k=2)


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((200_000, 1), r"is 200000 x 1 pixels, one side more than 20 times the other"),
        ((5000, 5000), r"has more than 16,777,216 pixels"),
    ],
)
def test_an_upload_too_large_once_decoded_is_refused_though_its_file_is_small(size, message):
    """A 274-byte PNG strip took 4 GiB in the model's resize (short side up to 64 pixels); a 5,000 x 5,000 PNG of
    a few kB decodes to 25 MB, eight at once to gigabytes."""
    content = png_bytes(size)
    assert len(content) < 100_000
    with pytest.raises(cw.BadQuery, match=message):
        cw.decode_image_bytes(content, "x.png")


def test_a_large_photo_within_the_limits_is_read_at_a_reduced_scale():
    assert cw.decode_image_bytes(jpeg_bytes("red", (6000, 4000)), "phone.jpg").size == (1500, 1000)


def test_only_raster_photo_formats_are_decoded():
    """An EPS went to Ghostscript where it is installed: a student's PostScript would run on the server."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(CorruptImage, match="cannot decode image 'x.eps'") as refused:
        decode_image(io.BytesIO(eps), "'x.eps'")
    assert isinstance(refused.value.__cause__, UnidentifiedImageError)


def test_a_bomb_is_refused_whatever_the_warning_filters_are(bad_images, monkeypatch):
    """The 1-2x bomb check turned PIL's warning into an error through the process-wide warning filters: with the
    classroom's threads decoding at once, one thread's restore undid another's filter, and a bomb was decoded.
    Here no filter can be set, as when another thread has just restored them."""
    monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
    with pytest.raises(OversizedImage):
        FileImage(bad_images["bomb-warning"]).load()


def test_a_good_upload_still_decodes():
    assert cw.decode_image_bytes(jpeg_bytes("red", (8, 6)), "ok.jpg").size == (8, 6)


# --- 16-bit and float images: scaled to 8 bits, or refused and counted -----------------------------------------------

HIGH_BIT_DEPTH = {  # name -> (file bytes, PIL mode, expected grey levels): PIL alone clips these to 255 or 0
    "png16": (greyscale_bytes([[8000, 32768, 65535]], "uint16", "PNG"), "I;16", [31, 128, 255]),
    "tiff-int32": (greyscale_bytes([[0, 32768, 65535]], "int32", "TIFF"), "I", [0, 128, 255]),
    "tiff-float01": (greyscale_bytes([[0.0, 0.5, 1.0]], "float32", "TIFF"), "F", [0, 128, 255]),
    "tiff-float255": (greyscale_bytes([[0.0, 100.0, 255.0]], "float32", "TIFF"), "F", [0, 100, 255]),
}


@pytest.mark.parametrize("name", HIGH_BIT_DEPTH)
def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped(tmp_path, name):
    """A 16-bit PNG of 8000/32768 used to decode solid white and a float TIFF of 0.5 solid black."""
    content, mode, levels = HIGH_BIT_DEPTH[name]
    assert Image.open(io.BytesIO(content)).mode == mode
    path = tmp_path / f"{name}.img"
    path.write_bytes(content)
    expected = np.repeat(np.array([levels], np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(np.asarray(FileImage(path).load()), expected)
    np.testing.assert_array_equal(np.asarray(cw.decode_image_bytes(content, f"{name}.img")), expected)  # uploads too


def test_a_transparent_16_bit_grey_is_laid_on_white():
    content = greyscale_bytes([[0, 8000]], "uint16", "PNG", transparency=0)
    assert np.asarray(cw.decode_image_bytes(content, "t.png"))[0, :, 0].tolist() == [255, 31]


def test_a_float_image_with_no_known_scale_is_unreadable_and_counted(tmp_path):
    """Values outside 0..1, 0..255 and 0..65535 have no trustworthy colour: refused like any undecodable file."""
    (tmp_path / "images").mkdir()
    content = greyscale_bytes([[-1.0, 3.0]], "float32", "TIFF")
    (tmp_path / "images" / "1.jpg").write_bytes(content)
    (tmp_path / "images" / "2.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "styles.csv").write_text(
        HEADER + "".join(f"{i},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Shirt {i}\n" for i in (1, 2))
    )
    with pytest.raises(CorruptImage, match=r"1\.jpg: ValueError: a mode-F image with values from -1 to 3"):
        FileImage(tmp_path / "images" / "1.jpg").load()
    catalogue = load_fashion_product_small(tmp_path, triplets=False)
    assert catalogue.ids == ["2"] and catalogue.report.skipped == {UNREADABLE_IMAGE: 1}
    with pytest.raises(cw.BadQuery, match=r"could not read 'f.tif' as an image \(ValueError\)"):
        cw.decode_image_bytes(content, "f.tif")


def test_an_image_over_a_callers_limit_names_that_limit_not_pils():
    with pytest.raises(OversizedImage) as refused:
        decode_image(io.BytesIO(png_bytes((5000, 5000))), "'x.png'", max_pixels=4096 * 4096)
    message = str(refused.value)
    assert "'x.png': 5000 x 5000 pixels, more than the 16777216 allowed here" in message
    assert "MAX_IMAGE_PIXELS" not in message  # raising PIL's limit would not help
