"""What a bake writes, decided without Blender: key reduction, and the record of each strip's
bake that lets a re-bake remove the keys it wrote before, wherever the strip was then.

A bake records, on the shape-key datablock (an ID property, saved with the .blend), for each
strip it baked: where the keys went ("action": the shape keys' active action, or "nla": an
action of its own on the NLA track), the frames [first, end) and the shape keys written. A later
bake of the same strip first removes exactly that, so moving or trimming a strip and baking it
again leaves no stale keys, and hand keys elsewhere are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

RECORD_PROPERTY = "emotalk_bakes"
MODES = ("action", "nla")
NLA_TRACK = "EmoTalk"


@dataclass(frozen=True)
class BakeRecord:
    """One strip's last bake onto one shape-key datablock."""

    mode: str  # one of MODES
    first: int  # first keyed frame
    end: int  # one past the last keyed frame
    shape_keys: tuple[str, ...]
    nla_strip: str = ""  # the NLA strip's name in mode "nla"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "frames": [self.first, self.end],
                "shape_keys": list(self.shape_keys), "nla_strip": self.nla_strip}

    @classmethod
    def from_dict(cls, data: Mapping) -> BakeRecord | None:
        """None for anything unreadable (a record from another version, edited by hand): the
        strip is then baked as if for the first time."""
        try:
            first, end = (int(f) for f in data["frames"])
            mode = str(data["mode"])
            names = tuple(str(n) for n in data["shape_keys"])
            nla_strip = str(data.get("nla_strip", ""))
        except (KeyError, TypeError, ValueError):
            return None
        if mode not in MODES or end < first:
            return None
        return cls(mode, first, end, names, nla_strip)


def read_records(stored: str | None) -> dict[str, BakeRecord]:
    """The records kept on a datablock (`key.get(RECORD_PROPERTY)`: JSON text, as ID property
    names are limited in length and strip names are not), by strip."""
    try:
        parsed = json.loads(stored) if isinstance(stored, str) else {}
    except ValueError:
        parsed = {}
    records = {}
    for strip, data in (parsed if isinstance(parsed, dict) else {}).items():
        found = BakeRecord.from_dict(data) if isinstance(data, Mapping) else None
        if found is not None:
            records[str(strip)] = found
    return records


def write_records(records: Mapping[str, BakeRecord]) -> str:
    """The text to store as `RECORD_PROPERTY`."""
    return json.dumps({strip: r.to_dict() for strip, r in sorted(records.items())})


def spans_to_clear(records: Mapping[str, BakeRecord], strips: Iterable[str],
                   mode: str = "action") -> dict[str, list[tuple[int, int]]]:
    """Per shape key, the frame ranges that earlier bakes of `strips` wrote in `mode`."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for strip in strips:
        record = records.get(strip)
        if record is None or record.mode != mode:
            continue
        for name in record.shape_keys:
            spans.setdefault(name, []).append((record.first, record.end))
    return spans


def reduce_keys(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the samples (one per frame) to key so that linear interpolation between the
    kept ones stays within `tolerance` of every sample; the first and last are always kept, so
    a block joins its neighbours exactly. Tolerance 0 keeps every sample.

    Ramer-Douglas-Peucker on the vertical distance (frames and values have different units).
    """
    data = np.asarray(values, dtype=np.float64)
    n = data.shape[0]
    if tolerance <= 0.0 or n <= 2:
        return np.arange(n)
    keep = np.zeros(n, dtype=bool)
    keep[[0, n - 1]] = True
    stack = [(0, n - 1)]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        t = np.arange(1, hi - lo) / (hi - lo)
        error = np.abs(data[lo + 1:hi] - (data[lo] + (data[hi] - data[lo]) * t))
        worst = int(np.argmax(error))
        if error[worst] > tolerance:
            mid = lo + 1 + worst
            keep[mid] = True
            stack += [(lo, mid), (mid, hi)]
    return np.flatnonzero(keep)


def nla_strip_name(strip: str) -> str:
    """The NLA strip (and its action) of one sound strip's line."""
    return f"EmoTalk {strip}"
