"""Training data: 3D-ETF manifest builder, validation of bad clips, cross-reconstruction pairs,
bucketed batching, collation and augmentation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.audio import num_frames
from emotalk_core.config import PHONE_LABELS, PRESET_NAMES, RELEASED_EMOTION_LABELS
from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest
from training import augment as A
from training import data as D
from training.config import AugmentSection, DataSection

from .test_training_corpus import make_corpus, voice

CFG = DataSection(max_seconds=4.0, cache_audio=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), seconds=(0.5, 0.9))


def clips_of(manifest: Path, split: str = "train", cfg: DataSection = CFG):
    return D.load_split_clips(manifest, cfg, [split])[0][split]


# -- 3D-ETF ---------------------------------------------------------------------------------------
def test_ravdess_stem():
    info = D.parse_ravdess_stem("03-01-05-02-01-02-12")
    assert info["emotion"] == "angry" and info["intensity"] == 1 and info["person"] == 11
    assert info["content_id"] == "ravdess-speech-s01-r02"
    assert [D.parse_ravdess_stem(f"03-01-0{e}-01-01-01-01")["emotion"]
            for e in range(1, 9)] == list(PRESET_NAMES)
    for bad in ("03-01-09-01-01-01-01", "03-01-01-03-01-01-01", "03-01-01-01-01-01-25", "x"):
        with pytest.raises(ValueError):
            D.parse_ravdess_stem(bad)


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
    assert D.main(["build-3detf", "--root", str(tmp_path / "nothing"), "--out", str(out)]) == 2


# -- validation -----------------------------------------------------------------------------------
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
    good_clips, skipped = D.validate_entries(list(entries.values()), CFG)
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
    padded = D.fit_curves(curves, 12, 3, "x")
    assert padded.shape == (12, 52) and np.array_equal(padded[11], curves[9])
    assert D.fit_curves(curves, 8, 3, "x").shape == (8, 52)
    with pytest.raises(D.ClipError, match="tolerance 3"):
        D.fit_curves(curves, 14, 3, "x")


def test_empty_split_is_an_error_that_says_why(tmp_path, corpus):
    with pytest.raises(D.DataError, match="split 'test' is empty: the manifest has no clip"):
        D.load_split_clips(corpus, CFG, ["train", "test"])
    bad = _entry(tmp_path, "only", None, np.zeros((3, 52), np.float32), split="val")
    write_manifest(tmp_path / "m.jsonl", [bad])
    with pytest.raises(D.DataError, match="none of its 1 clips passed.*only.wav is missing"):
        D.load_split_clips(tmp_path / "m.jsonl", CFG, ["val"])


def test_a_clip_that_breaks_mid_run_is_replaced_and_reported(tmp_path):
    manifest = make_corpus(tmp_path, persons=1, contents=2, val_contents=0, seconds=(0.5, 0.6))
    clips = clips_of(manifest)
    dataset = D.PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0)
    Path(clips[0].entry.audio).write_bytes(b"RIFF" + b"\x00" * 40)  # damaged after validation
    sample = dataset[(0, 0, 0)]
    assert sample.clip_id == clips[1].clip_id
    assert [s.clip_id for s in sample.skipped] == [clips[0].clip_id]
    assert str(clips[0].entry.audio) in sample.skipped[0].reason
    assert dataset[(1, 0, 0)].skipped == []  # known bad: skipped silently from then on


# -- pairs ----------------------------------------------------------------------------------------
def test_cross_pairs_follow_the_paper(corpus):
    clips = clips_of(corpus)
    dataset = D.PairDataset(clips, CFG, PRESET_NAMES, seed=0)
    by_id = {c.clip_id: c.entry for c in clips}
    assert dataset.pairs.cross_fraction() == 1.0
    rng = np.random.default_rng(0)
    for anchor in range(len(clips)):
        for _ in range(5):
            donor_i, target_i = dataset.pairs.draw(anchor, rng)
            a, b, t = clips[anchor].entry, dataset.pairs.donors[donor_i].entry, \
                clips[target_i].entry
            assert a.person == b.person == t.person
            assert t.content_id == a.content_id != b.content_id  # content c1 from A
            assert t.emotion == b.emotion != a.emotion  # emotion e1 from B
            assert t.intensity == a.intensity
    sample = dataset[(0, 0, 0)]
    anchor = by_id[sample.clip_id]
    assert sample.is_cross
    matches = [c.entry for c in clips if np.array_equal(dataset.load(c)[1], sample.target_cross)]
    assert len(matches) == 1
    target = matches[0]
    assert target.content_id == anchor.content_id and target.emotion != anchor.emotion
    assert PRESET_NAMES[sample.emotion] == target.emotion  # the classifier learns B's emotion
    assert np.array_equal(sample.target_self, dataset.load(clips[0])[1])


def test_fallback_to_self_reconstruction(corpus):
    clips = clips_of(corpus)
    alone = [c for c in clips if c.entry.content_id == "c0"]  # one content: no donor
    dataset = D.PairDataset(alone, CFG, PRESET_NAMES, seed=0)
    assert dataset.pairs.cross_fraction() == 0.0
    sample = dataset[(0, 0, 2)]
    assert not sample.is_cross
    assert np.array_equal(sample.audio_a, sample.audio_b)
    assert np.array_equal(sample.target_cross, sample.target_self)
    assert PRESET_NAMES[sample.emotion] == alone[2].entry.emotion
    unlabelled = [D.ClipInfo(ManifestEntry(c.clip_id, c.entry.audio, "train",
                                           c.entry.blendshapes), c.samples, c.frames)
                  for c in clips[:2]]
    sample = D.PairDataset(unlabelled, CFG, PRESET_NAMES, seed=0)[(0, 0, 0)]
    assert not sample.is_cross and sample.emotion == D.IGNORE_LABEL
    no_cross = D.PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0)
    assert not no_cross[(0, 0, 0)].is_cross


def test_label_mapping():
    assert D.label_index("happy", PRESET_NAMES) == 2
    assert RELEASED_EMOTION_LABELS[D.label_index("fearful", RELEASED_EMOTION_LABELS)] == "fear"
    assert D.label_index("calm", RELEASED_EMOTION_LABELS) == D.IGNORE_LABEL
    assert D.label_index(None, PRESET_NAMES) == D.IGNORE_LABEL


def test_samples_are_functions_of_their_key(corpus):
    clips = clips_of(corpus)
    dataset = D.PairDataset(clips, CFG, PRESET_NAMES, seed=3, augment_cfg=AugmentSection(
        noise_probability=1.0))
    a, b = dataset[(2, 0, 1)], dataset[(2, 5, 1)]
    assert np.array_equal(a.audio_a, b.audio_a) and np.array_equal(a.audio_b, b.audio_b)
    c = dataset[(3, 0, 1)]
    assert not np.array_equal(a.audio_a, c.audio_a)  # another epoch: other noise


def test_long_clips_are_cropped_on_the_frame_grid(tmp_path):
    manifest = make_corpus(tmp_path, persons=1, contents=1, val_contents=0, seconds=(2.0, 2.2))
    cfg = DataSection(max_seconds=0.5)
    clips = clips_of(manifest, cfg=cfg)
    dataset = D.PairDataset(clips, cfg, PRESET_NAMES, seed=0)
    full_audio, full_curves = dataset.load(clips[0])
    sample = dataset[(0, 0, 0)]
    assert not sample.is_cross  # too long for a cross pair
    assert sample.audio_a.size == 8000 and sample.target_self.shape == (15, 52)
    start = next(s for s in range(0, full_audio.size, 1600)
                 if np.array_equal(full_audio[s:s + 8000], sample.audio_a))
    assert np.array_equal(full_curves[start // 1600 * 3:][:15], sample.target_self)


def test_oversampled_clips_come_back_as_distinct_copies(corpus):
    clips = clips_of(corpus)
    prefix = clips[1].clip_id
    cfg = DataSection(oversample={prefix: 3, "no-such-source-": 5})
    dataset = D.PairDataset(clips, cfg, PRESET_NAMES, seed=0, augment_cfg=AugmentSection(
        noise_probability=1.0))
    assert dataset.repeats() == [3 if c.clip_id.startswith(prefix) else 1 for c in clips]
    keys, lengths = dataset.epoch_items()
    n = len(clips)
    assert len(keys) == n + 2 * sum(c.clip_id.startswith(prefix) for c in clips)
    assert {k % n for k in keys} == set(range(n)) and len(set(keys)) == len(keys)
    assert lengths == [dataset.lengths()[k % n] for k in keys]
    copies = [dataset[(0, 0, 1 + r * n)] for r in range(3)]
    assert {c.clip_id for c in copies} == {clips[1].clip_id}
    assert not np.array_equal(copies[0].audio_a, copies[1].audio_a)  # own noise per copy
    batches = D.BucketBatches(lengths, 4, 2, seed=0, keys=keys)
    drawn = [k[2] for batch in itertools.islice(batches.iterate(0, 0),
                                                batches.batches_per_epoch()) for k in batch]
    assert sorted(drawn) == sorted(keys)  # every copy once per epoch


def test_speed_perturbation_moves_audio_and_curves_together(tmp_path):
    manifest = make_corpus(tmp_path, persons=1, contents=1, val_contents=0, seconds=(2.0, 2.2))
    cfg = DataSection(max_seconds=10.0, cross_pairs=False)
    clips = clips_of(manifest, cfg=cfg)
    plain = D.PairDataset(clips, cfg, PRESET_NAMES, seed=0, augment_cfg=AugmentSection(
        enabled=False))
    fast = D.PairDataset(clips, cfg, PRESET_NAMES, seed=0, augment_cfg=AugmentSection(
        gain_db=(0.0, 0.0), noise_probability=0.0, eq_probability=0.0, reverb_probability=0.0,
        speed_probability=1.0, speed_factor=(1.25, 1.25)))
    a, b = plain[(0, 0, 0)], fast[(0, 0, 0)]
    assert b.audio_a.size == round(a.audio_a.size / 1.25)
    assert b.target_self.shape[0] == num_frames(b.audio_a.size)
    np.testing.assert_allclose(b.target_self[[0, -1]], a.target_self[[0, -1]], atol=1e-6)
    mid = b.target_self.shape[0] // 2  # frame t of the fast clip is frame 1.25 t of the original
    np.testing.assert_allclose(b.target_self[mid], a.target_self[round(mid * 1.25)], atol=0.05)


# -- batching -------------------------------------------------------------------------------------
def test_bucketed_batches_cover_each_clip_once_and_shard_evenly():
    lengths = np.random.default_rng(0).uniform(1, 10, 53)
    single = D.BucketBatches(lengths, 4, 3, seed=1)
    batches = single.epoch_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(53))
    for b in batches:  # sorted within buckets: neighbours in a batch have similar lengths
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)
    assert single.epoch_batches(0) == batches and single.epoch_batches(1) != batches
    shards = [D.BucketBatches(lengths, 4, 3, seed=1, rank=r, world=3).epoch_batches(0)
              for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat))
    keys = D.BucketBatches(lengths, 4, 3, seed=1).iterate(0, 2)
    assert [k[2] for k in next(keys)] == batches[2] and next(keys)[0][:2] == (0, 3)
    with pytest.raises(D.DataError, match="fewer than the 8 processes"):
        D.BucketBatches(lengths[:5], 4, 3, seed=1, world=8)


def test_collate_pads_and_keeps_lengths(corpus):
    clips = clips_of(corpus)
    dataset = D.PairDataset(clips, CFG, PRESET_NAMES, seed=0)
    samples = [dataset[(0, 0, i)] for i in range(3)]
    batch = D.collate(samples)
    assert batch["audio_a"].shape == (3, max(s.audio_a.size for s in samples))
    assert batch["target_cross"].shape[2] == 52
    for i, s in enumerate(samples):
        n = s.audio_a.size
        assert batch["lengths_a"][i] == n and (batch["audio_a"][i, n:] == 0).all()
        t = s.target_cross.shape[0]
        assert batch["cross_frames"][i] == t and (batch["target_cross"][i, t:] == 0).all()
        assert batch["self_frames"][i] == num_frames(n)
    assert batch["emotion"].dtype.is_floating_point is False
    assert batch["level"].shape == (3,) and batch["is_cross"].all()


# -- augmentation ---------------------------------------------------------------------------------
def test_augmentation_is_seeded_and_sane():
    audio = voice(1.0, 150.0, seed=0)
    cfg = AugmentSection(noise_probability=1.0, eq_probability=1.0, reverb_probability=1.0)
    a = A.augment(audio, cfg, np.random.default_rng(5))
    b = A.augment(audio, cfg, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == audio.shape and a.dtype == np.float32
    assert not np.array_equal(a, A.augment(audio, cfg, np.random.default_rng(6)))
    assert A.augment(audio, AugmentSection(enabled=False), np.random.default_rng(0)) is audio
    noisy = A.add_noise(audio, 20.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(audio**2) / np.mean((noisy - audio) ** 2))
    assert abs(snr - 20.0) < 0.5
    rms = np.sqrt(np.mean(audio**2))
    for out in (A.spectral_tilt(audio, 3.0), A.reverb(audio, 0.3, 0.5, np.random.default_rng(0))):
        assert out.shape == audio.shape
        assert np.sqrt(np.mean(out**2)) == pytest.approx(rms, rel=1e-3)
    assert np.allclose(A.apply_gain(audio, 6.0206), audio * 2, atol=1e-5)


def test_band_limit_and_speed_change():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32)
    limited = A.lowpass(noise, 3400.0)
    spectrum = np.abs(np.fft.rfft(limited)) ** 2
    freqs = np.fft.rfftfreq(limited.size, 1 / 16000)
    assert spectrum[freqs > 4500].sum() < 1e-3 * spectrum[freqs < 3000].sum()
    assert np.sqrt(np.mean(limited**2)) == pytest.approx(np.sqrt(np.mean(noise**2)), rel=1e-3)
    tone = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000).astype(np.float32)
    faster = A.change_speed(tone, 1.1)
    assert faster.size == round(16000 / 1.1) and faster.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(faster))) * 16000 / faster.size
    assert peak == pytest.approx(220, abs=2)  # pitch rises with speed
    curves = np.linspace(0, 1, 31, dtype=np.float32)[:, None].repeat(52, 1)
    stretched = A.stretch_curves(curves, 41)
    assert stretched.shape == (41, 52) and stretched[0, 0] == 0 and stretched[-1, 0] == 1
    assert np.all(np.diff(stretched[:, 0]) > 0)
    cfg = AugmentSection(lowpass_probability=1.0, lowpass_hz=(3000.0, 3000.0), gain_db=(0, 0),
                         noise_probability=0.0, eq_probability=0.0, reverb_probability=0.0)
    np.testing.assert_allclose(A.augment(noise, cfg, np.random.default_rng(1)),
                               A.lowpass(noise, 3000.0), atol=1e-6)


def test_merge_keeps_only_the_chosen_splits_and_rejects_clashing_ids(tmp_path):
    from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest
    from training.data import DataError, main, merge_manifests

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


# -- phone labels (models with a phone head) ------------------------------------------------------
def with_phones(manifest: Path, phones_of) -> Path:
    """The manifest's clips with a phone file each (phones_of(entry, seconds) -> list or None
    for no file), written next to it as phones.jsonl."""
    folder = manifest.parent / "phones"
    folder.mkdir(exist_ok=True)
    entries = []
    for e in read_manifest(manifest):
        seconds = sf.info(str(e.audio)).duration
        phones = phones_of(e, seconds)
        path = None
        if phones is not None:
            path = folder / f"{e.clip_id}.json"
            path.write_text(json.dumps(phones) if not isinstance(phones, str) else phones)
        entries.append(ManifestEntry(e.clip_id, e.audio, e.split, e.blendshapes, e.emotion,
                                     e.intensity, e.person, e.content_id, path))
    out = manifest.parent / "phones.jsonl"
    write_manifest(out, entries)
    return out


def alternating_phones(entry, seconds: float) -> list:
    """SIL, then M and AA alternating every 0.1 s: frame k's phone is known from its time."""
    cuts = np.arange(0.1, seconds, 0.1)
    names = ["SIL"] + [("M", "AA1")[i % 2] for i in range(len(cuts))]
    edges = [0.0, *cuts.tolist(), seconds]
    return [[n, a, b] for n, a, b in zip(names, edges[:-1], edges[1:], strict=True)]


def _expected(frames: int, phone_labels=PHONE_LABELS) -> np.ndarray:
    """The classes alternating_phones gives frames 0..frames-1 (centres at (k + 0.5) / 30 s)."""
    step = np.floor((np.arange(frames) + 0.5) / 30 / 0.1).astype(int)
    names = ["SIL" if s == 0 else ("M", "AA")[(s - 1) % 2] for s in step]
    return np.array([phone_labels.index(n) for n in names])


def test_phone_labels_follow_the_frames_through_crop_and_speed(tmp_path):
    manifest = with_phones(make_corpus(tmp_path, persons=1, contents=1, val_contents=0,
                                        seconds=(2.0, 2.2)), alternating_phones)
    cfg = DataSection(max_seconds=1.0, cross_pairs=False)
    clips = clips_of(manifest, cfg=cfg)
    dataset = D.PairDataset(clips, cfg, PRESET_NAMES, seed=0, phone_labels=PHONE_LABELS)
    full = dataset.load_phones(clips[0], clips[0].frames)
    np.testing.assert_array_equal(full, _expected(clips[0].frames))  # stress digits dropped
    sample = dataset[(0, 0, 0)]
    assert sample.phones_self.shape == (sample.target_self.shape[0],) == (30,)
    full_audio, _ = dataset.load(clips[0])
    start = next(s for s in range(0, full_audio.size, 1600)
                 if np.array_equal(full_audio[s:s + 16000], sample.audio_a))
    np.testing.assert_array_equal(sample.phones_self, full[start // 1600 * 3:][:30])

    fast = D.PairDataset(clips, DataSection(max_seconds=10.0, cross_pairs=False), PRESET_NAMES,
                         seed=0, phone_labels=PHONE_LABELS, augment_cfg=AugmentSection(
                             gain_db=(0.0, 0.0), noise_probability=0.0, eq_probability=0.0,
                             reverb_probability=0.0, speed_probability=1.0,
                             speed_factor=(1.25, 1.25)))[(0, 0, 0)]
    assert fast.phones_self.shape == (fast.target_self.shape[0],)
    # frame t of the fast clip is frame 1.25 t of the original (up to a frame at the edges)
    moved = [fast.phones_self[t] == full[min(round(t * 1.25), full.size - 1)]
             for t in range(fast.phones_self.size)]
    assert np.mean(moved) > 0.8


def test_phone_labels_are_ignored_without_a_file_and_a_bad_file_is_reported(tmp_path):
    def some(entry, seconds):
        if entry.emotion == "happy":
            return "[[\"M\", 0.0]]"  # a broken entry
        return None if entry.emotion == "sad" else alternating_phones(entry, seconds)

    manifest = with_phones(make_corpus(tmp_path, persons=1, contents=2, val_contents=0), some)
    clips = clips_of(manifest, cfg=DataSection(cross_pairs=False))
    dataset = D.PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0,
                            phone_labels=PHONE_LABELS)
    by_emotion = {c.entry.emotion: i for i, c in enumerate(clips)}
    sad = dataset[(0, 0, by_emotion["sad"])]
    assert (sad.phones_self == D.IGNORE_LABEL).all()
    happy = dataset[(0, 0, by_emotion["happy"])]
    assert happy.clip_id != clips[by_emotion["happy"]].clip_id  # replaced by the next clip
    assert "bad phone entry" in happy.skipped[0].reason
    assert happy.skipped[0].clip_id == clips[by_emotion["happy"]].clip_id
    batch = D.collate([sad, dataset[(0, 0, by_emotion["neutral"])]])
    assert batch["phones_self"].shape == batch["target_self"].shape[:2]
    assert (batch["phones_self"][0] == D.IGNORE_LABEL).all()
    plain = D.PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0)
    assert plain[(0, 0, 0)].phones_self is None  # no phone head: nothing loaded
    assert D.collate([plain[(0, 0, 0)]])["phones_self"] is None


def test_stretch_labels_picks_the_nearest_frame():
    labels = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(A.stretch_labels(labels, 7), [0, 1, 1, 2, 3, 3, 4])
    np.testing.assert_array_equal(A.stretch_labels(labels, 3), [0, 2, 4])
    assert A.stretch_labels(labels, 5) is labels
