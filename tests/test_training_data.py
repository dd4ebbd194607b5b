"""The dataset command line (training.data): the 3D-ETF manifest builder (training.etf) and
the manifest merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.audio import num_frames
from emotalk_core.config import PRESET_NAMES
from emotalk_core.manifest import read_manifest
from training import data as D
from training.etf import parse_ravdess_stem

from .test_training_corpus import voice


# -- 3D-ETF ---------------------------------------------------------------------------------------
def test_ravdess_stem():
    info = parse_ravdess_stem("03-01-05-02-01-02-12")
    assert info["emotion"] == "angry" and info["intensity"] == 1 and info["person"] == 11
    assert info["content_id"] == "ravdess-speech-s01-r02"
    assert [parse_ravdess_stem(f"03-01-0{e}-01-01-01-01")["emotion"]
            for e in range(1, 9)] == list(PRESET_NAMES)
    for bad in ("03-01-09-01-01-01-01", "03-01-01-03-01-01-01", "03-01-01-01-01-01-25", "x"):
        with pytest.raises(ValueError):
            parse_ravdess_stem(bad)


def _write_clip(folder: Path, stem: str, seconds: float = 0.5, frames: int | None = None):
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    (folder / "blendshape").mkdir(parents=True, exist_ok=True)
    audio = voice(seconds, 150.0, seed=len(stem))
    sf.write(folder / "audio" / f"{stem}.wav", audio, 16000)
    n = num_frames(audio.size) if frames is None else frames
    np.save(folder / "blendshape" / f"{stem}.npy", np.full((n, 52), 0.1, np.float32))


def test_build_3detf(tmp_path):
    root = tmp_path / "3D-ETF"
    stems = ["03-01-05-02-01-01-12", "03-01-01-01-02-01-24", "03-01-03-01-02-02-21",
             "03-01-03-01-01-02-24"]
    for stem in stems:
        _write_clip(root / "RAVDESS", stem)
    _write_clip(root / "RAVDESS", "not-a-stem")
    (root / "RAVDESS" / "audio" / "03-01-02-01-01-01-01.wav").write_bytes(b"")  # no .npy
    for stem in ("WDA_Obama_000", "WDA_Obama_001", "RD_Radio1_000"):
        _write_clip(root / "HDTF", stem)
    out = tmp_path / "manifest.jsonl"
    assert D.main(["build-3detf", "--root", str(root), "--out", str(out)]) == 0
    entries = {e.clip_id: e for e in read_manifest(out)}
    assert len(entries) == 7
    angry = entries["ravdess-03-01-05-02-01-01-12"]
    assert (angry.emotion, angry.intensity, angry.person, angry.split) == ("angry", 1, 11, "train")
    assert angry.content_id == "ravdess-speech-s01-r01"
    assert entries["ravdess-03-01-01-01-02-01-24"].split == "val"  # statement 02 of actor 24
    assert entries["ravdess-03-01-03-01-02-02-21"].split == "test"  # statement 02 of actor 21
    assert entries["ravdess-03-01-03-01-01-02-24"].split == "train"  # statement 01 stays
    obama = [entries["hdtf-WDA_Obama_000"], entries["hdtf-WDA_Obama_001"]]
    assert obama[0].person == obama[1].person  # one speaker, one style slot
    assert entries["hdtf-RD_Radio1_000"].person != obama[0].person
    assert all(e.emotion is None for e in obama)
    assert str(entries["hdtf-RD_Radio1_000"].audio).endswith("RD_Radio1_000.wav")
    assert json.loads(out.read_text().splitlines()[0])["audio"].startswith("3D-ETF/")


def test_build_3detf_reports_problems(tmp_path, capsys):
    root = tmp_path / "3D-ETF"
    _write_clip(root / "RAVDESS", "03-01-05-02-01-01-12")
    _write_clip(root / "RAVDESS", "03-01-05-02-01-02-12", frames=3)  # far too short curves
    (root / "RAVDESS" / "audio" / "bad-name.wav").write_bytes(b"RIFF")
    out = tmp_path / "m.jsonl"
    assert D.main(["build-3detf", "--root", str(root), "--out", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "bad-name.wav has no blendshape/bad-name.npy" in text
    assert "03-01-05-02-01-02-12.npy has 3 frames" in text
    assert len(read_manifest(out)) == 1
    assert D.main(["build-3detf", "--root", str(tmp_path / "nothing"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith("python -m training.data: error: ")


def test_merge_keeps_only_the_chosen_splits_and_rejects_clashing_ids(tmp_path):
    from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest
    from training.clips import DataError
    from training.data import main, merge_manifests

    def entry(clip, split):
        return ManifestEntry(clip_id=clip, audio=tmp_path / f"{clip}.wav", split=split)

    write_manifest(tmp_path / "a.jsonl", [entry("a1", "train"), entry("a2", "val")])
    write_manifest(tmp_path / "b.jsonl", [entry("b1", "train"), entry("b2", "val"),
                                          entry("b3", "test")])
    merged = merge_manifests([str(tmp_path / "a.jsonl"), f"{tmp_path / 'b.jsonl'}:train"])
    assert [(e.clip_id, e.split) for e in merged] == [("a1", "train"), ("a2", "val"),
                                                      ("b1", "train")]
    assert main(["merge", "--out", str(tmp_path / "m" / "manifest.jsonl"),
                 str(tmp_path / "a.jsonl"), f"{tmp_path / 'b.jsonl'}:val,test"]) == 0
    assert [e.clip_id for e in read_manifest(tmp_path / "m" / "manifest.jsonl")] == [
        "a1", "a2", "b2", "b3"]
    write_manifest(tmp_path / "c.jsonl", [entry("a1", "train")])
    with pytest.raises(DataError, match="clip id 'a1' is in both"):
        merge_manifests([str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")])
    with pytest.raises(DataError, match="would be empty"):
        merge_manifests([f"{tmp_path / 'a.jsonl'}:test"])
