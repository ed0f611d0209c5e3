"""Object2Vec JSON Lines: round trips, padding, labels, and malformed rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recjax.data import (
    PAD,
    MalformedFileError,
    PairData,
    Ratings,
    ratings_to_pairs,
    read_jsonlines,
    write_jsonlines,
)


def test_round_trip_multi_token_and_float_labels(tmp_path):
    pairs = PairData.from_lists(
        [[1], [2, 3, 4], [5, 6]],
        [[7, 8], [9], [10, 11, 12, 13]],
        [4.0, 3.5, 0.25],
    )
    assert pairs.in0.tolist() == [[1, PAD, PAD], [2, 3, 4], [5, 6, PAD]]
    assert pairs.in1.shape == (3, 4) and pairs.in0.dtype == np.int32
    path = tmp_path / "train.jsonl"
    write_jsonlines(path, pairs)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"in0": [1], "in1": [7, 8], "label": 4},  # integral labels written as ints
        {"in0": [2, 3, 4], "in1": [9], "label": 3.5},
        {"in0": [5, 6], "in1": [10, 11, 12, 13], "label": 0.25},
    ]
    assert '"label": 4}' in lines[0]
    back = read_jsonlines(path)
    np.testing.assert_array_equal(back.in0, pairs.in0)
    np.testing.assert_array_equal(back.in1, pairs.in1)
    assert back.label.dtype == np.float32 and back.label.tolist() == [4.0, 3.5, 0.25]
    assert len(back) == 3


def test_unlabelled_round_trip(tmp_path):
    pairs = PairData.from_lists([[0], [1, 2]], [[3], [4]])
    assert pairs.label is None
    path = tmp_path / "infer.jsonl"
    write_jsonlines(path, pairs)
    assert "label" not in path.read_text()
    back = read_jsonlines(path, require_label=False)
    assert back.label is None and back.in0.tolist() == [[0, PAD], [1, 2]]
    with pytest.raises(MalformedFileError, match=rf"{path}:1: 'label' must be a number"):
        read_jsonlines(path)


def test_ratings_to_pairs():
    data = Ratings.from_raw([10, 10, 20], ["a", "b", "a"], [4.0, 3.0, 5.0])
    pairs = ratings_to_pairs(data)
    assert pairs.in0.tolist() == [[0], [0], [1]] and pairs.in1.tolist() == [[0], [1], [0]]
    assert pairs.label.tolist() == [4.0, 3.0, 5.0]
    binary = ratings_to_pairs(data, binary_threshold=3.0)
    assert binary.label.tolist() == [1.0, 0.0, 1.0] and binary.label.dtype == np.float32


def test_ml100k_pairs_round_trip(ml100k, tmp_path):
    pairs = ratings_to_pairs(ml100k.subset(np.arange(5000)), binary_threshold=3.0)
    path = tmp_path / "ml.jsonl"
    write_jsonlines(path, pairs)
    back = read_jsonlines(path)
    np.testing.assert_array_equal(back.in0, pairs.in0)
    np.testing.assert_array_equal(back.label, ml100k.binary_labels()[:5000])


BAD = [
    ('{"in0": [1], "in1": [2], "label": 3', "invalid JSON"),
    ("[1, 2, 3]", "expected a JSON object"),
    ('{"in1": [2], "label": 3}', "'in0' must be a non-empty list"),
    ('{"in0": [], "in1": [2], "label": 3}', "'in0' must be a non-empty list"),
    ('{"in0": 1, "in1": [2], "label": 3}', "'in0' must be a non-empty list"),
    ('{"in0": [1], "in1": ["x"], "label": 3}', "'in1' must hold non-negative integer ids"),
    ('{"in0": [1.5], "in1": [2], "label": 3}', "'in0' must hold non-negative integer ids"),
    ('{"in0": [-1], "in1": [2], "label": 3}', "'in0' must hold non-negative integer ids"),
    ('{"in0": [true], "in1": [2], "label": 3}', "'in0' must hold non-negative integer ids"),
    ('{"in0": [1], "in1": [2]}', "'label' must be a number"),
    ('{"in0": [1], "in1": [2], "label": "4"}', "'label' must be a number"),
    ('{"in0": [1], "in1": [2], "label": NaN}', "'label' must be a number"),
    ('{"in0": [1], "in1": [2], "label": false}', "'label' must be a number"),
]


@pytest.mark.parametrize("row,reason", BAD)
def test_malformed_row_names_file_and_line(tmp_path, row, reason):
    path = tmp_path / "bad.jsonl"
    good = '{"in0": [1, 2], "in1": [3], "label": 1}\n'
    path.write_text(good + "\n" + good + row + "\n" + good)  # blank line 2, bad row on line 4
    with pytest.raises(MalformedFileError) as info:
        read_jsonlines(path)
    assert str(info.value).startswith(f"{path}:4: ") and reason in str(info.value)


def test_blank_lines_skipped(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(
        '\n{"in0": [1], "in1": [2], "label": 5}\n\n   \n{"in0": [3], "in1": [4], "label": 1}\n'
    )
    back = read_jsonlines(path)
    assert back.in0.tolist() == [[1], [3]] and back.label.tolist() == [5.0, 1.0]


tokens = st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6)
token_lists = st.lists(tokens, min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_round_trip_property(tmp_path_factory, data):
    in0 = data.draw(token_lists)
    in1 = data.draw(st.lists(tokens, min_size=len(in0), max_size=len(in0)))
    labels = data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32),
                                min_size=len(in0), max_size=len(in0)))
    pairs = PairData.from_lists(in0, in1, labels)
    path = tmp_path_factory.mktemp("jsonl") / "p.jsonl"
    write_jsonlines(path, pairs)
    back = read_jsonlines(path)
    np.testing.assert_array_equal(back.in0, pairs.in0)
    np.testing.assert_array_equal(back.in1, pairs.in1)
    np.testing.assert_array_equal(back.label, pairs.label)
    assert [[t for t in row if t != PAD] for row in back.in0.tolist()] == in0
