"""The training-time dataset: cross-reconstruction pairs, samples, collation and
length-bucketed batching of validated clips (`training.clips`).

Cross-reconstruction (the paper's disentanglement): for anchor clip A (person p, content c1,
emotion e2), a donor B (person p, content c2 != c1, emotion e1 != e2) and a target T (person p,
content c1, emotion e1, A's intensity). The network must rebuild T from A's content and B's
emotion, and A from A alone. Without such a triple the sample falls back to self-reconstruction
(B = A, T = A).
"""

from __future__ import annotations

import math
import signal
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotalk_core.arkit import NUM_CHANNELS
from emotalk_core.audio import load_audio, num_frames
from emotalk_core.config import FPS, SAMPLE_RATE
from emotalk_core.errors import EmoTalkError
from emotalk_core.manifest import ManifestEntry
from emotalk_core.phonetics.track import NO_PHONE, source_classes, track_classes

from . import phone_tracks
from .augment import augment, change_speed, stretch_curves, stretch_labels
from .clips import (
    IGNORE_LABEL,
    ClipError,
    ClipInfo,
    DataError,
    Skipped,
    fit_curves,
    label_index,
    phone_label_frames,
    read_curves,
    read_phone_file,
)
from .config import AugmentSection, DataSection

FRAME_BLOCK = SAMPLE_RATE * 3 // FPS  # 1600 samples = 3 frames exactly: crop on this grid


# -- cross-reconstruction pairs -------------------------------------------------------------------
class PairIndex:
    """Finds (donor, target) for each anchor. Targets come from `clips` (the anchor's split);
    donors from `donors` (the training split for training; may add the anchors' own split for
    validation, where a donor only lends its emotion)."""

    def __init__(self, clips: Sequence[ClipInfo], donors: Sequence[ClipInfo], max_seconds: float):
        self.clips = list(clips)
        self.donors = list(donors)
        self._donors_pei: dict[tuple, list[int]] = defaultdict(list)
        self._donors_pe: dict[tuple, list[int]] = defaultdict(list)
        self._contents: dict[tuple, set[str]] = defaultdict(set)
        for j, d in enumerate(self.donors):
            e = d.entry
            if e.person is not None and e.emotion and e.content_id:
                self._donors_pei[(e.person, e.emotion, e.intensity)].append(j)
                self._donors_pe[(e.person, e.emotion)].append(j)
                self._contents[(e.person, e.emotion)].add(e.content_id)
        by_pci: dict[tuple, list[int]] = defaultdict(list)
        for i, c in enumerate(self.clips):
            e = c.entry
            if e.person is not None and e.emotion and e.content_id and c.seconds <= max_seconds:
                by_pci[(e.person, e.content_id, e.intensity)].append(i)
        self.targets: list[list[int]] = []
        for c in self.clips:
            e = c.entry
            options: list[int] = []
            if e.person is not None and e.emotion and e.content_id and c.seconds <= max_seconds:
                options = [t for t in by_pci[(e.person, e.content_id, e.intensity)]
                           if self.clips[t].entry.emotion != e.emotion
                           and self._has_donor(e, self.clips[t].entry.emotion)]
            self.targets.append(options)

    def _has_donor(self, anchor: ManifestEntry, emotion: str | None) -> bool:
        contents = self._contents.get((anchor.person, emotion), set())
        return bool(contents - {anchor.content_id})

    def _donor_pool(self, anchor: ManifestEntry, emotion: str | None) -> list[int]:
        """Donors of `emotion` for `anchor`'s person with other content; same intensity first."""
        for pool in (self._donors_pei.get((anchor.person, emotion, anchor.intensity), []),
                     self._donors_pe.get((anchor.person, emotion), [])):
            chosen = [j for j in pool if self.donors[j].entry.content_id != anchor.content_id]
            if chosen:
                return chosen
        return []

    def draw(self, anchor: int, rng: np.random.Generator) -> tuple[int, int] | None:
        """(donor index into `donors`, target index into `clips`), or None: self-reconstruction."""
        options = self.targets[anchor]
        if not options:
            return None
        target = options[int(rng.integers(len(options)))]
        pool = self._donor_pool(self.clips[anchor].entry, self.clips[target].entry.emotion)
        return pool[int(rng.integers(len(pool)))], target

    def cross_fraction(self) -> float:
        """Share of anchors that can form a cross pair."""
        return sum(1 for t in self.targets if t) / max(1, len(self.targets))


# -- dataset --------------------------------------------------------------------------------------
@dataclass
class Sample:
    clip_id: str
    audio_a: np.ndarray  # (S_a,) content (and own emotion) source
    audio_b: np.ndarray  # (S_b,) emotion donor
    target_cross: np.ndarray  # (T_c, 52)
    target_self: np.ndarray  # (T_s, 52)
    level: float
    person: int
    emotion: int  # label index of B's emotion, or IGNORE_LABEL
    is_cross: bool
    phones_self: np.ndarray | None = None  # (T_s,) phone classes of A, with a phone head
    track_a: np.ndarray | None = None  # (T_a,) A's phone track (-1: none), with a phone input
    epoch: int = 0
    position: int = 0
    skipped: list[Skipped] = field(default_factory=list)


class PairDataset(torch.utils.data.Dataset):
    """Items are addressed by keys (epoch, position, index): every random choice (pair, crop,
    augmentation) comes from a generator seeded with (seed, epoch, index), so worker processes,
    DDP ranks and a resumed run all see the same sample for the same key. With `phone_labels`
    (a model with a phone head) each sample carries the anchor's per-frame phone classes, cut
    and stretched with its curves; clips without a phone file get IGNORE_LABEL throughout."""

    def __init__(
        self,
        clips: Sequence[ClipInfo],
        cfg: DataSection,
        labels: Sequence[str],
        seed: int,
        augment_cfg: AugmentSection | None = None,
        donors: Sequence[ClipInfo] | None = None,
        train: bool = True,
        phone_labels: Sequence[str] = (),
        track_dir: Path | None = None,
    ):
        """`track_dir`: the phone-loop cache (training.phone_tracks) of a model with a phone
        input; samples then carry A's phone track."""
        self.clips = list(clips)
        self.phone_labels = tuple(phone_labels)
        self.track_dir = track_dir
        self.cfg = cfg
        self.labels = tuple(labels)
        self.seed = seed
        self.augment_cfg = augment_cfg if train else None
        self.train = train
        self.pairs = PairIndex(self.clips, list(donors) if donors is not None else self.clips,
                               cfg.max_seconds)
        self.max_samples = max(FRAME_BLOCK, int(cfg.max_seconds * SAMPLE_RATE)
                               // FRAME_BLOCK * FRAME_BLOCK)
        self._bad: set[str] = set()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def lengths(self) -> list[float]:
        """Seconds per anchor as batched (after cropping), for length bucketing."""
        return [min(c.seconds, self.max_samples / SAMPLE_RATE) for c in self.clips]

    def repeats(self) -> list[int]:
        """How many times each clip is drawn per epoch: `data.oversample` maps clip-id prefixes
        to a count (the longest matching prefix wins), 1 otherwise."""
        table = sorted(self.cfg.oversample.items(), key=lambda kv: -len(kv[0]))
        return [next((n for prefix, n in table if c.clip_id.startswith(prefix)), 1)
                for c in self.clips]

    def epoch_items(self) -> tuple[list[int], list[float]]:
        """Item keys and their lengths for one epoch. Copy r of clip i has key r * N + i, so
        every copy gets its own crop and augmentation; without oversampling keys are indices."""
        n, lengths = len(self.clips), self.lengths()
        keys = [r * n + i for i, k in enumerate(self.repeats()) for r in range(k)]
        return keys, [lengths[k % n] for k in keys]

    def __getitem__(self, key: tuple[int, int, int]) -> Sample:
        epoch, position, item = key
        index, copy = item % len(self.clips), item // len(self.clips)
        skipped: list[Skipped] = []
        for attempt in range(len(self.clips)):
            i = (index + attempt) % len(self.clips)
            if self.clips[i].clip_id in self._bad:
                continue
            try:
                sample = self._sample(epoch, i, skipped, copy)
            except ClipError as exc:
                self._bad.add(self.clips[i].clip_id)
                skipped.append(Skipped(self.clips[i].clip_id, str(exc)))
                continue
            sample.epoch, sample.position, sample.skipped = epoch, position, skipped
            return sample
        raise DataError("no clip of the split could be loaded; last problem: "
                        f"{skipped[-1].reason if skipped else 'none'}")

    def _sample(self, epoch: int, index: int, skipped: list[Skipped], copy: int = 0) -> Sample:
        seed = [self.seed, epoch if self.train else 0, index] + ([copy] if copy else [])
        rng = np.random.default_rng(seed)
        anchor = self.clips[index]
        audio_a, curves_a = self.load(anchor)
        labels_a = self.load_labels(anchor, curves_a.shape[0], seed)
        pair = self.pairs.draw(index, rng) if self.cfg.cross_pairs else None
        if pair is not None:
            donor, target = self.pairs.donors[pair[0]], self.clips[pair[1]]
            try:
                if donor.clip_id in self._bad or target.clip_id in self._bad:
                    raise ClipError("a partner clip was skipped earlier")
                audio_b, _ = self.load(donor)
                _, curves_t = self.load(target)
            except ClipError as exc:
                if "skipped earlier" not in str(exc):
                    bad = donor if donor.clip_id not in self._bad else target
                    self._bad.add(bad.clip_id)
                    skipped.append(Skipped(bad.clip_id, str(exc)))
                pair = None
        if pair is None:
            audio_a, curves_a, labels_a = self._change_speed(audio_a, curves_a, labels_a, rng)
            audio_a, curves_a, labels_a = self._crop(audio_a, curves_a, rng, labels_a)
            audio_a = self._augment(audio_a, rng)
            return self._make(anchor, audio_a, audio_a, curves_a, curves_a, anchor.entry.emotion,
                              False, labels_a)
        audio_b, _, _ = self._crop(audio_b, None, rng)
        audio_a, audio_b = self._augment(audio_a, rng), self._augment(audio_b, rng)
        return self._make(anchor, audio_a, audio_b, curves_t, curves_a, donor.entry.emotion, True,
                          labels_a)

    def _make(self, anchor: ClipInfo, audio_a, audio_b, target_cross, target_self,
              emotion: str | None, is_cross: bool, labels_a: np.ndarray | None) -> Sample:
        e = anchor.entry
        phones = track = None
        if labels_a is not None:
            phones = labels_a[:, 0] if self.phone_labels else None
            track = labels_a[:, 1] if self.track_dir is not None else None
        return Sample(e.clip_id, audio_a, audio_b, target_cross, target_self,
                      level=float(e.intensity), person=int(e.person or 0),
                      emotion=label_index(emotion, self.labels), is_cross=is_cross,
                      phones_self=phones, track_a=track)

    def load_labels(self, clip: ClipInfo, frames: int, seed: list[int]) -> np.ndarray | None:
        """(frames, 2) per-frame labels of A that crops and speed changes carry along with its
        curves: the phone head's classes (column 0) and the phone track (column 1); None when
        the model needs neither."""
        phones = self.load_phones(clip, frames)
        track = self.load_track(clip, frames, np.random.default_rng([*seed, 7]))
        if phones is None and track is None:
            return None
        if phones is None:
            phones = np.full(frames, IGNORE_LABEL, dtype=np.int64)
        if track is None:
            track = np.full(frames, NO_PHONE, dtype=np.int64)
        return np.stack([phones, track], axis=1)

    def load_track(self, clip: ClipInfo, frames: int, rng: np.random.Generator
                   ) -> np.ndarray | None:
        """(frames,) phone track of A (PHONE_LABELS classes, NO_PHONE where none): in training,
        the manifest's phone file (forced alignment, as with a transcript) for a share of
        samples, no track for another share, the cached phone loop otherwise; validation always
        reads the loop, as inference without a transcript. None without a phone input."""
        if self.track_dir is None:
            return None
        choice = rng.random()
        if self.train and choice < self.cfg.track_dropout:
            return np.full(frames, NO_PHONE, dtype=np.int64)
        aligned = (self.train and clip.entry.phones is not None
                   and choice < self.cfg.track_dropout + self.cfg.aligned_track_probability)
        path = (Path(clip.entry.phones) if aligned
                else phone_tracks.cache_path(self.track_dir, clip.clip_id))
        if not path.is_file():
            return np.full(frames, NO_PHONE, dtype=np.int64)
        try:
            phones = read_phone_file(path)
        except ValueError as exc:
            raise ClipError(f"phone track of {clip.clip_id}: {exc}") from exc
        return source_classes(track_classes(phones, frames), "alignment" if aligned else "loop")

    def load_phones(self, clip: ClipInfo, frames: int) -> np.ndarray | None:
        """(frames,) phone classes of the clip (IGNORE_LABEL throughout when the manifest names
        no phone file); None when the model has no phone head. ClipError names a bad file."""
        if not self.phone_labels:
            return None
        if clip.entry.phones is None:
            return np.full(frames, IGNORE_LABEL, dtype=np.int64)
        try:
            phones = read_phone_file(Path(clip.entry.phones))
        except ValueError as exc:
            raise ClipError(f"phone file of {clip.clip_id}: {exc}") from exc
        return phone_label_frames(phones, frames, self.phone_labels)

    def load(self, clip: ClipInfo) -> tuple[np.ndarray, np.ndarray]:
        """audio (S,) float32 16 kHz mono, curves (T, 52) fitted to the audio's T."""
        if clip.clip_id in self._cache:
            return self._cache[clip.clip_id]
        try:
            audio = load_audio(clip.entry.audio)
        except EmoTalkError as exc:
            raise ClipError(str(exc)) from exc
        curves = fit_curves(read_curves(Path(clip.entry.blendshapes)), num_frames(audio.size),
                            self.cfg.length_tolerance_frames, str(clip.entry.blendshapes))
        if self.cfg.cache_audio:
            self._cache[clip.clip_id] = (audio, curves)
        return audio, curves

    def _crop(self, audio: np.ndarray, curves: np.ndarray | None, rng: np.random.Generator,
              phones: np.ndarray | None = None):
        """A window of at most max_seconds starting on the 3-frame grid (1600 samples), so that
        the window's frames are exactly a slice of the clip's frames (curves and `phones`, the
        per-frame labels)."""
        if audio.size <= self.max_samples:
            return audio, curves, phones
        blocks = (audio.size - self.max_samples) // FRAME_BLOCK
        start = int(rng.integers(blocks + 1)) * FRAME_BLOCK if self.train else 0
        audio = audio[start: start + self.max_samples]
        first = start // FRAME_BLOCK * 3
        frames = slice(first, first + num_frames(audio.size))
        return (audio, None if curves is None else curves[frames],
                None if phones is None else phones[frames])

    def _change_speed(self, audio: np.ndarray, curves: np.ndarray, phones: np.ndarray | None,
                      rng: np.random.Generator):
        """Speed perturbation of a self-reconstruction sample: audio, curves and phones
        together (cross pairs keep their timing, which their partner clips share)."""
        cfg = self.augment_cfg
        if cfg is None or not cfg.enabled or cfg.speed_probability <= 0.0:
            return audio, curves, phones
        use, factor = rng.random() < cfg.speed_probability, rng.uniform(*cfg.speed_factor)
        if not use:
            return audio, curves, phones
        audio = change_speed(audio, factor)
        frames = num_frames(audio.size)
        return (audio, stretch_curves(curves, frames),
                None if phones is None else stretch_labels(phones, frames))

    def _augment(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.augment_cfg is None:
            return audio
        return augment(audio, self.augment_cfg, rng)


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Pad a list of samples into batch tensors (padding is zero; lengths say what is real)."""
    def pad_audio(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([a.size for a in arrays])
        out = torch.zeros(len(arrays), int(lengths.max()))  # (B, S)
        for i, a in enumerate(arrays):
            out[i, : a.size] = torch.from_numpy(np.ascontiguousarray(a))
        return out, lengths

    def pad_curves(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([a.shape[0] for a in arrays])
        out = torch.zeros(len(arrays), int(lengths.max()), NUM_CHANNELS)  # (B, T, 52)
        for i, a in enumerate(arrays):
            out[i, : a.shape[0]] = torch.from_numpy(np.ascontiguousarray(a))
        return out, lengths

    audio_a, lengths_a = pad_audio([s.audio_a for s in samples])
    audio_b, lengths_b = pad_audio([s.audio_b for s in samples])
    target_cross, cross_frames = pad_curves([s.target_cross for s in samples])
    target_self, self_frames = pad_curves([s.target_self for s in samples])
    phones = None
    if samples[0].phones_self is not None:
        phones = torch.full(target_self.shape[:2], IGNORE_LABEL, dtype=torch.long)  # (B, T)
        for i, s in enumerate(samples):
            phones[i, : s.phones_self.shape[0]] = torch.from_numpy(s.phones_self)
    track = track_lengths = None
    if samples[0].track_a is not None:
        track_lengths = torch.tensor([s.track_a.shape[0] for s in samples])
        track = torch.full((len(samples), int(track_lengths.max())), NO_PHONE,
                           dtype=torch.long)  # (B, T_a)
        for i, s in enumerate(samples):
            track[i, : s.track_a.shape[0]] = torch.from_numpy(s.track_a)
    return {
        "audio_a": audio_a, "lengths_a": lengths_a, "audio_b": audio_b, "lengths_b": lengths_b,
        "target_cross": target_cross, "cross_frames": cross_frames,
        "target_self": target_self, "self_frames": self_frames,
        "level": torch.tensor([s.level for s in samples]),  # (B,)
        "person": torch.tensor([s.person for s in samples]),  # (B,)
        "emotion": torch.tensor([s.emotion for s in samples]),  # (B,)
        "is_cross": torch.tensor([s.is_cross for s in samples]),  # (B,)
        "phones_self": phones,  # (B, T_s) phone classes, or None without a phone head
        "track_a": track,  # (B, T_a) A's phone track, or None without a phone input
        "track_lengths_a": track_lengths,  # (B,)
        "clip_ids": [s.clip_id for s in samples],
        "epoch": samples[0].epoch, "position": samples[0].position,
        "skipped": [k for s in samples for k in s.skipped],
    }  # fmt: skip


# -- batching -------------------------------------------------------------------------------------
class BucketBatches:
    """Length-bucketed batches, deterministic per (seed, epoch), sharded across DDP ranks.

    An epoch: shuffle all clips, cut into buckets of `batch_size * bucket_batches`, sort each
    bucket by length and cut it into batches (so a batch pads little), shuffle the batch order.
    Every rank computes the same list and takes every world-th batch; the list is cut to a
    multiple of the world size so all ranks run the same number of steps.
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, bucket_batches: int,
                 seed: int, rank: int = 0, world: int = 1, keys: Sequence[int] | None = None):
        self.lengths = np.asarray(lengths, dtype=np.float64)
        # The dataset key of each item (PairDataset.epoch_items); items are keys by default.
        self.keys = list(keys) if keys is not None else list(range(len(lengths)))
        if len(self.keys) != len(self.lengths):
            raise ValueError("keys and lengths must have the same length")
        self.batch_size = batch_size
        self.bucket = batch_size * bucket_batches
        self.seed = seed
        self.rank = rank
        self.world = world
        if self.batches_per_epoch() == 0:
            raise DataError(f"{len(lengths)} training clips make {self._global_count()} batches "
                            f"of {batch_size}, fewer than the {world} processes",
                            "lower data.batch_size or use fewer processes")

    def _global_count(self) -> int:
        n = len(self.lengths)
        full, rest = divmod(n, self.bucket)
        return full * math.ceil(self.bucket / self.batch_size) + math.ceil(rest / self.batch_size)

    def batches_per_epoch(self) -> int:
        return self._global_count() // self.world

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches (clip indices) of `epoch`."""
        rng = np.random.default_rng([self.seed, epoch, 7])
        order = rng.permutation(len(self.lengths))
        batches: list[list[int]] = []
        for first in range(0, order.size, self.bucket):
            bucket = order[first: first + self.bucket]
            bucket = bucket[np.argsort(-self.lengths[bucket], kind="stable")]
            batches += [bucket[i: i + self.batch_size].tolist()
                        for i in range(0, bucket.size, self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        per_rank = len(batches) // self.world
        return batches[self.rank::self.world][:per_rank]

    def iterate(self, epoch: int, position: int) -> Iterator[list[tuple[int, int, int]]]:
        """Keys (epoch, position, index) of every batch from (epoch, position) on, forever."""
        while True:
            batches = self.epoch_batches(epoch)
            for pos in range(position, len(batches)):
                yield [(epoch, pos, self.keys[i]) for i in batches[pos]]
            epoch, position = epoch + 1, 0


class _KeyBatches:
    """A re-iterable batch sampler over BucketBatches.iterate (DataLoader wants an iterable)."""

    def __init__(self, batches: BucketBatches, epoch: int, position: int):
        self.batches, self.epoch, self.position = batches, epoch, position

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return self.batches.iterate(self.epoch, self.position)


def validation_batches(dataset: PairDataset, batch_size: int, rank: int = 0, world: int = 1
                       ) -> list[list[tuple[int, int, int]]]:
    """Fixed validation batches sorted by length, this rank's share."""
    order = np.argsort(-np.asarray(dataset.lengths()), kind="stable")
    batches = [[(0, 0, int(i)) for i in order[k: k + batch_size]]
               for k in range(0, order.size, batch_size)]
    return batches[rank::world]


def _quiet_worker(_: int) -> None:
    """Loader workers leave Ctrl-C and SIGTERM to the trainer, which saves a checkpoint first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def train_loader(dataset: PairDataset, batches: BucketBatches, epoch: int, position: int,
                 num_workers: int) -> torch.utils.data.DataLoader:
    """An endless loader from (epoch, position). Its own generator keeps the global torch RNG
    (dropout) untouched, which exact resume relies on."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=_KeyBatches(batches, epoch, position), collate_fn=collate,
        num_workers=num_workers, worker_init_fn=_quiet_worker if num_workers else None,
        generator=torch.Generator().manual_seed(0), prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
    )  # fmt: skip
