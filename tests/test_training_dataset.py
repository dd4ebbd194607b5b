"""The training-time dataset (training.dataset): clips replaced when they break mid-run,
cross-reconstruction pairs, samples as functions of their key, crops, oversampling, speed
perturbation, bucketed batching, collation and phone labels."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.audio import num_frames
from emotalk_core.config import PHONE_LABELS, PRESET_NAMES
from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest
from training.clips import IGNORE_LABEL, ClipInfo, DataError
from training.config import AugmentSection, DataSection
from training.dataset import BucketBatches, PairDataset, collate

from .test_training_clips import CFG, clips_of
from .test_training_corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), seconds=(0.5, 0.9))


def test_a_clip_that_breaks_mid_run_is_replaced_and_reported(tmp_path):
    manifest = make_corpus(tmp_path, persons=1, contents=2, val_contents=0, seconds=(0.5, 0.6))
    clips = clips_of(manifest)
    dataset = PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0)
    Path(clips[0].entry.audio).write_bytes(b"RIFF" + b"\x00" * 40)  # damaged after validation
    sample = dataset[(0, 0, 0)]
    assert sample.clip_id == clips[1].clip_id
    assert [s.clip_id for s in sample.skipped] == [clips[0].clip_id]
    assert str(clips[0].entry.audio) in sample.skipped[0].reason
    assert dataset[(1, 0, 0)].skipped == []  # known bad: skipped silently from then on


# -- pairs ----------------------------------------------------------------------------------------
def test_cross_pairs_follow_the_paper(corpus):
    clips = clips_of(corpus)
    dataset = PairDataset(clips, CFG, PRESET_NAMES, seed=0)
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
    dataset = PairDataset(alone, CFG, PRESET_NAMES, seed=0)
    assert dataset.pairs.cross_fraction() == 0.0
    sample = dataset[(0, 0, 2)]
    assert not sample.is_cross
    assert np.array_equal(sample.audio_a, sample.audio_b)
    assert np.array_equal(sample.target_cross, sample.target_self)
    assert PRESET_NAMES[sample.emotion] == alone[2].entry.emotion
    unlabelled = [ClipInfo(ManifestEntry(c.clip_id, c.entry.audio, "train",
                                           c.entry.blendshapes), c.samples, c.frames)
                  for c in clips[:2]]
    sample = PairDataset(unlabelled, CFG, PRESET_NAMES, seed=0)[(0, 0, 0)]
    assert not sample.is_cross and sample.emotion == IGNORE_LABEL
    no_cross = PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0)
    assert not no_cross[(0, 0, 0)].is_cross


def test_samples_are_functions_of_their_key(corpus):
    clips = clips_of(corpus)
    dataset = PairDataset(clips, CFG, PRESET_NAMES, seed=3, augment_cfg=AugmentSection(
        noise_probability=1.0))
    a, b = dataset[(2, 0, 1)], dataset[(2, 5, 1)]
    assert np.array_equal(a.audio_a, b.audio_a) and np.array_equal(a.audio_b, b.audio_b)
    c = dataset[(3, 0, 1)]
    assert not np.array_equal(a.audio_a, c.audio_a)  # another epoch: other noise


def test_long_clips_are_cropped_on_the_frame_grid(tmp_path):
    manifest = make_corpus(tmp_path, persons=1, contents=1, val_contents=0, seconds=(2.0, 2.2))
    cfg = DataSection(max_seconds=0.5)
    clips = clips_of(manifest, cfg=cfg)
    dataset = PairDataset(clips, cfg, PRESET_NAMES, seed=0)
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
    dataset = PairDataset(clips, cfg, PRESET_NAMES, seed=0, augment_cfg=AugmentSection(
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
    batches = BucketBatches(lengths, 4, 2, seed=0, keys=keys)
    drawn = [k[2] for batch in itertools.islice(batches.iterate(0, 0),
                                                batches.batches_per_epoch()) for k in batch]
    assert sorted(drawn) == sorted(keys)  # every copy once per epoch


def test_speed_perturbation_moves_audio_and_curves_together(tmp_path):
    manifest = make_corpus(tmp_path, persons=1, contents=1, val_contents=0, seconds=(2.0, 2.2))
    cfg = DataSection(max_seconds=10.0, cross_pairs=False)
    clips = clips_of(manifest, cfg=cfg)
    plain = PairDataset(clips, cfg, PRESET_NAMES, seed=0, augment_cfg=AugmentSection(
        enabled=False))
    fast = PairDataset(clips, cfg, PRESET_NAMES, seed=0, augment_cfg=AugmentSection(
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
    single = BucketBatches(lengths, 4, 3, seed=1)
    batches = single.epoch_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(53))
    for b in batches:  # sorted within buckets: neighbours in a batch have similar lengths
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)
    assert single.epoch_batches(0) == batches and single.epoch_batches(1) != batches
    shards = [BucketBatches(lengths, 4, 3, seed=1, rank=r, world=3).epoch_batches(0)
              for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat))
    keys = BucketBatches(lengths, 4, 3, seed=1).iterate(0, 2)
    assert [k[2] for k in next(keys)] == batches[2] and next(keys)[0][:2] == (0, 3)
    with pytest.raises(DataError, match="fewer than the 8 processes"):
        BucketBatches(lengths[:5], 4, 3, seed=1, world=8)


def test_collate_pads_and_keeps_lengths(corpus):
    clips = clips_of(corpus)
    dataset = PairDataset(clips, CFG, PRESET_NAMES, seed=0)
    samples = [dataset[(0, 0, i)] for i in range(3)]
    batch = collate(samples)
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
    dataset = PairDataset(clips, cfg, PRESET_NAMES, seed=0, phone_labels=PHONE_LABELS)
    full = dataset.load_phones(clips[0], clips[0].frames)
    np.testing.assert_array_equal(full, _expected(clips[0].frames))  # stress digits dropped
    sample = dataset[(0, 0, 0)]
    assert sample.phones_self.shape == (sample.target_self.shape[0],) == (30,)
    full_audio, _ = dataset.load(clips[0])
    start = next(s for s in range(0, full_audio.size, 1600)
                 if np.array_equal(full_audio[s:s + 16000], sample.audio_a))
    np.testing.assert_array_equal(sample.phones_self, full[start // 1600 * 3:][:30])

    fast = PairDataset(clips, DataSection(max_seconds=10.0, cross_pairs=False), PRESET_NAMES,
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
    dataset = PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0,
                            phone_labels=PHONE_LABELS)
    by_emotion = {c.entry.emotion: i for i, c in enumerate(clips)}
    sad = dataset[(0, 0, by_emotion["sad"])]
    assert (sad.phones_self == IGNORE_LABEL).all()
    happy = dataset[(0, 0, by_emotion["happy"])]
    assert happy.clip_id != clips[by_emotion["happy"]].clip_id  # replaced by the next clip
    assert "bad phone entry" in happy.skipped[0].reason
    assert happy.skipped[0].clip_id == clips[by_emotion["happy"]].clip_id
    batch = collate([sad, dataset[(0, 0, by_emotion["neutral"])]])
    assert batch["phones_self"].shape == batch["target_self"].shape[:2]
    assert (batch["phones_self"][0] == IGNORE_LABEL).all()
    plain = PairDataset(clips, DataSection(cross_pairs=False), PRESET_NAMES, seed=0)
    assert plain[(0, 0, 0)].phones_self is None  # no phone head: nothing loaded
    assert collate([plain[(0, 0, 0)]])["phones_self"] is None
