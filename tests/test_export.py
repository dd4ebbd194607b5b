"""Tests of emotalk_core.export: the three curve formats, columns by name, and atomic writes
(emotalk_core.files.atomic_write, which every writer uses)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from emotalk_core import export
from emotalk_core.arkit import CHANNELS, INDEX
from emotalk_core.errors import OutputError
from emotalk_core.export import read_curves, write_curves
from emotalk_core.files import atomic_write

# The header of a Live Link Face take, as the iOS app writes it (typed out independently of
# export.LIVE_LINK_FACE_CHANNELS so that a change there is caught).
LIVE_LINK_FACE_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,"
    "EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,"
    "EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,"
    "JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,"
    "MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,"
    "BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,"
    "TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,"
    "RightEyePitch,RightEyeRoll"
)


def _curves(frames: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.1, 1.1, (frames, 52)).astype(np.float32)


def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------
# Live Link Face CSV


def test_csv_header_is_live_link_face(tmp_path):
    path = write_curves(tmp_path / "take.csv", _curves(3), 30)
    lines = path.read_text().splitlines()
    assert lines[0] == LIVE_LINK_FACE_HEADER
    assert len(lines) == 4
    assert all(line.split(",")[1] == "61" for line in lines[1:])
    assert all(len(line.split(",")) == 63 for line in lines)


def test_csv_columns_are_mapped_by_name(tmp_path):
    # Each channel gets its own constant, so any positional mix-up (e.g. JawLeft/JawRight,
    # which Live Link Face orders differently from EmoTalk) shows.
    values = np.tile((np.arange(52, dtype=np.float32) + 1) / 100, (5, 1))
    path = write_curves(tmp_path / "take.csv", values, 30)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    for row in rows:
        for name in CHANNELS:
            assert float(row[_pascal(name)]) == pytest.approx(values[0, INDEX[name]], abs=1e-7)
        for rotation in export.LIVE_LINK_FACE_ROTATIONS:
            assert float(row[rotation]) == 0.0
    assert float(rows[0]["JawLeft"]) == pytest.approx(values[0, INDEX["jawLeft"]])
    assert float(rows[0]["MouthRight"]) == pytest.approx(values[0, INDEX["mouthRight"]])


@pytest.mark.parametrize(
    ("fps", "frame", "code"),
    [
        (30, 0, "00:00:00:00.000"),
        (30, 29, "00:00:00:29.000"),
        (30, 30, "00:00:01:00.000"),
        (60, 61, "00:00:01:01.000"),
        (24, 100, "00:00:04:04.000"),
        (29.97, 30, "00:00:01:00.030"),
    ],
)
def test_csv_timecodes(tmp_path, fps, frame, code):
    path = write_curves(tmp_path / "t.csv", np.zeros((frame + 1, 52), np.float32), fps)
    lines = path.read_text().splitlines()
    assert lines[1].startswith("00:00:00:00.000,")
    assert lines[frame + 1].split(",")[0] == code


def test_timecode_of_long_takes():
    assert export._timecode(30 * 3661 + 7, 30) == "01:01:01:07.000"
    # 23.976 fps: timecodes are real time (frame within the second, then the fraction of a
    # frame), so 24000 frames land exactly on 1001 s and the one before is 0.976 frame short.
    assert export._timecode(24000, 24000 / 1001) == "00:16:41:00.000"
    assert export._timecode(23999, 24000 / 1001) == "00:16:40:22.976"


def test_csv_round_trip_and_fps(tmp_path):
    values = _curves(75)
    path = write_curves(tmp_path / "take.csv", values, 60)
    back, fps, channels = read_curves(path)
    np.testing.assert_allclose(back, values, atol=1e-7)
    assert channels == CHANNELS
    assert fps == 60.0  # 75 frames at 60 fps cross a second boundary
    short = write_curves(tmp_path / "short.csv", values[:10], 60)
    assert read_curves(short)[1] == 30.0  # under a second: unknown, so the default


def test_csv_from_live_link_face_layout_is_read_by_name(tmp_path):
    # A hand-made take in Live Link Face's layout, with head rotations that must be ignored.
    names = LIVE_LINK_FACE_HEADER.split(",")[2:54]
    values = _curves(2)
    lines = [LIVE_LINK_FACE_HEADER]
    for i, row in enumerate(values):
        cells = [f"{row[INDEX[n[0].lower() + n[1:]]]:.8f}" for n in names]
        lines.append(",".join([f"14:03:52:{i:02d}.207", "61", *cells] + ["12.5"] * 9))
    path = tmp_path / "iphone.csv"
    path.write_text("\n".join(lines) + "\n")
    back, fps, _ = read_curves(path)
    np.testing.assert_allclose(back, values, atol=1e-7)
    assert fps == 30.0


def test_csv_with_missing_channels_is_rejected(tmp_path):
    path = tmp_path / "partial.csv"
    path.write_text("Timecode,BlendShapeCount,JawOpen\n00:00:00:00.000,1,0.5\n")
    with pytest.raises(OutputError, match="partial.csv.*channels missing"):
        read_curves(path)


# ---------------------------------------------------------------------------------------------
# JSON and NPY


def test_json_layout_and_round_trip(tmp_path):
    values = _curves(12)
    meta = {
        "audio": "take1.wav",
        "level": np.float32(0.5),
        "person": np.int64(3),
        "persons": np.array([0, 3]),
    }
    path = write_curves(tmp_path / "c.json", values, 30, metadata=meta)
    document = json.loads(path.read_text())
    assert document["fps"] == 30.0 and document["frames"] == 12
    assert document["channels"] == list(CHANNELS)
    assert document["metadata"] == {
        "audio": "take1.wav",
        "level": 0.5,
        "person": 3,
        "persons": [0, 3],
    }
    assert np.array(document["values"]).shape == (12, 52)
    back, fps, channels = read_curves(path)
    np.testing.assert_array_equal(back, values)  # exact: float32 values survive JSON
    assert fps == 30.0 and channels == CHANNELS


def test_json_without_metadata_has_empty_metadata(tmp_path):
    document = json.loads(write_curves(tmp_path / "c.json", _curves(2), 25).read_text())
    assert document["metadata"] == {} and document["fps"] == 25.0


def test_npy_is_the_bare_array(tmp_path):
    values = _curves(9).astype(np.float64)
    path = write_curves(tmp_path / "c.npy", values, 30, metadata={"ignored": True})
    raw = np.load(path, allow_pickle=False)
    assert raw.dtype == np.float32 and raw.shape == (9, 52)
    np.testing.assert_array_equal(raw, values.astype(np.float32))
    back, fps, channels = read_curves(path)
    np.testing.assert_array_equal(back, raw)
    assert fps == 30.0 and channels == CHANNELS


def test_custom_channel_order_is_honoured(tmp_path):
    values = _curves(6)
    order = list(range(52))[::-1]
    names = [CHANNELS[i] for i in order]
    shuffled = values[:, order]
    for ext in (".json", ".csv"):
        back, _, _ = read_curves(write_curves(tmp_path / f"c{ext}", shuffled, 30, names))
        np.testing.assert_allclose(back, values, atol=1e-7)
    raw = np.load(write_curves(tmp_path / "c.npy", shuffled, 30, names))
    np.testing.assert_array_equal(raw, shuffled)  # .npy keeps the caller's column order


def test_rig_style_channel_names_are_accepted(tmp_path):
    names = [n.replace("Left", "_L").replace("Right", "_R") for n in CHANNELS]
    back, _, _ = read_curves(write_curves(tmp_path / "c.json", _curves(3), 30, names))
    np.testing.assert_array_equal(back, _curves(3))


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_extension(tmp_path):
    with pytest.raises(OutputError) as info:
        write_curves(tmp_path / "curves.txt", _curves(2), 30)
    message = str(info.value)
    assert "curves.txt" in message and ".npy, .json, .csv" in message


def test_missing_folder(tmp_path):
    target = tmp_path / "nowhere" / "c.csv"
    with pytest.raises(OutputError) as info:
        write_curves(target, _curves(2), 30)
    assert "nowhere" in str(info.value) and "does not exist; create it" in str(info.value)


def test_target_is_a_folder(tmp_path):
    (tmp_path / "c.json").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_curves(tmp_path / "c.json", _curves(2), 30)


@pytest.mark.parametrize(
    "values",
    [
        np.zeros((10, 51), np.float32),
        np.zeros(52, np.float32),
        np.zeros((0, 52), np.float32),
        np.zeros((2, 10, 52), np.float32),
        np.full((3, 52), np.nan, np.float32),
        np.full((3, 52), np.inf),
        np.full((3, 52), 1e300),  # finite in float64, infinite in float32
    ],
)
def test_bad_values(tmp_path, values):
    with pytest.raises(OutputError, match="c.npy"):
        write_curves(tmp_path / "c.npy", values, 30)
    assert not (tmp_path / "c.npy").exists()


@pytest.mark.parametrize("fps", [0, -30, float("nan"), float("inf"), "fast"])
def test_bad_fps(tmp_path, fps):
    with pytest.raises(OutputError, match="fps"):
        write_curves(tmp_path / "c.csv", _curves(2), fps)


@pytest.mark.parametrize(
    "channels",
    [CHANNELS[:51], (*CHANNELS[:51], CHANNELS[0]), (*CHANNELS[:51], "HeadYaw")],
)
def test_bad_channels(tmp_path, channels):
    with pytest.raises(OutputError, match="channels must name"):
        write_curves(tmp_path / "c.json", _curves(2), 30, channels)


def test_unserialisable_metadata(tmp_path):
    with pytest.raises(OutputError, match="metadata is not JSON"):
        write_curves(tmp_path / "c.json", _curves(2), 30, metadata={"x": object()})
    with pytest.raises(OutputError, match="metadata is not JSON"):
        write_curves(tmp_path / "c.json", _curves(2), 30, metadata={"x": float("nan")})
    assert not (tmp_path / "c.json").exists() and _leftovers(tmp_path) == []


def test_read_errors(tmp_path):
    with pytest.raises(OutputError, match="no such file"):
        read_curves(tmp_path / "missing.json")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(OutputError, match="unknown extension"):
        read_curves(tmp_path / "c.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(OutputError, match="bad.json"):
        read_curves(tmp_path / "bad.json")
    np.save(tmp_path / "bad.npy", np.zeros((3, 7)))
    with pytest.raises(OutputError, match="bad.npy"):
        read_curves(tmp_path / "bad.npy")


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_atomic_write_failure_leaves_no_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_write(target) as handle:
        handle.write(b"partial data")
        raise RuntimeError("disk on fire")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_existing_file(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("previous result")
    with pytest.raises(error), atomic_write(target, "w") as handle:
        handle.write("half of the new")
        raise error()
    assert target.read_text() == "previous result"
    assert _leftovers(tmp_path) == []


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target, "w") as handle:
        handle.write("new\n")
        assert target.read_text() == "old"  # nothing visible until the writer finishes
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640  # the old file's permissions are kept
    assert _leftovers(tmp_path) == []


def test_atomic_write_syncs_before_renaming(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_curves(tmp_path / "c.npy", _curves(2), 30)
    assert events[:2] == ["fsync", "replace"]


def test_atomic_write_new_file_gets_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "fresh.bin"
    with atomic_write(target) as handle:
        handle.write(b"x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_write_turns_os_errors_into_output_errors(tmp_path):
    target = tmp_path / "out.bin"
    with (
        pytest.raises(OutputError, match="out.bin.*No space left"),
        atomic_write(target) as handle,
    ):
        handle.write(b"x")
        raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_csv_export_keeps_previous_take(tmp_path, monkeypatch):
    target = tmp_path / "take.csv"
    write_curves(target, _curves(50), 30)
    before = target.read_bytes()
    original = export._timecode

    def interrupted(frame: int, fps: float) -> str:
        if frame == 20:
            raise KeyboardInterrupt
        return original(frame, fps)

    monkeypatch.setattr(export, "_timecode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_curves(target, _curves(50, seed=1), 30)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_module_uses_only_numpy_and_stdlib():
    source = Path(export.__file__).read_text()
    for module in ("torch", "scipy", "soundfile", "bpy"):
        assert f"import {module}" not in source
