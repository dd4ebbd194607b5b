"""Training data: the 3D-ETF manifest builder, clip validation, cross-reconstruction pairs,
length-bucketed batching and collation.

Everything reads a manifest (`emotalk_core.manifest`), so 3D-ETF, the synthetic corpus and any
other source load through one path.

Bad data never kills a run hours in: every clip is checked before training starts (files exist
and parse, 52 finite channels, audio and curve lengths agree within a tolerance, a sensible
channel count and duration), bad clips are skipped with a message naming the file, and a clip
that still fails when it is loaded mid-run is replaced by the next good one and reported. The
trainer counts skipped clips in its metrics and lists them in `RUN/skipped.json`.

Cross-reconstruction (the paper's disentanglement): for anchor clip A (person p, content c1,
emotion e2), a donor B (person p, content c2 != c1, emotion e1 != e2) and a target T (person p,
content c1, emotion e1, A's intensity). The network must rebuild T from A's content and B's
emotion, and A from A alone. Without such a triple the sample falls back to self-reconstruction
(B = A, T = A).

CLI:
    python -m training.data build-3detf --root 3D-ETF --out data/manifest.jsonl
    python -m training.data check --data data [--config training/configs/compact.toml]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import signal
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from emotalk_core.arkit import CHANNELS, NUM_CHANNELS
from emotalk_core.audio import load_audio, num_frames
from emotalk_core.config import FPS, PRESET_NAMES, SAMPLE_RATE
from emotalk_core.errors import EmoTalkError
from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest
from emotalk_core.phonetics.track import NO_PHONE, source_classes, track_classes

from . import phone_tracks
from .augment import augment, change_speed, stretch_curves, stretch_labels
from .config import AugmentSection, DataSection

IGNORE_LABEL = -100  # cross-entropy's ignore_index: clips without a usable emotion label
FRAME_BLOCK = SAMPLE_RATE * 3 // FPS  # 1600 samples = 3 frames exactly: crop on this grid
# Our category names -> the released classifier's labels, for models that keep those.
LABEL_ALIASES = {"fearful": "fear", "disgusted": "disgust", "surprised": "surprise"}
RAVDESS_STEM = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


class DataError(EmoTalkError):
    """A data problem that stops the run before it starts (no usable clips, an empty split)."""

    code = -32602


class ClipError(Exception):
    """One clip that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Skipped:
    clip_id: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"clip_id": self.clip_id, "reason": self.reason}


@dataclass(frozen=True)
class ClipInfo:
    """A validated clip. `samples` and `frames` are the 16 kHz length (from the header, as soxr
    will produce it) and the 30 fps frame count of the audio."""

    entry: ManifestEntry
    samples: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def clip_id(self) -> str:
        return self.entry.clip_id


# -- 3D-ETF ---------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    entries: list[ManifestEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def parse_ravdess_stem(stem: str) -> dict[str, Any]:
    """`MM-VV-EE-II-SS-RR-AA` -> emotion, intensity, content_id, person. Raises ValueError."""
    match = RAVDESS_STEM.match(stem)
    if not match:
        raise ValueError("name is not a RAVDESS stem MM-VV-EE-II-SS-RR-AA")
    _, vocal, emotion, intensity, statement, repetition, actor = (int(g) for g in match.groups())
    if not 1 <= emotion <= len(PRESET_NAMES):
        raise ValueError(f"emotion code {emotion:02d} is not 01..08")
    if intensity not in (1, 2):
        raise ValueError(f"intensity code {intensity:02d} is not 01 or 02")
    if not 1 <= actor <= 24:
        raise ValueError(f"actor {actor:02d} is not 01..24")
    kind = "song" if vocal == 2 else "speech"
    return {
        "emotion": PRESET_NAMES[emotion - 1],
        "intensity": intensity - 1,
        "content_id": f"ravdess-{kind}-s{statement:02d}-r{repetition:02d}",
        "person": actor - 1,
        "statement": statement,
        "actor": actor,
    }


def hdtf_speaker(stem: str) -> str:
    """HDTF stems are `<speaker>_<number>` (e.g. WDA_BarackObama_000): the speaker part."""
    return re.sub(r"_\d+$", "", stem)


def _paired_files(folder: Path, report: BuildReport, prefix: str) -> list[tuple[str, Path, Path]]:
    """(stem, wav, npy) for stems with both files; the others reported."""
    wavs = {p.stem: p for p in sorted((folder / "audio").glob("*.wav"))}
    npys = {p.stem: p for p in sorted((folder / "blendshape").glob("*.npy"))}
    for stem in sorted(set(wavs) - set(npys)):
        report.skipped.append(Skipped(f"{prefix}-{stem}",
                                      f"{wavs[stem]} has no blendshape/{stem}.npy"))
    for stem in sorted(set(npys) - set(wavs)):
        report.skipped.append(Skipped(f"{prefix}-{stem}", f"{npys[stem]} has no audio/{stem}.wav"))
    return [(s, wavs[s], npys[s]) for s in sorted(set(wavs) & set(npys))]


def build_3detf(
    root: str | Path,
    val_actors: Sequence[int] = (23, 24),
    test_actors: Sequence[int] = (21, 22),
    hdtf_val_fraction: float = 0.05,
    hdtf_test_fraction: float = 0.05,
    hdtf_emotion: str | None = None,
) -> BuildReport:
    """Manifest entries for a 3D-ETF folder (`<root>/{RAVDESS,HDTF}/{audio,blendshape}`).

    RAVDESS splits hold out *statement 02* of the val/test actors: their statement-01 clips stay
    in training, so their person embedding is trained and held-out clips still find emotion
    donors for cross pairs. HDTF clips (one speaker each, no emotion labels) go to val/test by a
    hash of the name, so the split never changes when files are added. HDTF speakers get person
    ids 0..23 round-robin in sorted order (HDTF has hundreds of speakers; the style embedding has
    24 slots, shared with RAVDESS actors). Their emotion is `hdtf_emotion` (default null: HDTF is
    not acted emotion, and labelling hours of it "neutral" would swamp the classifier's classes
    and the neutral preset).
    """
    root = Path(root)
    if not (root / "RAVDESS").is_dir() and not (root / "HDTF").is_dir():
        raise DataError(f"{root} holds neither RAVDESS/ nor HDTF/",
                        "pass --root the 3D-ETF folder (with RAVDESS/audio, RAVDESS/blendshape)")
    report = BuildReport()
    if (root / "RAVDESS").is_dir():
        for stem, wav, npy in _paired_files(root / "RAVDESS", report, "ravdess"):
            try:
                info = parse_ravdess_stem(stem)
            except ValueError as exc:
                report.skipped.append(Skipped(f"ravdess-{stem}", f"{wav}: {exc}"))
                continue
            split = "train"
            if info["statement"] == 2 and info["actor"] in val_actors:
                split = "val"
            elif info["statement"] == 2 and info["actor"] in test_actors:
                split = "test"
            report.entries.append(ManifestEntry(
                clip_id=f"ravdess-{stem}", audio=wav, blendshapes=npy, split=split,
                emotion=info["emotion"], intensity=info["intensity"], person=info["person"],
                content_id=info["content_id"],
            ))  # fmt: skip
    if (root / "HDTF").is_dir():
        files = _paired_files(root / "HDTF", report, "hdtf")
        speakers = sorted({hdtf_speaker(stem) for stem, _, _ in files})
        person = {name: i % 24 for i, name in enumerate(speakers)}
        for stem, wav, npy in files:
            u = int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) / 2**32
            split = ("val" if u < hdtf_val_fraction
                     else "test" if u < hdtf_val_fraction + hdtf_test_fraction else "train")
            report.entries.append(ManifestEntry(
                clip_id=f"hdtf-{stem}", audio=wav, blendshapes=npy, split=split,
                emotion=hdtf_emotion, intensity=0, person=person[hdtf_speaker(stem)],
            ))  # fmt: skip
    return report


# -- validation -----------------------------------------------------------------------------------
def inspect_clip(entry: ManifestEntry, cfg: DataSection) -> ClipInfo:
    """Check one clip's files without decoding the audio; ClipError names the file."""
    if entry.blendshapes is None:
        raise ClipError(f"{entry.clip_id}: the manifest gives no blendshapes file")
    samples = _audio_header_samples(Path(entry.audio), cfg)
    seconds = samples / SAMPLE_RATE
    if seconds < cfg.min_seconds:
        raise ClipError(f"{entry.audio} is {seconds:.3f} s long, shorter than data.min_seconds "
                        f"= {cfg.min_seconds}")
    frames = num_frames(samples)
    curves = read_curves(Path(entry.blendshapes))
    if abs(curves.shape[0] - frames) > cfg.length_tolerance_frames:
        raise ClipError(f"{entry.blendshapes} has {curves.shape[0]} frames but its audio "
                        f"{entry.audio} lasts {seconds:.3f} s = {frames} frames at {FPS} fps "
                        f"(tolerance {cfg.length_tolerance_frames})")
    return ClipInfo(entry, samples, frames)


def _audio_header_samples(path: Path, cfg: DataSection) -> int:
    if not path.is_file():
        raise ClipError(f"audio file {path} is missing")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile reports bad headers as several exception types
        raise ClipError(f"audio file {path} is corrupt or not audio: "
                        f"{' '.join(str(exc).split())}") from exc
    if info.samplerate <= 0 or info.frames <= 0:
        raise ClipError(f"audio file {path} holds no samples")
    if info.channels > cfg.max_audio_channels:
        raise ClipError(f"audio file {path} has {info.channels} channels; expected mono speech "
                        f"(at most data.max_audio_channels = {cfg.max_audio_channels})")
    return round(info.frames * SAMPLE_RATE / info.samplerate)  # soxr's output length


def read_curves(path: Path) -> np.ndarray:
    """A (T, 52) finite float blendshape array; ClipError names the file and the problem."""
    if not path.is_file():
        raise ClipError(f"blendshape file {path} is missing")
    try:
        curves = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... for damaged files
        raise ClipError(f"blendshape file {path} is corrupt: {' '.join(str(exc).split())}") from exc
    if not isinstance(curves, np.ndarray) or curves.dtype.kind not in "fiu":
        raise ClipError(f"blendshape file {path} does not hold numbers")
    if curves.ndim != 2 or curves.shape[1] != NUM_CHANNELS:
        detail = (f"{curves.shape[1]} channels" if curves.ndim == 2
                  else f"shape {curves.shape}")
        raise ClipError(f"blendshape file {path} has {detail}; expected (frames, "
                        f"{NUM_CHANNELS}) in EmoTalk's channel order")
    if curves.shape[0] == 0:
        raise ClipError(f"blendshape file {path} has no frames")
    bad = ~np.isfinite(curves)
    if bad.any():
        frame, channel = (int(v) for v in np.argwhere(bad)[0])
        raise ClipError(f"blendshape file {path} has {int(bad.sum())} NaN/infinite values "
                        f"(first at frame {frame}, channel {CHANNELS[channel]})")
    return curves.astype(np.float32)


def fit_curves(curves: np.ndarray, frames: int, tolerance: int, label: str) -> np.ndarray:
    """(T, 52) trimmed, or padded by repeating the last frame, to `frames` when within
    `tolerance` (annotation tools disagree by a frame or two on where a clip ends)."""
    diff = curves.shape[0] - frames
    if abs(diff) > tolerance:
        raise ClipError(f"{label}: {curves.shape[0]} curve frames for {frames} audio frames "
                        f"(tolerance {tolerance})")
    if diff > 0:
        return curves[:frames]
    if diff < 0:
        return np.concatenate([curves, np.repeat(curves[-1:], -diff, axis=0)])
    return curves


def read_phone_file(path: Path) -> list[tuple[str, float, float]]:
    """[[phone, start, end], ...] or [{"phone", "start", "end"}, ...], optionally under a
    "phones" key. Raises ValueError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from exc
    if isinstance(data, dict):
        data = data.get("phones")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of [phone, start_s, end_s]")
    out = []
    for item in data:
        if isinstance(item, dict):
            item = [item.get("phone"), item.get("start"), item.get("end")]
        if (not isinstance(item, list | tuple) or len(item) != 3 or not isinstance(item[0], str)
                or not all(isinstance(v, int | float) for v in item[1:])):
            raise ValueError(f"{path}: bad phone entry {item!r}")
        out.append((item[0], float(item[1]), float(item[2])))
    return out


def phone_label_frames(phones: Sequence[tuple[str, float, float]], frames: int,
                       labels: Sequence[str]) -> np.ndarray:
    """(frames,) int64 class index of the phone owning each frame (DESIGN.md section 8's rule;
    stress digits ignored); IGNORE_LABEL where no phone, or one outside `labels`, owns it."""
    return track_classes(phones, frames, labels, missing=IGNORE_LABEL)


def validate_entries(entries: Sequence[ManifestEntry], cfg: DataSection
                     ) -> tuple[list[ClipInfo], list[Skipped]]:
    """Every entry checked; the good ones and the reasons for the others."""
    good: list[ClipInfo] = []
    skipped: list[Skipped] = []
    for entry in entries:
        try:
            good.append(inspect_clip(entry, cfg))
        except ClipError as exc:
            skipped.append(Skipped(entry.clip_id, str(exc)))
    return good, skipped


def load_split_clips(manifest: Path, cfg: DataSection, splits: Sequence[str]
                     ) -> tuple[dict[str, list[ClipInfo]], list[Skipped]]:
    """Validated clips of each split of `manifest`. An empty split is an error that says how
    many clips it had before validation."""
    entries = read_manifest(manifest)
    out: dict[str, list[ClipInfo]] = {}
    skipped: list[Skipped] = []
    for split in splits:
        chosen = [e for e in entries if e.split == split]
        good, bad = validate_entries(chosen, cfg)
        skipped += bad
        if not good:
            why = (f"none of its {len(chosen)} clips passed validation (first problem: "
                   f"{bad[0].reason})" if chosen else "the manifest has no clip in it")
            raise DataError(f"{manifest}: split {split!r} is empty: {why}",
                            "fix the files, or give clips that split in the manifest")
        out[split] = good
    return out, skipped


def label_index(emotion: str | None, labels: Sequence[str]) -> int:
    """Index of `emotion` among the model's classifier labels, or IGNORE_LABEL."""
    if emotion is None:
        return IGNORE_LABEL
    for name in (emotion, LABEL_ALIASES.get(emotion)):
        if name in labels:
            return list(labels).index(name)
    return IGNORE_LABEL


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


def subsample(clips: Sequence[ClipInfo], limit: int) -> list[ClipInfo]:
    """At most `limit` clips spread evenly over the list (0: all); deterministic."""
    if limit <= 0 or len(clips) <= limit:
        return list(clips)
    picks = np.linspace(0, len(clips) - 1, limit).round().astype(int)
    return [clips[i] for i in picks]


# -- CLI ------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-3detf", help="write a manifest for a 3D-ETF folder")
    b.add_argument("--root", required=True, help="3D-ETF folder holding RAVDESS/ and HDTF/")
    b.add_argument("--out", required=True, help="manifest.jsonl to write")
    b.add_argument("--val-actors", type=_int_list, default=[23, 24],
                   help="RAVDESS actors whose statement 02 is validation (default 23,24)")
    b.add_argument("--test-actors", type=_int_list, default=[21, 22],
                   help="RAVDESS actors whose statement 02 is test (default 21,22)")
    b.add_argument("--hdtf-val-fraction", type=float, default=0.05)
    b.add_argument("--hdtf-test-fraction", type=float, default=0.05)
    b.add_argument("--hdtf-emotion", choices=PRESET_NAMES, default=None,
                   help="emotion label for HDTF clips (default: none)")
    b.add_argument("--check", action="store_true", help="also validate every clip's files")
    c = sub.add_parser("check", help="validate every clip of a manifest")
    c.add_argument("--data", required=True, help="folder holding manifest.jsonl")
    c.add_argument("--config", default=None, help="training config (for data settings)")
    m = sub.add_parser("merge", help="combine manifests (e.g. synthetic + real speech)")
    m.add_argument("--out", required=True, help="manifest.jsonl to write")
    m.add_argument("sources", nargs="+", metavar="MANIFEST[:SPLIT,...]",
                   help="a manifest, optionally with the splits to take from it "
                   "(data/real_speech/manifest.jsonl:train keeps its held-out clips out)")
    p = sub.add_parser("phone-loop", help="decode and cache every clip's phone-loop track "
                       "(models with a phone input; training makes missing ones itself)")
    p.add_argument("--manifest", required=True, help="manifest.jsonl (the cache goes beside it)")
    p.add_argument("--jobs", type=int, default=2, help="decoding processes (default 2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build-3detf":
            return _cmd_build(args)
        if args.command == "merge":
            return _cmd_merge(args)
        if args.command == "phone-loop":
            return _cmd_phone_loop(args)
        return _cmd_check(args)
    except EmoTalkError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.detail != exc.message:
            print(f"  {exc.detail}", file=sys.stderr)
        return 2


def merge_manifests(sources: Sequence[str]) -> list[ManifestEntry]:
    """Entries of several manifests; `PATH:train,val` keeps only those splits of PATH. Clip ids
    must stay unique across sources."""
    entries: list[ManifestEntry] = []
    origin: dict[str, str] = {}
    for source in sources:
        path, _, splits = source.partition(":")
        keep = {s for s in splits.split(",") if s} or None
        for entry in read_manifest(path):
            if keep is not None and entry.split not in keep:
                continue
            if entry.clip_id in origin:
                raise DataError(f"clip id {entry.clip_id!r} is in both {origin[entry.clip_id]} "
                                f"and {path}; clip ids must be unique across merged manifests")
            origin[entry.clip_id] = path
            entries.append(entry)
    if not entries:
        raise DataError("the merged manifest would be empty; check the paths and splits")
    return entries


def _cmd_merge(args: argparse.Namespace) -> int:
    entries = merge_manifests(args.sources)
    write_manifest(args.out, entries)
    counts: dict[str, int] = defaultdict(int)
    for e in entries:
        counts[e.split] += 1
    print(f"wrote {args.out}: {len(entries)} clips ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
    return 0


def _cmd_phone_loop(args: argparse.Namespace) -> int:
    manifest = Path(args.manifest)
    problems = phone_tracks.build(manifest, read_manifest(manifest), args.jobs)
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    print(f"phone-loop tracks in {phone_tracks.cache_dir(manifest)} "
          f"({len(problems)} clips could not be decoded)")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    report = build_3detf(args.root, args.val_actors, args.test_actors, args.hdtf_val_fraction,
                         args.hdtf_test_fraction, args.hdtf_emotion)
    skipped = list(report.skipped)
    entries = report.entries
    if args.check:
        good, bad = validate_entries(entries, DataSection())
        keep = {c.clip_id for c in good}
        entries = [e for e in entries if e.clip_id in keep]
        skipped += bad
    if not entries:
        raise DataError(f"no usable clip found under {args.root}")
    write_manifest(args.out, entries)
    counts = defaultdict(int)
    for e in entries:
        counts[e.split] += 1
    print(f"wrote {args.out}: {len(entries)} clips ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
    _print_skipped(skipped)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config).data if args.config else DataSection()
    manifest = Path(args.data) / cfg.manifest
    entries = read_manifest(manifest)
    good, bad = validate_entries(entries, cfg)
    seconds = sum(c.seconds for c in good)
    print(f"{manifest}: {len(good)} of {len(entries)} clips usable ({seconds / 3600:.2f} h)")
    for split in sorted({e.split for e in entries}):
        clips = [c for c in good if c.entry.split == split]
        print(f"  {split}: {len(clips)} clips, {sum(c.seconds for c in clips) / 60:.1f} min")
    _print_skipped(bad)
    return 1 if bad else 0


def _print_skipped(skipped: Sequence[Skipped]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} clip(s):")
        for s in skipped:
            print(f"  {s.clip_id}: {s.reason}")


if __name__ == "__main__":
    sys.exit(main())
