"""The hashed split assignment is stable across runs, follows the fractions and rejects bad fractions."""

from collections import Counter

import pytest

from course_utils.data.splits import DEFAULT_SPLIT_FRACTIONS, assign_split, stable_unit_interval


def test_assignment_is_pinned_across_versions():
    # SHA-256 of "0:<id>", not Python's salted hash(): these values must never change.
    assert stable_unit_interval(0, "15970") == pytest.approx(0.8626859513102187)
    assert [assign_split(str(i)) for i in range(10)] == [
        "train", "test", "train", "train", "train", "val", "train", "train", "train", "train",
    ]  # fmt: skip


def test_seed_changes_the_assignment():
    ids = [str(i) for i in range(200)]
    assert [assign_split(i, seed=0) for i in ids] == [assign_split(i, seed=0) for i in ids]
    assert [assign_split(i, seed=0) for i in ids] != [assign_split(i, seed=1) for i in ids]


def test_shares_follow_the_fractions():
    counts = Counter(assign_split(str(i)) for i in range(20_000))
    for name, share in DEFAULT_SPLIT_FRACTIONS.items():
        assert counts[name] / 20_000 == pytest.approx(share, abs=0.015)
    two_way = Counter(assign_split(str(i), fractions={"train": 0.5, "val": 0.0, "test": 0.5}) for i in range(2_000))
    assert set(two_way) == {"train", "test"}


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.7, "holdout": 0.3}, "unknown split name"),
        ({"train": 0.7, "test": 0.2}, "must sum to 1"),
        ({"train": 1.2, "test": -0.2}, "non-negative"),
    ],
)
def test_bad_fractions_are_rejected(fractions, message):
    with pytest.raises(ValueError, match=message):
        assign_split("1", fractions=fractions)
