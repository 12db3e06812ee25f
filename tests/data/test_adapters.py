"""Dataset adapters: deterministic caption choice and skipping unreadable images without crashing."""

import re

import pytest
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from course_utils.data import Catalogue, FileImage, ImageTextDataset, Item, collate_skipping_unreadable

to_tensor = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])


def test_caption_choice_is_deterministic_per_epoch(small_catalogue):
    dataset = ImageTextDataset(small_catalogue, None, caption_style="web", seed=0)
    first = [dataset.caption_for(i) for i in range(50)]
    assert first == [dataset.caption_for(i) for i in range(50)]
    dataset.set_epoch(1)
    assert first != [dataset.caption_for(i) for i in range(50)]
    for i, caption in enumerate(first):
        assert caption in small_catalogue[i].captions_of("web")


def test_a_caption_style_some_items_lack_is_refused_when_the_dataset_is_made():
    """It was a ``KeyError`` at the first batch that drew such an item, after the model and data had loaded."""
    items = [
        Item("a", ("a shirt", "a blue shirt"), ("title", "web"), {}, "train", None),
        Item("b", ("b dress",), ("title",), {}, "train", None),
        Item("c", ("c skirt",), ("title",), {}, "train", None),
    ]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "caption style 'web': 2 of 3 items of toy have no caption of that style (the first: b); the styles its "
            "items have: ['title', 'web']"
        ),
    ):
        ImageTextDataset(Catalogue("toy", items), None, caption_style="web")
    assert ImageTextDataset(Catalogue("toy", items), None, caption_style="title").caption_for(1) == "b dress"


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\x00garbage")
    items = [
        Item(name, (f"{name} shirt",), ("title",), {}, "train", FileImage(tmp_path / f"{name}.jpg"))
        for name in ("ok", "bad", "missing")
    ]
    loader = DataLoader(
        ImageTextDataset(Catalogue("toy", items), to_tensor), batch_size=3, collate_fn=collate_skipping_unreadable
    )
    (batch,) = list(loader)
    assert batch["image"].shape == (1, 3, 8, 8)
    assert batch["text"] == ["ok shirt"] and batch["skipped"] == ["bad", "missing"]


def test_a_batch_of_unreadable_images_only_holds_just_their_ids(tmp_path):
    items = [Item(name, (f"{name} shirt",), ("title",), {}, "train", FileImage(tmp_path / name)) for name in "ab"]
    loader = DataLoader(
        ImageTextDataset(Catalogue("toy", items), to_tensor), batch_size=2, collate_fn=collate_skipping_unreadable
    )
    assert list(loader) == [{"skipped": ["a", "b"]}]
