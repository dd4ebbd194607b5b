"""Clip validation (training.clips): every bad clip is skipped with a message naming the file,
curves fitted to their audio, empty splits explained, emotion labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.config import PRESET_NAMES, RELEASED_EMOTION_LABELS
from emotalk_core.manifest import ManifestEntry, write_manifest
from training.clips import (
    IGNORE_LABEL,
    ClipError,
    DataError,
    fit_curves,
    label_index,
    load_split_clips,
    validate_entries,
)
from training.config import DataSection

from .test_training_corpus import make_corpus, voice

CFG = DataSection(max_seconds=4.0, cache_audio=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), seconds=(0.5, 0.9))


def clips_of(manifest: Path, split: str = "train", cfg: DataSection = CFG):
    return load_split_clips(manifest, cfg, [split])[0][split]


def _entry(tmp: Path, name: str, audio: np.ndarray | None = None, curves: np.ndarray | None
           = None, channels: int = 1, split: str = "train") -> ManifestEntry:
    wav, npy = tmp / f"{name}.wav", tmp / f"{name}.npy"
    if audio is not None:
        data = np.repeat(audio[:, None], channels, axis=1) if channels > 1 else audio
        sf.write(wav, data, 16000)
    if curves is not None:
        np.save(npy, curves)
    return ManifestEntry(clip_id=name, audio=wav, blendshapes=npy, split=split)


def test_every_bad_clip_is_skipped_with_a_message_naming_the_file(tmp_path):
    audio = voice(0.5, 150.0, seed=1)  # 15 frames
    good = np.full((15, 52), 0.2, np.float32)
    nan = good.copy()
    nan[4, 24] = np.nan
    entries = {
        "ok": _entry(tmp_path, "ok", audio, good),
        "within_tolerance": _entry(tmp_path, "within_tolerance", audio, good[:13]),
        "no_audio": _entry(tmp_path, "no_audio", None, good),
        "no_curves": _entry(tmp_path, "no_curves", audio, None),
        "mismatch": _entry(tmp_path, "mismatch", audio, np.zeros((25, 52), np.float32)),
        "channels51": _entry(tmp_path, "channels51", audio, good[:, :51]),
        "audio3ch": _entry(tmp_path, "audio3ch", audio, good, channels=3),
        "nan": _entry(tmp_path, "nan", audio, nan),
        "short": _entry(tmp_path, "short", audio[:800], good[:2]),
    }
    (tmp_path / "corrupt_audio.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    np.save(tmp_path / "corrupt_audio.npy", good)
    entries["corrupt_audio"] = ManifestEntry("corrupt_audio", tmp_path / "corrupt_audio.wav",
                                             "train", tmp_path / "corrupt_audio.npy")
    sf.write(tmp_path / "corrupt_curves.wav", audio, 16000)
    (tmp_path / "corrupt_curves.npy").write_bytes(b"\x93NUMPY garbage")
    entries["corrupt_curves"] = ManifestEntry("corrupt_curves", tmp_path / "corrupt_curves.wav",
                                              "train", tmp_path / "corrupt_curves.npy")
    good_clips, skipped = validate_entries(list(entries.values()), CFG)
    assert sorted(c.clip_id for c in good_clips) == ["ok", "within_tolerance"]
    reasons = {s.clip_id: s.reason for s in skipped}
    expected = {
        "no_audio": ("no_audio.wav", "missing"),
        "no_curves": ("no_curves.npy", "missing"),
        "mismatch": ("mismatch.npy", "25 frames", "15 frames", "tolerance 3"),
        "channels51": ("channels51.npy", "51 channels"),
        "audio3ch": ("audio3ch.wav", "3 channels"),
        "nan": ("nan.npy", "NaN", "frame 4", "jawOpen"),
        "short": ("short.wav", "min_seconds"),
        "corrupt_audio": ("corrupt_audio.wav", "corrupt"),
        "corrupt_curves": ("corrupt_curves.npy", "corrupt"),
    }
    for clip, words in expected.items():
        for word in words:
            assert word in reasons[clip], (clip, reasons[clip])


def test_curves_within_tolerance_are_trimmed_or_padded():
    curves = np.arange(10 * 52, dtype=np.float32).reshape(10, 52)
    padded = fit_curves(curves, 12, 3, "x")
    assert padded.shape == (12, 52) and np.array_equal(padded[11], curves[9])
    assert fit_curves(curves, 8, 3, "x").shape == (8, 52)
    with pytest.raises(ClipError, match="tolerance 3"):
        fit_curves(curves, 14, 3, "x")


def test_empty_split_is_an_error_that_says_why(tmp_path, corpus):
    with pytest.raises(DataError, match="split 'test' is empty: the manifest has no clip"):
        load_split_clips(corpus, CFG, ["train", "test"])
    bad = _entry(tmp_path, "only", None, np.zeros((3, 52), np.float32), split="val")
    write_manifest(tmp_path / "m.jsonl", [bad])
    with pytest.raises(DataError, match="none of its 1 clips passed.*only.wav is missing"):
        load_split_clips(tmp_path / "m.jsonl", CFG, ["val"])


def test_label_mapping():
    assert label_index("happy", PRESET_NAMES) == 2
    assert RELEASED_EMOTION_LABELS[label_index("fearful", RELEASED_EMOTION_LABELS)] == "fear"
    assert label_index("calm", RELEASED_EMOTION_LABELS) == IGNORE_LABEL
    assert label_index(None, PRESET_NAMES) == IGNORE_LABEL
