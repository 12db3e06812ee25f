"""Tests of course_utils.data.descriptors: the shipped per-criterion word lists and the loader's checks."""

from __future__ import annotations

import json

import pytest

from course_utils.data import descriptors
from course_utils.data.synthetic import ATTRIBUTE_ORDER, COLOUR_WEIGHTS, FABRIC_WEIGHTS, PATTERN_WEIGHTS


def test_shipped_sets():
    assert {"synthetic", "fashion-product-small"} <= set(descriptors.available_descriptor_sets())


def test_synthetic_words_cover_every_attribute_type_and_its_values():
    words = descriptors.load_descriptors("synthetic")
    assert set(words) == set(ATTRIBUTE_ORDER)
    for criterion, values in (("colour", COLOUR_WEIGHTS), ("pattern", PATTERN_WEIGHTS), ("fabric", FABRIC_WEIGHTS)):
        assert set(values) <= set(words[criterion]), criterion
    for criterion, values in words.items():
        assert len(values) >= 2 and len(set(values)) == len(values), criterion


def test_fashion_product_small_words_cover_the_real_tier_conditions():
    words = descriptors.load_descriptors("fashion-product-small")
    assert {"articleType", "baseColour", "season", "usage", "gender"} <= set(words)
    assert {"summer", "fall", "winter", "spring"} <= set(words["season"])
    assert {"men", "women", "boys", "girls", "unisex"} <= set(words["gender"])


def test_templates_have_a_word_slot_for_every_criterion():
    for dataset in descriptors.available_descriptor_sets():
        templates = descriptors.load_prompt_templates(dataset)
        assert set(templates) == set(descriptors.load_descriptors(dataset))
        assert all("{word}" in t for t in templates.values())


def test_a_user_file_replaces_the_shipped_words(tmp_path):
    path = tmp_path / "llm_words.json"
    path.write_text(json.dumps({"default_template": "a {word} thing", "criteria": {"colour": ["red", "blue"]}}))
    assert descriptors.load_descriptors("synthetic", path=path) == {"colour": ["red", "blue"]}
    assert descriptors.load_prompt_templates("synthetic", path=path) == {"colour": "a {word} thing"}


@pytest.mark.parametrize(
    "record, message",
    [
        ({"criteria": {}}, "non-empty"),
        ({"criteria": {"colour": ["red"]}}, "at least 2"),
        ({"criteria": {"colour": ["red", "red"]}}, "twice"),
        ({"default_template": "no slot", "criteria": {"colour": ["red", "blue"]}}, "slot"),
    ],
)
def test_bad_files_are_rejected_with_the_reason(tmp_path, record, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        descriptors.load_prompt_templates("x", path=path)


@pytest.mark.parametrize(
    "templates, message",
    [
        ({"colour": "a photo"}, r"bad\.json: templates\['colour'\] must be a string with a \{word\} slot"),
        ({"colour": 5}, r"bad\.json: templates\['colour'\] must be a string with a \{word\} slot, got 5"),
        ({"colur": "a {word} shirt"}, r"bad\.json: 'templates' has entries for \['colur'\], which are not criteria"),
        (["a {word} shirt"], r"bad\.json: 'templates' must be an object .* got list"),
    ],
)
def test_bad_templates_are_named_by_file_and_key(tmp_path, templates, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"templates": templates, "criteria": {"colour": ["red", "blue"]}}))
    with pytest.raises(ValueError, match=message):
        descriptors.load_prompt_templates("x", path=path)


def test_missing_set_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="synthetic"):
        descriptors.load_descriptors("no-such-dataset")
