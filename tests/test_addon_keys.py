"""blender_addon/keys.py: key reduction and the records that let a re-bake remove its old keys
(no Blender needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blender_addon import keys


def _interpolated(values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    return np.interp(np.arange(values.shape[0]), kept, values[kept])


@pytest.mark.parametrize("tolerance", [0.001, 0.01, 0.05])
def test_reduced_keys_follow_the_curve_within_the_tolerance(tolerance):
    rng = np.random.default_rng(3)
    t = np.arange(900) / 30.0
    values = np.clip(0.5 + 0.4 * np.sin(2 * t) * np.sin(7.3 * t) + rng.normal(0, 0.01, t.size),
                     0, 1)
    kept = keys.reduce_keys(values, tolerance)
    assert kept[0] == 0 and kept[-1] == values.shape[0] - 1
    assert np.all(np.diff(kept) > 0)
    assert np.max(np.abs(_interpolated(values, kept) - values)) <= tolerance + 1e-12
    assert kept.size < values.size  # it does reduce


def test_straight_segments_and_holds_need_only_their_ends():
    values = np.concatenate([np.linspace(0, 1, 11), np.ones(10), np.linspace(1, 0, 6)[1:]])
    kept = keys.reduce_keys(values, 1e-6)
    assert list(kept) == [0, 10, 20, 25]


def test_zero_tolerance_and_short_curves_keep_every_frame():
    values = np.array([0.0, 0.5, 0.2, 0.9])
    assert list(keys.reduce_keys(values, 0.0)) == [0, 1, 2, 3]
    assert list(keys.reduce_keys(values[:2], 0.1)) == [0, 1]
    assert list(keys.reduce_keys(values[:1], 0.1)) == [0]


def test_records_round_trip_and_unreadable_ones_are_dropped():
    record = keys.BakeRecord("nla", 10, 58, ("jawOpen", "mouthClose"), "EmoTalk A")
    assert keys.read_records(keys.write_records({"A": record})) == {"A": record}
    stored = json.dumps({"A": record.to_dict(), "B": {"mode": "action", "frames": [5]},
                         "C": {"mode": "sideways", "frames": [1, 2], "shape_keys": []},
                         "D": "junk"})
    assert keys.read_records(stored) == {"A": record}
    assert keys.read_records(None) == {} and keys.read_records("{not json") == {}
    assert keys.read_records("[1, 2]") == {}


def test_spans_to_clear_are_those_of_the_strips_rebaked_in_that_mode():
    records = {"A": keys.BakeRecord("action", 1, 49, ("jawOpen", "mouthClose")),
               "B": keys.BakeRecord("action", 60, 90, ("jawOpen",)),
               "C": keys.BakeRecord("nla", 100, 120, ("jawOpen",), "EmoTalk C")}
    assert keys.spans_to_clear(records, ["A", "C", "Z"]) == {
        "jawOpen": [(1, 49)], "mouthClose": [(1, 49)]}
    assert keys.spans_to_clear(records, ["A", "B"])["jawOpen"] == [(1, 49), (60, 90)]
    assert keys.spans_to_clear(records, ["C"], mode="nla") == {"jawOpen": [(100, 120)]}
