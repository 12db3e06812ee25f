"""The procedural catalogue: determinism, captions vs attributes, splits, triplets, knobs."""

import random
from collections import Counter

import numpy as np
import pytest

from course_utils.cache import ARTIFACT_VERSIONS
from course_utils.data import load_catalogue
from course_utils.data import synthetic as syn
from tests.conftest import SMALL_SIZES


def test_same_seed_same_catalogue_pixel_for_pixel(small_catalogue, isolated_cache):
    again = load_catalogue("synthetic", size=SMALL_SIZES, seed=3, use_cache=False)
    assert [(i.item_id, i.captions, dict(i.attributes), i.split) for i in again] == [
        (i.item_id, i.captions, dict(i.attributes), i.split) for i in small_catalogue
    ]
    for a, b in zip(small_catalogue[:30], again[:30]):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert again.fingerprint() == small_catalogue.fingerprint()


def test_the_catalogue_is_the_one_the_committed_records_were_made_from(small_catalogue):
    """A small catalogue's fingerprint (items, captions, pixels) stands for the drawings the committed records were
    made from. numpy's random streams and Pillow's drawing decide them, so requirements.txt pins both: if this fails
    after an upgrade, the drawings changed and so will every metric. A deliberate change to the drawings must bump
    ``ARTIFACT_VERSIONS["catalogue"]`` (or cached pixels of the old drawings are served) and rerun the records."""
    assert (ARTIFACT_VERSIONS["catalogue"], small_catalogue.fingerprint()) == (3, "42d14ef52cd90198")


def test_other_seed_other_catalogue(small_catalogue):
    other = load_catalogue("synthetic", size=SMALL_SIZES, seed=4)
    assert other.fingerprint() != small_catalogue.fingerprint()
    assert [dict(i.attributes) for i in other] != [dict(i.attributes) for i in small_catalogue]


def test_cache_is_written_and_reused(isolated_cache):
    sizes = {"pretrain": 0, "train": 10, "val": 0, "test": 10}
    first = load_catalogue("synthetic", size=sizes, seed=1)
    cached = list((isolated_cache / "synthetic").glob("*.npz"))
    assert len(cached) == 1
    second = load_catalogue("synthetic", size=sizes, seed=1)
    assert np.array_equal(np.asarray(first[5].image), np.asarray(second[5].image))


def test_splits_are_disjoint_and_sized(small_catalogue):
    counts = Counter(item.split for item in small_catalogue)
    assert counts == Counter(SMALL_SIZES)
    ids = {name: set(small_catalogue.split(name).ids) for name in SMALL_SIZES}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b]
    assert small_catalogue.split("test").match_attributes == ("category", "colour")  # the same kind of garment


def test_captions_say_what_the_attributes_are(small_catalogue):
    for item in small_catalogue:
        attrs = item.attributes
        title, description = item.caption("title"), item.caption("description")
        assert attrs["colour"].title() in title
        assert attrs["colour"] in description
        assert syn.PATTERN_WORDS[attrs["pattern"]] in description
        assert f"{attrs['fabric']} fabric" in description
        if "sleeve" in attrs:
            assert syn.SLEEVE_WORDS[attrs["sleeve"]] in description
            assert syn.SLEEVE_TITLE[attrs["sleeve"]] in title
        if "neckline" in attrs:
            assert syn.NECKLINE_WORDS[attrs["neckline"]] in description
        if "length" in attrs:
            assert f"{syn.LENGTH_WORDS[attrs['length']]} length" in description
        assert any(noun in description for noun in syn.CATEGORY_NOUNS[attrs["category"]])
        assert len(item.captions_of("web")) == 3


def test_web_captions_only_use_the_items_own_words(small_catalogue):
    for item in small_catalogue[:200]:
        attrs = item.attributes
        allowed = set(syn.CATEGORY_NOUNS[attrs["category"]]) | {attrs["colour"], attrs["fabric"]}
        allowed |= {"plain" if attrs["pattern"] == "solid" else attrs["pattern"]}
        allowed |= {"sleeveless", "short sleeve", "long sleeve"} if "sleeve" in attrs else set()
        allowed |= {"mini", "midi", "maxi"} if "length" in attrs else set()
        for caption in item.captions_of("web"):
            rest = caption
            for phrase in sorted(allowed, key=len, reverse=True):
                rest = rest.replace(phrase, "")
            assert rest.strip() == "", (caption, attrs)


def test_category_parts_are_respected(small_catalogue):
    for item in small_catalogue:
        optional = {"sleeve", "neckline", "length"} & set(item.attributes)
        assert optional == set(syn.CATEGORY_PARTS[item.attributes["category"]])


def test_items_share_attributes_but_not_pixels(small_catalogue):
    test = small_catalogue.split("test")
    groups = Counter(tuple(sorted(i.attributes.items())) for i in test)
    assert max(groups.values()) >= 2, "real catalogues repeat attribute combinations; this one must too"
    key, _ = groups.most_common(1)[0]
    twins = [i for i in test if tuple(sorted(i.attributes.items())) == key][:2]
    assert not np.array_equal(np.asarray(twins[0].image), np.asarray(twins[1].image))


def test_triplets_change_exactly_what_the_text_says(small_catalogue):
    triplets = small_catalogue.split("test").triplets
    assert len(triplets) > 20
    styles = Counter(t.style for t in triplets)
    assert styles["fashion200k"] > 0 and styles["fashioniq"] > 0
    for t in triplets:
        ref, target = small_catalogue.by_id(t.reference_id), small_catalogue.by_id(t.target_id)
        assert ref.split == target.split == "test"
        differing = {k for k in ref.attributes if ref.attributes[k] != target.attributes.get(k)}
        assert differing == set(t.changed)
        assert ref.attributes["category"] == target.attributes["category"]
        for name, (old, new) in t.changed.items():
            assert ref.attributes[name] == old and target.attributes[name] == new
        assert t.modification == syn.modification_text(dict(t.changed), t.style)


def test_modification_phrasing():
    assert syn.modification_text({"colour": ("red", "blue")}, "fashion200k") == "replace red with blue"
    assert syn.modification_text({"colour": ("red", "blue")}, "fashioniq") == "is blue"
    two = syn.modification_text({"pattern": ("solid", "striped"), "sleeve": ("short", "long")}, "fashioniq")
    assert two == "is striped and has longer sleeves"


def test_n_attributes_knob_fixes_the_rest():
    rng = random.Random(0)
    for _ in range(200):
        attrs = syn.sample_attributes(rng, n_attributes=3)
        assert attrs.get("sleeve", "long") == "long" and attrs.get("length", "knee") == "knee"
        assert attrs["fabric"] == "cotton"


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown catalogue size"):
        load_catalogue("synthetic", size="huge")
    with pytest.raises(ValueError, match="unknown synthetic catalogue options"):
        load_catalogue("synthetic", size=SMALL_SIZES, colours=3)
    with pytest.raises(ValueError, match="n_attributes"):
        load_catalogue("synthetic", size=SMALL_SIZES, n_attributes=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_catalogue("deepfashion2")


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"size": "ci", "train": 10},
            r"\['train'\] are split sizes, not options: pass them in size, e.g\. size=\{'train': 10\}",
        ),
        ({"size": {"tset": 5}}, r"size: unknown split names \['tset'\]; the splits are \['pretrain', 'train'"),
        ({"size": {"train": -1}}, r"size\['train'\] must be a whole number of items >= 0, got -1"),
        ({"size": {"train": 2.5}}, r"size\['train'\] must be a whole number"),
        ({"size": 100}, "size must be one of"),
        ({"size": SMALL_SIZES, "colours": 3}, r"the options are \['image_size', 'noise', 'caption_dropout'"),
    ],
)
def test_misplaced_or_mistyped_sizes_are_named_with_what_is_accepted(options, message):
    with pytest.raises(ValueError, match=message):
        load_catalogue("synthetic", use_cache=False, **options)


def test_a_split_the_size_dict_leaves_out_keeps_its_ci_size():
    catalogue = load_catalogue("synthetic", size={"pretrain": 0, "val": 0, "test": 0}, use_cache=False)
    assert Counter(item.split for item in catalogue) == {"train": syn.PROFILE_SIZES["ci"]["train"]}


def test_a_web_caption_omits_about_half_the_attribute_words_at_the_default_dropout():
    # kept with probability 0.7 * (1 - 0.3) = 0.49 per word; 4000 colour draws: standard error 0.008
    rng = random.Random(0)
    attributes = {"category": "trousers", "colour": "red", "pattern": "solid", "fabric": "cotton"}
    kept = sum("red" in syn.web_caption(attributes, rng, dropout=0.3).split() for _ in range(4000))
    assert kept / 4000 == pytest.approx(0.49, abs=0.03)
