"""Pretraining the course CLIP on real photos: held-out split, colour-keeping augmentation, caption sampling,
positives of identical captions, title-aware recall, and the cached recipe (tiny fixtures built in code)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from course_utils.data.fashion_product import MATCH_ATTRIBUTES
from course_utils.data.records import ArrayImage, Catalogue, Item
from course_utils.embed import weights_digest
from course_utils.models.tiny_clip import PHOTO_MODELS, create_course_clip
from course_utils.tasks import photo_pretrain as photo
from course_utils.train import TrainConfig

COLOURS = {"Red": (200, 30, 30), "Blue": (30, 30, 200), "Green": (30, 160, 60)}
ARTICLES = ("Tshirts", "Shoes", "Watches")
QUICK = photo.PhotoRecipe(train=TrainConfig(max_steps=2, batch_size=8, lr=1e-3, seed=0))


def photo_catalogue(n: int = 36, n_train: int = 24) -> Catalogue:
    """``n`` 80 x 60 photos of a coloured box per item; items 0 and 1 share a title; the first ``n_train`` train."""
    pixels = np.full((n, 80, 60, 3), 255, dtype=np.uint8)
    items = []
    for i in range(n):
        colour, article = list(COLOURS)[i % 3], ARTICLES[(i // 3) % 3]
        pixels[i, 10 + i % 7 : 70, 8 : 52 - i % 5] = COLOURS[colour]
        title = "Brand Men Red Tshirts" if i < 2 else f"Brand{i} Men {colour} {article}"
        description = f"Men's {colour.lower()} {article.lower()}, casual wear."
        attributes = {"articleType": article, "baseColour": colour, "gender": "Men"}
        split = "train" if i < n_train else ("val" if i % 2 else "test")
        items.append(
            Item(
                str(1000 + i), (title, description), ("title", "description"), attributes, split, ArrayImage(pixels, i)
            )
        )
    return Catalogue("photos", items, match_attributes=MATCH_ATTRIBUTES)


def test_held_out_gallery_is_disjoint_from_train_and_deterministic():
    catalogue = photo_catalogue()
    gallery = photo.held_out_gallery(catalogue, size=10, seed=3)
    assert len(gallery) == 10 and not set(gallery.ids) & set(catalogue.split("train").ids)
    assert gallery.ids == photo.held_out_gallery(catalogue, size=10, seed=3).ids
    assert gallery.ids != photo.held_out_gallery(catalogue, size=10, seed=4).ids
    with pytest.raises(ValueError, match="only 12 items outside the train split"):
        photo.held_out_gallery(catalogue, size=13)


def test_augmentation_crops_and_flips_but_keeps_colour():
    image = torch.from_numpy(np.asarray(photo_catalogue()[0].image, dtype=np.float32) / 255).permute(2, 0, 1)
    torch.manual_seed(0)
    views = photo.random_resized_crops(image.expand(8, -1, -1, -1), crop_scale=0.5, flip=True)  # a red box on white
    assert views.shape == (8, 3, 80, 60)
    assert not torch.equal(views[0], views[1])  # the crops differ
    pixels = views.permute(0, 2, 3, 1).reshape(-1, 3)
    coloured = pixels[(pixels < 0.9).any(dim=1)]  # not the white background
    red = torch.tensor(COLOURS["Red"]) / 255
    assert (coloured.median(dim=0).values - red).abs().max() < 0.02  # resampling blurs edges, never the hue


def test_full_crop_without_flip_is_the_identity_and_flip_mirrors():
    images = torch.rand(2, 3, 8, 6)
    assert torch.allclose(
        photo.random_resized_crops(images, crop_scale=1.0, flip=False, max_aspect_change=1.0), images, atol=1e-5
    )
    torch.manual_seed(1)
    flipped = photo.random_resized_crops(images.repeat(8, 1, 1, 1), crop_scale=1.0, flip=True, max_aspect_change=1.0)
    mirrored = [
        torch.allclose(view, source.flip(-1), atol=1e-5) for view, source in zip(flipped, images.repeat(8, 1, 1, 1))
    ]
    same = [torch.allclose(view, source, atol=1e-5) for view, source in zip(flipped, images.repeat(8, 1, 1, 1))]
    assert all(m or k for m, k in zip(mirrored, same)) and 0 < sum(mirrored) < 16


def test_captions_mix_titles_and_descriptions_deterministically():
    catalogue = photo_catalogue()
    always_title = photo.MixedCaptionDataset(catalogue, None, description_rate=0.0)
    always_description = photo.MixedCaptionDataset(catalogue, None, description_rate=1.0)
    assert [always_title.caption_for(i) for i in range(3)] == [catalogue[i].captions[0] for i in range(3)]
    assert [always_description.caption_for(i) for i in range(3)] == [catalogue[i].captions[1] for i in range(3)]

    mixed = photo.MixedCaptionDataset(catalogue, None, description_rate=0.5, seed=1)
    epoch0 = [mixed.caption_for(i) for i in range(len(catalogue))]
    mixed.set_epoch(1)
    epoch1 = [mixed.caption_for(i) for i in range(len(catalogue))]
    descriptions = sum(text in item.captions_of("description") for text, item in zip(epoch0, catalogue))
    assert 8 <= descriptions <= 28 and epoch0 != epoch1
    mixed.set_epoch(0)
    assert [mixed.caption_for(i) for i in range(len(catalogue))] == epoch0


def test_a_catalogue_without_titles_trains_on_its_descriptions():
    items = [
        Item(item.item_id, item.captions[1:], ("description",), item.attributes, item.split, item.image_ref)
        for item in photo_catalogue()
    ]  # DeepFashion-MultiModal's shape: one description per image
    dataset = photo.MixedCaptionDataset(Catalogue("descriptions", items), None, description_rate=0.0)
    assert [dataset.caption_for(i) for i in range(3)] == [items[i].captions[0] for i in range(3)]


def test_caption_positives_count_identical_titles_and_descriptions():
    catalogue = photo_catalogue()
    texts = [catalogue[0].captions[0], catalogue[1].captions[0], catalogue[3].captions[1], catalogue[6].captions[0]]
    positives = photo.caption_positives(catalogue, [0, 1, 3, 6], texts)
    # Items 0 and 1 share their title; items 3 (red shoes) and 6 (red watches) share neither title nor description.
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(positives, expected)
    same_description = photo.caption_positives(catalogue, [0, 2], [catalogue[0].captions[1], catalogue[0].captions[1]])
    assert same_description[0].all() and not same_description[1].any()  # item 2 is green: another description


def test_attribute_positives_pair_items_of_the_same_article_type_and_colour():
    catalogue = photo_catalogue()
    # items 0 and 9 are red t-shirts (another title each), 3 red shoes, 1 a blue t-shirt
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(photo.attribute_positives(catalogue, [0, 9, 3, 1]), expected)
    colourless = Catalogue(
        "colourless",
        [replace(item, attributes={"articleType": "Tshirts"}) for item in catalogue],
        match_attributes=MATCH_ATTRIBUTES,
    )
    assert torch.equal(photo.attribute_positives(colourless, [0, 9, 3]), torch.eye(3, dtype=torch.bool))
    by_article = photo.attribute_positives(catalogue, [0, 9, 3, 1], attributes=("articleType",))
    assert by_article[0, 3] and not by_article[0, 2]  # another rule of "the same kind": t-shirts of any colour
    with pytest.raises(ValueError, match="catalogue 'undeclared' declares no match_attributes"):
        photo.attribute_positives(Catalogue("undeclared", list(catalogue)), [0, 9])


def test_a_catalogue_without_titles_is_searched_by_its_descriptions(isolated_cache):
    """DeepFashion-MultiModal has descriptions only: they are the queries, and its own match attributes count."""
    titled = photo_catalogue()
    untitled = Catalogue(
        "descriptions-only",
        [replace(item, captions=item.captions[1:], caption_styles=("description",)) for item in titled],
        match_attributes=("gender",),
    )
    assert photo.query_caption(titled[5]) == titled[5].captions[0]
    assert photo.query_caption(untitled[5]) == titled[5].captions[1]
    bundle = photo.pretrained_photo_clip(untitled, QUICK, use_cache=False, progress=False)
    record = photo.evaluate_photo_retrieval(bundle, photo.held_out_gallery(untitled, size=12), ks=(1, 10))
    assert record["chance attribute-match R@1"] == 1.0  # every item is "Men": any result matches
    assert record["attribute-match R@1"] == 1.0


def test_attribute_match_recall_reads_the_kind_as_pretraining_does(isolated_cache):
    """An item without a colour matches only itself in pretraining; evaluated, it required only its article type,
    so every t-shirt of any colour was a hit. Without colours every item is of a kind of its own: attribute-match
    recall is exact-item recall."""
    colourless = Catalogue(
        "colourless",
        [replace(item, attributes={"articleType": "Tshirts"}) for item in photo_catalogue()],
        match_attributes=MATCH_ATTRIBUTES,
    )
    assert photo.kind_keys(colourless, [0, 9]) == [("unmatched", 0), ("unmatched", 9)]
    bundle = photo.pretrained_photo_clip(colourless, QUICK, use_cache=False, progress=False)
    record = photo.evaluate_photo_retrieval(bundle, photo.held_out_gallery(colourless, size=12), ks=(1, 10))
    for k in (1, 10):
        assert record[f"attribute-match R@{k}"] == record[f"exact R@{k}"]
        assert record[f"chance attribute-match R@{k}"] == record[f"chance exact R@{k}"]


def test_attribute_term_adds_the_loss_whose_positives_share_attributes():
    catalogue = photo_catalogue()
    torch.manual_seed(0)
    model, preprocess, tokenizer = create_course_clip("photo-clip-resnet18")
    dataset = photo.MixedCaptionDataset(catalogue, preprocess, description_rate=0.0)

    def losses(indices: list[int], weight: float) -> tuple[float, float]:
        batch = {
            "image": torch.stack([dataset[i]["image"] for i in indices]),
            "index": torch.tensor(indices),
            "text": [dataset[i]["text"] for i in indices],
        }
        with torch.no_grad():
            return (
                photo.multi_positive_batch_loss(tokenizer, catalogue)(model, batch).item(),
                photo.multi_positive_batch_loss(tokenizer, catalogue, weight)(model, batch).item(),
            )

    plain, weighted = losses([0, 1, 2, 3, 4, 5], 0.5)  # six different (article type, colour) pairs
    assert weighted == pytest.approx(1.5 * plain)  # the second term's positives are the captions' own
    plain, weighted = losses([0, 9, 1, 10], 0.5)  # two red and two blue t-shirts
    assert weighted != pytest.approx(1.5 * plain)


def test_title_aware_recall_by_hand():
    titles = ["a", "a", "b"]
    similarity = torch.tensor(
        [
            [0.1, 0.9, 0.0],  # query 0 ranks item 1 (same title) first, itself second
            [0.2, 0.8, 0.1],  # query 1 finds itself first
            [0.5, 0.4, 0.3],
        ]
    )  # query 2 finds itself last
    recalls = photo.title_aware_recall(similarity, titles, ks=(1, 2))
    assert recalls["exact"] == pytest.approx({1: 1 / 3, 2: 2 / 3})
    assert recalls["same title"] == pytest.approx({1: 2 / 3, 2: 2 / 3})


def test_attribute_match_others_ranks_the_gallery_without_the_querys_own_item(monkeypatch):
    catalogue = photo_catalogue()
    gallery = Catalogue("three", [catalogue[0], catalogue[1], catalogue[9]], match_attributes=MATCH_ATTRIBUTES)
    assert [(i.attributes["baseColour"], i.attributes["articleType"]) for i in gallery] == [
        ("Red", "Tshirts"),
        ("Blue", "Tshirts"),
        ("Red", "Tshirts"),
    ]
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5],  # its own item first, then the other red t-shirt
            [0.2, 0.9, 0.3],  # its own item first; no other blue t-shirt: a miss without it
            [0.1, 0.8, 0.3],  # the blue t-shirt first, then itself; without itself, the other red t-shirt second
        ]
    )
    monkeypatch.setattr(photo, "encode_images", lambda bundle, items, progress: torch.eye(3))
    monkeypatch.setattr(photo, "encode_texts", lambda bundle, texts, progress: scores)
    record = photo.evaluate_photo_retrieval(None, gallery, ks=(1, 2))
    assert record["attribute-match R@1"] == pytest.approx(2 / 3) and record["attribute-match R@2"] == 1.0
    assert record["attribute-match-others R@1"] == pytest.approx(1 / 3)
    assert record["attribute-match-others R@2"] == pytest.approx(2 / 3)
    # one other match each for queries 0 and 2, among the 2 items left: chance 1/2 at K = 1, 1 at K = 2
    assert record["chance attribute-match-others R@1"] == pytest.approx(1 / 3)
    assert record["chance attribute-match-others R@2"] == pytest.approx(2 / 3)


def test_pretraining_is_cached_deterministic_and_evaluated(isolated_cache, monkeypatch):
    catalogue = photo_catalogue()
    first = photo.pretrained_photo_clip(catalogue, QUICK, progress=False)
    assert len(first.history) == 2 and first.checkpoint_path.exists()
    assert first.identity.startswith(f"open_clip:{QUICK.model}:photo-")
    again = photo.pretrained_photo_clip(catalogue, QUICK, use_cache=False, progress=False)
    assert [r["loss"] for r in again.history] == [r["loss"] for r in first.history]

    monkeypatch.setattr(photo, "fit", lambda *a, **k: pytest.fail("retrained although cached"))
    cached = photo.pretrained_photo_clip(catalogue, QUICK, progress=False)
    for a, b in zip(first.model.state_dict().values(), cached.model.state_dict().values()):
        assert torch.equal(a, b)

    record = photo.evaluate_photo_retrieval(cached, photo.held_out_gallery(catalogue, size=12), ks=(1, 10))
    assert record["chance exact R@10"] == pytest.approx(10 / 12)
    assert all(0.0 <= value <= 1.0 for value in record.values())
    assert record["same-title R@10"] >= record["exact R@10"]
    assert record["attribute-match R@10"] >= record["exact R@10"]


def test_the_image_tower_trains_and_loads_channels_last(isolated_cache):
    catalogue = photo_catalogue()
    recipe = replace(QUICK, channels_last=True)
    fresh = photo.pretrained_photo_clip(catalogue, recipe, progress=False)
    cached = photo.pretrained_photo_clip(catalogue, recipe, progress=False)
    for bundle in (fresh, cached):
        convolutions = [p for p in bundle.model.visual.parameters() if p.dim() == 4]
        assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    images = torch.stack([cached.preprocess(item.image) for item in catalogue.items[:4]])
    with torch.inference_mode():
        assert torch.equal(fresh.encode_images(images), cached.encode_images(images))  # a cache hit computes alike
    contiguous = photo.pretrained_photo_clip(catalogue, QUICK, use_cache=False, progress=False)  # the default
    assert all(p.is_contiguous() for p in contiguous.model.visual.parameters())


def test_plain_clip_loss_and_vit_tower_also_train_with_evaluations(isolated_cache):
    catalogue = photo_catalogue()
    recipe = replace(
        QUICK,
        model="tiny-fashion-clip",
        image_size=(80, 64),
        multi_positive=False,
        attribute_weight=0.0,
        train=replace(QUICK.train, eval_every=1),
    )
    gallery = photo.held_out_gallery(catalogue, size=12)
    seen = []

    def evaluate(bundle):
        seen.append(weights_digest(bundle.model))
        return photo.evaluate_photo_retrieval(bundle, gallery)

    bundle = photo.pretrained_photo_clip(catalogue, recipe, use_cache=False, progress=False, evaluate=evaluate)
    assert len(bundle.history) == 2 and bundle.model.visual.image_size == (80, 64)
    assert len(seen) == 2 and seen[0] != seen[1] == weights_digest(bundle.model)  # after step 1 and at the end


@pytest.mark.parametrize("model", PHOTO_MODELS)
def test_every_photo_tower_embeds_photos_at_their_native_size(model):
    clip, preprocess, tokenizer = create_course_clip(model)
    items = photo_catalogue().items[:2]
    images = torch.stack([preprocess(item.image) for item in items])
    assert images.shape == (2, 3, 80, 60)  # the photos' own 80 x 60 pixels, not resized to a square
    with torch.no_grad():
        image_features = clip.encode_image(images)
        text_features = clip.encode_text(tokenizer([item.captions[0] for item in items]))
    assert image_features.shape == text_features.shape == (2, clip.text_projection.shape[1])
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


def test_cache_key_follows_data_and_recipe():
    train = photo_catalogue().split("train")
    key = photo.photo_key_parts(train, QUICK, "cpu")
    assert photo.photo_key_parts(train, replace(QUICK, description_rate=0.5), "cpu") != key
    assert photo.photo_key_parts(train, replace(QUICK, attribute_weight=QUICK.attribute_weight + 1), "cpu") != key
    assert photo.photo_key_parts(train, replace(QUICK, model="photo-clip-regnetx002"), "cpu") != key
    assert photo.photo_key_parts(train, replace(QUICK, channels_last=True), "cpu") != key
    # a field added later is left out at the value that computes as before, so older caches keep hitting
    assert "channels_last" not in key["recipe"] and key["recipe"]["attribute_weight"] == QUICK.attribute_weight
    assert photo.photo_key_parts(train.subset(train.ids[:10]), QUICK, "cpu") != key
    # a GPU trains the same recipe in bfloat16: another model, so another cache entry
    assert photo.photo_key_parts(train, QUICK, "cuda")["recipe"]["train"] == {
        **key["recipe"]["train"],
        "autocast": "bfloat16",
    }


def test_bad_recipe_is_rejected():
    with pytest.raises(ValueError, match="description_rate"):
        photo.PhotoRecipe(description_rate=1.5)
    with pytest.raises(ValueError, match="attribute_weight"):
        photo.PhotoRecipe(attribute_weight=-1.0)
    with pytest.raises(ValueError, match="attribute_weight"):
        photo.PhotoRecipe(attribute_weight=0.5, multi_positive=False)
    with pytest.raises(ValueError, match="no course model config 'resnet-huge'"):
        photo.photo_key_parts(photo_catalogue().split("train"), replace(QUICK, model="resnet-huge"), "cpu")


def test_real_sample_holds_out_a_gallery_of_1000(fashion_product_sample):
    from course_utils.data.fashion_product import load_fashion_product_small

    catalogue = load_fashion_product_small(fashion_product_sample, verify_images=False, triplets=False)
    gallery = photo.held_out_gallery(catalogue, size=1000)
    assert len(gallery) == 1000 and not set(gallery.ids) & set(catalogue.split("train").ids)
    assert len(catalogue.split("train")) >= 3000


def test_unreadable_train_photos_are_reported_after_training_and_on_every_cache_hit(isolated_cache, tmp_path, caplog):
    from course_utils.data.records import FileImage

    catalogue = photo_catalogue()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    items = [replace(catalogue[0], image_ref=FileImage(broken)), *catalogue.items[1:]]
    with_broken = Catalogue("photos", items, match_attributes=MATCH_ATTRIBUTES)
    one_epoch = replace(QUICK, train=replace(QUICK.train, max_steps=3))  # 3 steps of 8: every train photo once
    for run in ("trained", "cached"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            photo.pretrained_photo_clip(with_broken, one_epoch, progress=False)
        reports = [r.getMessage() for r in caplog.records if "left out of training" in r.getMessage()]
        assert len(reports) == 1, run  # said once: by fit when trained, from the cache's count when read
        assert (
            reports[0].startswith("1 sample(s)" if run == "trained" else "photo-clip-") and "1 sample(s)" in reports[0]
        )


def test_dataset_preprocesses_each_image_once_and_skips_unreadable_ones(tmp_path):
    from course_utils.data.records import FileImage

    catalogue = photo_catalogue(n=4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    items = [*catalogue.items[:3], replace(catalogue[3], image_ref=FileImage(broken))]
    calls = []
    dataset = photo.MixedCaptionDataset(Catalogue("photos", items), lambda image: calls.append(1) or torch.ones(2), 0.0)
    assert dataset[3] == {"skipped": items[3].item_id}
    first = dataset[0]
    assert first["text"] == items[0].captions[0] and first["index"] == 0
    assert torch.equal(dataset[0]["image"], torch.ones(2)) and dataset[0]["image"].dtype == torch.float32
    assert len(calls) == 1  # preprocessed once, then served from memory


def test_profiles_choose_the_recipe_length_and_reject_what_they_cannot_train():
    assert photo.photo_recipe(photo.PHOTO_RECIPE.model, "real") == photo.PHOTO_RECIPE  # the measured recipe
    short = photo.photo_recipe("photo-clip-regnetx002", "real-ci")
    assert short.model == "photo-clip-regnetx002" and short.train.epochs == photo.PROFILE_EPOCHS["real-ci"]
    assert replace(short, model=photo.PHOTO_RECIPE.model, train=photo.PHOTO_RECIPE.train) == photo.PHOTO_RECIPE
    assert photo.photo_recipe(photo.PHOTO_RECIPE.model, "real", seed=2).train.seed == 2
    with pytest.raises(ValueError, match="profiles \\['real', 'real-ci'\\], not 'ci'"):
        photo.photo_recipe("photo-clip-resnet18", "ci")
    with pytest.raises(ValueError, match="no course model config 'ViT-B-32'"):
        photo.photo_recipe("ViT-B-32", "real")


def test_photo_pretraining_needs_a_real_catalogue():
    from course_utils.tasks import load_experiment

    with pytest.raises(ValueError, match="pretrained='photo' pretrains on a real catalogue's photos"):
        load_experiment("synthetic", model="photo-clip-resnet18", pretrained="photo", profile="real")


def test_a_rejected_cache_file_leaves_nothing_in_the_model_it_rebuilds(isolated_cache, caplog):
    """A file that passes its checksum but not load_state_dict had its matching tensors copied into the model before
    the rejection, and the rebuild trained from them (and was cached for good)."""
    from course_utils.cache import _write_with_checksum, save_torch

    catalogue = photo_catalogue()
    first = photo.pretrained_photo_clip(catalogue, QUICK, progress=False)
    state = {name: torch.zeros_like(value) for name, value in first.model.state_dict().items()}
    state.pop(next(iter(state)))  # zeroed weights with one key missing: an older layout
    _write_with_checksum(first.checkpoint_path, save_torch, {"model": state, "history": [], "skipped_items": 0})
    with caplog.at_level("WARNING", logger="course_utils.cache"):
        rebuilt = photo.pretrained_photo_clip(catalogue, QUICK, progress=False)
    assert f"{first.checkpoint_path} was damaged" in caplog.text
    assert weights_digest(rebuilt.model) == weights_digest(first.model)
