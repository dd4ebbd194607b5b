"""Write and read blendshape curves as .npy, .json or Live Link Face .csv.

- `.npy`: the (T, 52) float32 array, columns in the order of `channels` (EmoTalk's alphabetical
  order by default, the layout of 3D-ETF's blendshape files), nothing else.
- `.json`: `{"fps", "channels", "frames", "metadata", "values"}`, one row of 52 numbers per frame.
- `.csv`: the layout Live Link Face records and Unreal's Live Link Face importer reads:
  `Timecode,BlendShapeCount,<52 PascalCase names>,HeadYaw,...,RightEyeRoll`, BlendShapeCount 61
  (52 curves and 9 rotations, written as 0), timecode `HH:MM:SS:FF.fff` counted from zero, where
  FF is the frame within the second and .fff the fraction of a frame (always .000 at integral fps).

Live Link Face orders its columns differently from EmoTalk (eyes first, and JawRight before
JawLeft, MouthRight before MouthLeft), so columns are always matched by name, never by position.

Files are written atomically (`files.atomic_write`): a crash, an exception or Ctrl-C leaves
either the old file or the complete new one, never a truncated file that a batch bake would
mistake for a result. numpy and the standard library only, so the add-on side can import this
module.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .arkit import CHANNELS, NUM_CHANNELS, channel_index
from .config import FPS
from .errors import OutputError
from .files import (
    atomic_write,
    check_writable,
    checked_target,
    probe,
    require_file,
    shown,
)

__all__ = [
    "LIVE_LINK_FACE_CHANNELS",
    "LIVE_LINK_FACE_ROTATIONS",
    "SUPPORTED_EXTENSIONS",
    "read_curves",
    "write_curves",
]

# Live Link Face's CSV column order (as recorded by the iOS app and read by Unreal's importer).
LIVE_LINK_FACE_CHANNELS: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward",
    "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight",
    "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft",
    "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft",
    "NoseSneerRight", "TongueOut",
)  # fmt: skip
LIVE_LINK_FACE_ROTATIONS: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
_CSV_HEADER = ("Timecode", "BlendShapeCount", *LIVE_LINK_FACE_CHANNELS, *LIVE_LINK_FACE_ROTATIONS)
_BLEND_SHAPE_COUNT = len(LIVE_LINK_FACE_CHANNELS) + len(LIVE_LINK_FACE_ROTATIONS)  # 61
_TIMECODE = re.compile(r"^(\d+):(\d{2}):(\d{2}):(\d+)(?:\.(\d+))?$")

SUPPORTED_EXTENSIONS = (".npy", ".json", ".csv")
DEFAULT_NPY_FPS = float(FPS)  # .npy files carry no frame rate; EmoTalk's curves are 30 fps


# ---------------------------------------------------------------------------------------------
# Writing


def write_curves(
    path: str | os.PathLike[str],
    values: np.ndarray,
    fps: float,
    channels: Sequence[str] = CHANNELS,
    metadata: dict[str, Any] | None = None,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write (T, 52) curves whose columns follow `channels`; the format follows the extension.

    `metadata` (JSON-serialisable) is stored only by .json; .npy and .csv have no place for it.
    `inputs`: the files the curves were made from, which `path` must not be. Returns the
    written path.
    """
    target = _checked_extension(path)
    checked_target(target, inputs)
    writer = _WRITERS[target.suffix.lower()]
    data = _checked_values(values, target)
    rate = _checked_fps(fps, target)
    names = _checked_channels(channels, target)
    writer(target, data, rate, names, metadata, inputs)
    return target


def check_output_path(
    path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    frames: int = 0,
) -> Path:
    """Fail early, before any work, when curves cannot be written to `path`: an unknown
    extension, a missing or read-only folder, one of the `inputs` as the output, or too little
    free space for `frames` frames."""
    target = _checked_extension(path)
    checked_target(target, inputs)
    check_writable(target, estimated_size(target, frames))
    return target


def estimated_size(path: str | os.PathLike[str], frames: int) -> int:
    """About how many bytes `frames` frames of curves take in the format of `path`."""
    per_frame = _BYTES_PER_FRAME.get(Path(os.fspath(path)).suffix.lower(), 0)
    return 256 + max(0, int(frames)) * per_frame


def _checked_extension(path: str | os.PathLike[str]) -> Path:
    target = Path(os.fspath(path))
    if target.suffix.lower() not in _WRITERS:
        raise OutputError(
            f"cannot write {shown(target)}: unknown extension {target.suffix!r}; use one of "
            f"{', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return target


def _checked_values(values: np.ndarray, target: Path) -> np.ndarray:
    """The curves as finite float32 (T, 52) with T >= 1."""
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            data = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"cannot write {target}: values are not numbers ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != NUM_CHANNELS or data.shape[0] == 0:
        raise OutputError(
            f"cannot write {target}: values have shape {data.shape}, expected (frames, "
            f"{NUM_CHANNELS}) with at least one frame"
        )
    if not np.isfinite(data).all():
        raise OutputError(
            f"cannot write {target}: values contain NaN or infinity (or exceed float32); "
            "this is a bug in whatever produced them"
        )
    return data


def _checked_fps(fps: float, target: Path) -> float:
    try:
        rate = float(fps)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"cannot write {target}: fps {fps!r} is not a number") from exc
    if not math.isfinite(rate) or rate <= 0:
        raise OutputError(f"cannot write {target}: fps {fps!r} must be a positive number")
    return rate


def _checked_channels(channels: Sequence[str], target: Path) -> tuple[str, ...]:
    """Channel names that spell each of the 52 ARKit channels exactly once."""
    names = tuple(str(name) for name in channels)
    indices = [channel_index(name) for name in names]
    unknown = [name for name, index in zip(names, indices, strict=True) if index is None]
    if len(names) != NUM_CHANNELS or unknown or len(set(indices)) != NUM_CHANNELS:
        detail = f"unknown names {', '.join(unknown)}" if unknown else "duplicates or missing"
        raise OutputError(
            f"cannot write {target}: channels must name the {NUM_CHANNELS} ARKit blendshapes "
            f"once each ({len(names)} given, {detail})"
        )
    return names


def _write_npy(
    target: Path,
    values: np.ndarray,
    fps: float,
    channels: tuple[str, ...],
    metadata: dict[str, Any] | None,
    inputs: Sequence[str | os.PathLike[str] | None],
) -> None:
    with atomic_write(target, inputs=inputs) as handle:
        np.save(handle, values, allow_pickle=False)


def _write_json(
    target: Path,
    values: np.ndarray,
    fps: float,
    channels: tuple[str, ...],
    metadata: dict[str, Any] | None,
    inputs: Sequence[str | os.PathLike[str] | None],
) -> None:
    fields = {
        "fps": fps,
        "frames": int(values.shape[0]),
        "channels": list(channels),
        "metadata": _json_metadata(metadata, target),
    }
    # One field per line and one frame per line: readable and diffable, yet compact.
    head = "".join(
        f" {json.dumps(k)}: {json.dumps(v, allow_nan=False)},\n" for k, v in fields.items()
    )
    rows = values.astype(np.float64).tolist()  # exact float32 values, as shortest float64 text
    with atomic_write(target, "w", inputs=inputs) as handle:
        handle.write("{\n" + head + ' "values": [\n')
        handle.write(",\n".join("  " + json.dumps(row) for row in rows))
        handle.write("\n ]\n}\n")


def _json_metadata(metadata: dict[str, Any] | None, target: Path) -> dict[str, Any]:
    """Metadata as plain JSON values (numpy scalars and arrays, paths converted)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise OutputError(
            f"cannot write {target}: metadata must be a dict, not {type(metadata).__name__}"
        )
    try:
        return json.loads(json.dumps(metadata, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise OutputError(
            f"cannot write {target}: metadata is not JSON-serialisable ({exc}); pass plain "
            "numbers, strings, lists and dicts"
        ) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _write_csv(
    target: Path,
    values: np.ndarray,
    fps: float,
    channels: tuple[str, ...],
    metadata: dict[str, Any] | None,
    inputs: Sequence[str | os.PathLike[str] | None],
) -> None:
    order = _column_order(channels)
    ordered = values[:, order]
    rotations = ",".join("0" for _ in LIVE_LINK_FACE_ROTATIONS)
    with atomic_write(target, "w", inputs=inputs) as handle:
        handle.write(",".join(_CSV_HEADER) + "\n")
        for frame, row in enumerate(ordered):
            cells = ",".join(f"{v:.8f}" for v in row.tolist())
            handle.write(f"{_timecode(frame, fps)},{_BLEND_SHAPE_COUNT},{cells},{rotations}\n")


def _column_order(channels: tuple[str, ...]) -> list[int]:
    """For each Live Link Face column, the index of the matching column of `channels`, by name."""
    position = {channel_index(name): i for i, name in enumerate(channels)}
    return [position[channel_index(name)] for name in LIVE_LINK_FACE_CHANNELS]


def _timecode(frame: int, fps: float) -> str:
    """`HH:MM:SS:FF.fff` of frame `frame` at `fps`, counted from 00:00:00:00.000.

    Exact rational arithmetic, so that 29.97 or 23.976 fps do not drift or round a frame into
    the next second.
    """
    rate = Fraction(fps).limit_denominator(100000)
    seconds_total = Fraction(frame) / rate
    whole = math.floor(seconds_total)
    position = (seconds_total - whole) * rate  # frames into the current second
    ff = math.floor(position)
    thousandths = min(999, round((position - ff) * 1000))
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}:{ff:02d}.{thousandths:03d}"


_WRITERS = {".npy": _write_npy, ".json": _write_json, ".csv": _write_csv}
# Upper estimates of one frame's bytes (52 values) in each format, for the free-space check.
_BYTES_PER_FRAME = {".npy": 4 * NUM_CHANNELS, ".json": 26 * NUM_CHANNELS,
                    ".csv": 12 * NUM_CHANNELS + 64}


# ---------------------------------------------------------------------------------------------
# Reading


def read_curves(path: str | os.PathLike[str]) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """Read curves written by `write_curves` (or recorded by Live Link Face).

    Returns (values (T, 52) float32 in EmoTalk's channel order, fps, CHANNELS). The frame rate
    of a .npy file is unknown and returned as 30.0 (EmoTalk's rate), and its columns are taken to
    be in EmoTalk's order. A .csv has no frame rate either: it is the frames per timecode second
    (largest FF + 1) when the take spans a second boundary, else 30.0.
    """
    source = Path(os.fspath(path))
    reader = _READERS.get(source.suffix.lower())
    if reader is None:
        raise OutputError(
            f"cannot read curves from {source}: unknown extension {source.suffix!r}; use one "
            f"of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if probe(source, "curves file", OutputError) is None:
        raise OutputError(f"cannot read curves from {shown(source)}: no such file; check the "
                          "path")
    require_file(source, "curves file", OutputError)  # a FIFO would block the reader
    try:
        values, fps = reader(source)
    except OutputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, csv.Error) as exc:
        raise OutputError(
            f"cannot read curves from {source}: {exc}; write it again with write_curves"
        ) from exc
    if not np.isfinite(values).all():
        raise OutputError(f"cannot read curves from {source}: it contains NaN or infinity")
    return values, fps, CHANNELS


def _read_npy(source: Path) -> tuple[np.ndarray, float]:
    data = np.load(source, allow_pickle=False)
    if data.ndim != 2 or data.shape[1] != NUM_CHANNELS:
        raise ValueError(f"array has shape {data.shape}, expected (frames, {NUM_CHANNELS})")
    return np.ascontiguousarray(data, dtype=np.float32), DEFAULT_NPY_FPS


def _read_json(source: Path) -> tuple[np.ndarray, float]:
    with open(source, encoding="utf-8") as handle:
        document = json.load(handle)
    if not isinstance(document, dict):
        raise ValueError("the file is not a JSON object")
    fps = float(document["fps"])
    channels = [str(name) for name in document["channels"]]
    values = np.asarray(document["values"], dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(channels):
        raise ValueError(f"values have shape {values.shape} for {len(channels)} channels")
    return _to_emotalk_order(values, channels), fps


def _read_csv(source: Path) -> tuple[np.ndarray, float]:
    with open(source, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or not rows[0] or rows[0][0].strip() != "Timecode":
        raise ValueError("the first column is not Timecode; expected a Live Link Face CSV")
    header = [name.strip() for name in rows[0]]
    body = [row for row in rows[1:] if row]
    columns = [i for i, name in enumerate(header) if channel_index(name) is not None]
    table = np.array([[float(row[i]) for i in columns] for row in body], dtype=np.float32)
    table = table.reshape(len(body), len(columns))
    values = _to_emotalk_order(table, [header[i] for i in columns])
    return values, _csv_fps([row[0] for row in body])


def _to_emotalk_order(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Reorder columns named `names` into EmoTalk's order; every channel must appear once."""
    out = np.zeros((values.shape[0], NUM_CHANNELS), dtype=np.float32)
    seen: set[int] = set()
    for column, name in enumerate(names):
        index = channel_index(name)
        if index is None or index in seen:
            raise ValueError(f"column {name!r} is unknown or repeated")
        seen.add(index)
        out[:, index] = values[:, column]
    missing = [CHANNELS[i] for i in range(NUM_CHANNELS) if i not in seen]
    if missing:
        raise ValueError(f"channels missing: {', '.join(missing)}")
    return out


def _csv_fps(timecodes: list[str]) -> float:
    """Frames per timecode second, when the take crosses a second boundary; else FPS."""
    parsed = [_TIMECODE.match(code.strip()) for code in timecodes]
    if not parsed or not all(parsed):
        return float(FPS)
    seconds = {match.group(1, 2, 3) for match in parsed if match}
    if len(seconds) < 2:
        return float(FPS)
    return float(max(int(match.group(4)) for match in parsed if match) + 1)


_READERS = {".npy": _read_npy, ".json": _read_json, ".csv": _read_csv}
