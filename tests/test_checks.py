"""The one whole-number check of counts (``course_utils.checks``)."""

import numpy as np
import pytest

from course_utils.checks import is_whole_number


@pytest.mark.parametrize("value", [0, 3, -2, np.int64(7), np.int32(1)])
def test_ints_are_whole_numbers(value):
    assert is_whole_number(value)


@pytest.mark.parametrize("value", [True, False, 2.5, 3.0, "3", None, np.float64(2.0)])
def test_bools_floats_and_strings_are_not(value):
    assert not is_whole_number(value)


def test_a_minimum_is_inclusive():
    assert is_whole_number(1, minimum=1) and not is_whole_number(0, minimum=1) and not is_whole_number(-5, minimum=1)
