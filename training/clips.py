"""Training clips: what every source's manifest entries must hold before training uses them.

Bad data never kills a run hours in: every clip is checked before training starts (files exist
and parse, 52 finite channels, audio and curve lengths agree within a tolerance, a sensible
channel count and duration), bad clips are skipped with a message naming the file, and a clip
that still fails when it is loaded mid-run (`training.dataset`) is replaced by the next good one
and reported. The trainer counts skipped clips in its metrics and lists them in
`RUN/skipped.json`.

Also the readers of a clip's files (curves, phone files) and its labels (emotion class, per-frame
phone classes), shared by training, evaluation and the lip-sync measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emotalk_core.arkit import CHANNELS, NUM_CHANNELS
from emotalk_core.audio import num_frames
from emotalk_core.config import FPS, SAMPLE_RATE
from emotalk_core.errors import EmoTalkError
from emotalk_core.manifest import ManifestEntry, read_manifest
from emotalk_core.phonetics.track import track_classes
from emotalk_core.protocol import INVALID_PARAMS

from .config import DataSection

IGNORE_LABEL = -100  # cross-entropy's ignore_index: clips without a usable emotion label
# Our category names -> the released classifier's labels, for models that keep those.
LABEL_ALIASES = {"fearful": "fear", "disgusted": "disgust", "surprised": "surprise"}


class DataError(EmoTalkError):
    """A data problem that stops the run before it starts (no usable clips, an empty split)."""

    code = INVALID_PARAMS


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


def subsample(clips: Sequence[ClipInfo], limit: int) -> list[ClipInfo]:
    """At most `limit` clips spread evenly over the list (0: all); deterministic."""
    if limit <= 0 or len(clips) <= limit:
        return list(clips)
    picks = np.linspace(0, len(clips) - 1, limit).round().astype(int)
    return [clips[i] for i in picks]

