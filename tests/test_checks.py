"""The one whole-number check of counts, and the checks of notebook parameters (``course_utils.checks``)."""

import argparse
import re

import numpy as np
import pytest

from course_utils.checks import attribute_names, check_parameter, is_whole_number, names_problem, positive_number


@pytest.mark.parametrize("value", [0, 3, -2, np.int64(7), np.int32(1)])
def test_ints_are_whole_numbers(value):
    assert is_whole_number(value)


@pytest.mark.parametrize("value", [True, False, 2.5, 3.0, "3", None, np.float64(2.0)])
def test_bools_floats_and_strings_are_not(value):
    assert not is_whole_number(value)


def test_a_minimum_is_inclusive():
    assert is_whole_number(1, minimum=1) and not is_whole_number(0, minimum=1) and not is_whole_number(-5, minimum=1)


def test_a_refused_parameter_is_named_with_its_value_what_it_must_be_and_where_to_change_it():
    with pytest.raises(ValueError) as refused:
        check_parameter("tsne_points", 20, False, "a whole number > 30")
    assert str(refused.value) == (
        "parameter tsne_points=20: it must be a whole number > 30; change it in the notebook's parameters cell "
        "(or the runner's --set tsne_points=...)"
    )
    check_parameter("tsne_points", 300, True, "a whole number > 30")  # allowed: nothing raised


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("colour", "parameter match_attributes='colour': it must be a list of attribute names from 'colour', "),
        ([], "a non-empty list of attribute names from 'colour', 'category'; change it in"),
        (["colour", "color"], "a list of attribute names from 'colour', 'category' ('color' is not one)"),
        ([3], "(3 is not one)"),
    ],
)
def test_attribute_names_refuse_a_string_an_empty_list_and_names_the_catalogue_lacks(value, said):
    """A string was read as its letters ("same c + o + l + o + u + r") and failed in pandas after the evaluation."""
    with pytest.raises(ValueError, match=re.escape(said)):
        attribute_names(value, ("colour", "category"), "match_attributes")


def test_attribute_names_return_the_names_given_as_a_list():
    assert attribute_names(("category", "colour"), ["colour", "category", "sleeve"], "conditions") == [
        "category",
        "colour",
    ]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("train", "a list of names from 'train', 'test', not a plain string (a string is read letter by letter)"),
        ((), "a non-empty list of names from 'train', 'test'"),
        (None, "a non-empty list of names from 'train', 'test'"),
        (["train", "dev", 2], "a list of names from 'train', 'test' ('dev', 2 are not)"),
    ],
)
def test_names_problem_says_what_a_list_of_names_must_be(value, said):
    """One check serves the notebooks' attribute lists and the loaders' ``splits`` and ``categories``."""
    assert names_problem(value, ("train", "test")) == said


def test_names_problem_accepts_a_list_or_tuple_of_allowed_names():
    assert names_problem(["test"], ("train", "test")) is None
    assert names_problem(("train", "test"), ("train", "test")) is None


def test_a_rate_is_a_finite_number_above_zero():
    assert positive_number("1e-5") == 1e-5 and positive_number("0.3") == 0.3
    for text in ("0", "-1", "nan", "inf", "-inf", "fast", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"above 0, like 1e-5, got {text!r}")):
            positive_number(text)
