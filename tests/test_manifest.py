"""The training-data manifest: round trip, path handling, strict errors with line numbers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from emotalk_core import manifest as mf
from emotalk_core.errors import EmoTalkError
from emotalk_core.manifest import ManifestEntry, ManifestError

VALID = {"clip_id": "a", "audio": "audio/a.wav", "split": "train"}


def _entries(root: Path, outside: Path) -> list[ManifestEntry]:
    return [
        ManifestEntry(
            clip_id="ravdess-03-01-05-02-01-01-12",
            audio=root / "RAVDESS" / "audio" / "x.wav",
            blendshapes=root / "RAVDESS" / "blendshape" / "x.npy",
            emotion="angry",
            intensity=1,
            person=11,
            content_id="ravdess-s01",
            split="train",
            phones=root / "RAVDESS" / "phones" / "x.json",
        ),
        ManifestEntry(clip_id="synth-0001", audio=root / "s.wav", split="val", person=0),
        ManifestEntry(clip_id="real\u2028clip é", audio=outside / "r.wav", split="test"),
    ]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_keeps_every_field_and_writes_relative_paths(tmp_path):
    root = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    entries = _entries(root, outside)
    path = root / "manifest.jsonl"
    mf.write_manifest(path, entries)
    assert mf.read_manifest(path) == entries
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert len(records) == 3
    assert records[0]["audio"] == "RAVDESS/audio/x.wav"
    assert records[0]["blendshapes"] == "RAVDESS/blendshape/x.npy"
    assert records[0]["phones"] == "RAVDESS/phones/x.json"
    assert records[1]["blendshapes"] is None and records[1]["emotion"] is None
    assert records[1]["phones"] is None
    assert records[2]["audio"] == str(outside / "r.wav")  # outside the folder: absolute
    assert list(records[0]) == list(mf.KEYS)  # every key written, in a fixed order


def test_relative_paths_resolve_against_the_manifest_folder_not_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "set"
    folder.mkdir()
    path = _write_lines(folder / "m.jsonl", [json.dumps(VALID | {"blendshapes": "../bs/a.npy",
                                                                 "phones": "phones/a.json"})])
    monkeypatch.chdir(tmp_path)
    (entry,) = mf.read_manifest("set/m.jsonl")
    assert entry.audio == folder / "audio" / "a.wav" and entry.audio.is_absolute()
    assert entry.blendshapes == tmp_path / "bs" / "a.npy"  # ".." normalised away
    assert entry.phones == folder / "phones" / "a.json"
    assert path.exists()


def test_optional_keys_default_and_blank_lines_are_skipped(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", ["", json.dumps(VALID), "   ", ""])
    (entry,) = mf.read_manifest(path)
    assert (entry.blendshapes, entry.emotion, entry.intensity) == (None, None, 0)
    assert (entry.person, entry.content_id) == (None, None)
    nulls = VALID | {"intensity": None, "person": None, "emotion": None, "clip_id": "b"}
    _write_lines(path, [json.dumps(nulls)])
    assert mf.read_manifest(path)[0].intensity == 0


def test_crlf_line_endings_are_accepted(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes((json.dumps(VALID) + "\r\n").encode())
    assert mf.read_manifest(path)[0].clip_id == "a"


BAD_LINES = [
    (VALID | {"speaker": 3}, "unknown key"),
    ({"audio": "a.wav", "split": "train"}, "'clip_id'"),
    ({"clip_id": "x", "split": "train"}, "'audio'"),
    ({"clip_id": "x", "audio": "a.wav"}, "'split'"),
    (VALID | {"clip_id": 7}, "'clip_id' must be a string"),
    (VALID | {"clip_id": ""}, "clip_id must be a non-empty string"),
    (VALID | {"audio": None}, "'audio' must be a string"),
    (VALID | {"audio": ""}, "empty path"),
    (VALID | {"blendshapes": 3}, "'blendshapes' must be a string or null"),
    (VALID | {"emotion": "happpy"}, "unknown emotion 'happpy'"),
    (VALID | {"emotion": "fear"}, "unknown emotion 'fear'"),  # a released label, not a preset
    (VALID | {"intensity": "1"}, "'intensity' must be an integer"),
    (VALID | {"intensity": True}, "'intensity' must be an integer"),
    (VALID | {"intensity": 2}, "intensity must be 0 (normal) or 1 (strong)"),
    (VALID | {"intensity": 1.0}, "'intensity' must be an integer"),
    (VALID | {"person": 24}, "person must be an integer from 0 to 23"),
    (VALID | {"person": -1}, "person must be an integer from 0 to 23"),
    (VALID | {"person": 2.5}, "'person' must be an integer"),
    (VALID | {"content_id": 5}, "'content_id' must be a string or null"),
    (VALID | {"phones": ["M", 0.0, 0.1]}, "'phones' must be a string or null"),
    (VALID | {"phones": " "}, "'phones' must not be an empty path"),
    (VALID | {"split": "training"}, "split must be one of train, val, test"),
]


@pytest.mark.parametrize(("record", "words"), BAD_LINES)
def test_each_strict_error_names_the_file_and_line(tmp_path, record, words):
    good = json.dumps(VALID | {"clip_id": "first"})
    path = _write_lines(tmp_path / "m.jsonl", [good, "", json.dumps(record)])
    with pytest.raises(ManifestError) as info:
        mf.read_manifest(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    assert words in message
    assert info.value.line == 3 and info.value.path == path


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"clip_id": "x", "audio": "a.wav", "split": "train"', "not valid JSON"),
        ('["x", "a.wav", "train"]', "expected a JSON object, got an array"),
        ('{"clip_id": "x", "clip_id": "y", "audio": "a", "split": "val"}', "more than once"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path, line, words):
    path = _write_lines(tmp_path / "m.jsonl", [json.dumps(VALID), line])
    with pytest.raises(ManifestError, match=r"line 2: .*" + words):
        mf.read_manifest(path)


def test_duplicate_clip_ids_name_both_lines(tmp_path):
    other = VALID | {"split": "val"}
    path = _write_lines(tmp_path / "m.jsonl", [json.dumps(VALID), json.dumps(other)])
    with pytest.raises(ManifestError) as info:
        mf.read_manifest(path)
    assert "line 2" in str(info.value) and "already used on line 1" in str(info.value)
    assert "'a'" in str(info.value)


def test_manifest_error_is_an_invalid_params_emotalk_error(tmp_path):
    assert issubclass(ManifestError, EmoTalkError) and ManifestError.code == -32602
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ManifestError, match="nope.jsonl"):
        mf.read_manifest(missing)


def test_entries_built_in_code_are_validated(tmp_path):
    with pytest.raises(ManifestError, match="unknown emotion"):
        ManifestEntry(clip_id="x", audio=tmp_path / "a.wav", split="train", emotion="joy")
    with pytest.raises(ManifestError, match="split"):
        ManifestEntry(clip_id="x", audio=tmp_path / "a.wav", split="dev")
    with pytest.raises(ManifestError, match="audio"):
        ManifestEntry(clip_id="x", audio=None, split="train")  # type: ignore[arg-type]
    entry = ManifestEntry(clip_id="x", audio="a.wav", split="train")  # type: ignore[arg-type]
    assert entry.audio == Path("a.wav")


def test_relative_entry_paths_are_written_relative_to_the_manifest(tmp_path):
    entry = ManifestEntry(clip_id="x", audio=Path("clips/x.wav"), split="train")
    mf.write_manifest(tmp_path / "m.jsonl", [entry])
    (read,) = mf.read_manifest(tmp_path / "m.jsonl")
    assert read.audio == tmp_path / "clips" / "x.wav"


def test_write_rejects_duplicates_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "m.jsonl"
    mf.write_manifest(path, [ManifestEntry(clip_id="x", audio=tmp_path / "x.wav", split="val")])
    before = path.read_text(encoding="utf-8")
    twice = [ManifestEntry(clip_id="y", audio=tmp_path / "y.wav", split="train")] * 2
    with pytest.raises(ManifestError, match="'y' appears twice"):
        mf.write_manifest(path, twice)
    assert path.read_text(encoding="utf-8") == before


def test_write_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    old = [ManifestEntry(clip_id="x", audio=tmp_path / "x.wav", split="val")]
    mf.write_manifest(path, old)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(mf.os, "replace", broken_replace)
    new = [ManifestEntry(clip_id="z", audio=tmp_path / "z.wav", split="test")]
    with pytest.raises(ManifestError, match="disk full"):
        mf.write_manifest(path, new)
    assert mf.read_manifest(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no temp file left


def test_write_creates_the_folder_and_a_readable_file(tmp_path):
    path = tmp_path / "new" / "deeper" / "m.jsonl"
    mf.write_manifest(path, [])
    assert path.read_text(encoding="utf-8") == ""
    assert mf.read_manifest(path) == []
    if sys.platform != "win32":
        assert os.stat(path).st_mode & 0o044 == 0o044  # not the 0600 of a raw temp file


def test_entries_by_split_keeps_order_and_every_split(tmp_path):
    entries = [
        ManifestEntry(clip_id=str(i), audio=tmp_path / f"{i}.wav", split=split)
        for i, split in enumerate(["train", "test", "train", "train"])
    ]
    groups = mf.entries_by_split(entries)
    assert list(groups) == ["train", "val", "test"]
    assert [e.clip_id for e in groups["train"]] == ["0", "2", "3"]
    assert groups["val"] == [] and [e.clip_id for e in groups["test"]] == ["1"]
