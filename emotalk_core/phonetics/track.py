"""Phones with times -> the per-frame phone track that compact models read beside the audio.

A phone owns the 30 fps frames whose centres it covers (DESIGN.md section 8, the same rule as
the lip-closure metric). The track is a (T,) array of class indices into
`emotalk_core.config.PHONE_LABELS`, NO_PHONE where no phone owns a frame; the network embeds
it (one-hot) beside its log-mel features. Phones from a forced alignment are shifted by
ALIGNED_OFFSET: an aligned "M" is near certain, a phone loop's "M" often wrong, and the network
must know which of the two it reads to trust it accordingly. Phones of recognised words (no
transcript, `recognize.recognize`) are aligned phones too: Whisper gets most words right, and
on held-out voices its words score nearly as a transcript does. Stretches it could not
recognise are read by the phone loop (`PhoneTrack.loop_spans`) and read as loop phones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import FPS, PHONE_LABELS
from ..errors import Cancelled, EmoTalkError
from .phonemes import BILABIALS

NO_PHONE = -1
ALIGNED_OFFSET = len(PHONE_LABELS)
TRACK_CLASSES = 2 * len(PHONE_LABELS)  # loop phones, then aligned phones
_INDEX = {label: i for i, label in enumerate(PHONE_LABELS)}

Phones = list[tuple[str, float, float]]
SOURCES = ("alignment", "recognition", "loop")


def base_phone(phone: str) -> str:
    """An ARPAbet phone without surrounding space, in upper case, without its stress digit."""
    return phone.strip().upper().rstrip("012")


def frame_phones(phones: Sequence[tuple[str, float, float]], num_frames: int,
                 fps: float = FPS) -> list[str | None]:
    """The phone owning each frame: the one whose interval covers the frame's centre
    ((k + 0.5) / fps). Frames no phone covers are None ("SIL" phones stay "SIL")."""
    out: list[str | None] = [None] * num_frames
    for phone, start, end in phones:
        first = max(0, math.ceil(start * fps - 0.5))
        last = min(num_frames, math.ceil(end * fps - 0.5))
        for i in range(first, last):
            out[i] = phone
    return out


def track_classes(phones: Sequence[tuple[str, float, float]], num_frames: int,
                  labels: Sequence[str] = PHONE_LABELS, missing: int = NO_PHONE) -> np.ndarray:
    """(num_frames,) int64 index into `labels` of the phone owning each frame (stress digits
    ignored); `missing` where no phone, or one outside `labels`, owns it."""
    index = _INDEX if tuple(labels) == PHONE_LABELS else {p: i for i, p in enumerate(labels)}
    owners = frame_phones(phones, num_frames)
    return np.array([missing if p is None else index.get(base_phone(p), missing)
                     for p in owners], dtype=np.int64)


@dataclass
class PhoneTrack:
    """Phones of a clip, where they came from ("alignment" of a transcript, "recognition" of
    the words, or the phone "loop"), the spans (seconds) within it that the phone loop read
    instead (where words were not recognised), and any warning a user should see (a transcript
    that did not align)."""

    phones: Phones
    source: str
    warnings: list[str] = field(default_factory=list)
    loop_spans: list[tuple[float, float]] = field(default_factory=list)

    def classes(self, num_frames: int) -> np.ndarray:
        """(num_frames,) the network's track classes (aligned and recognised phones shifted
        by ALIGNED_OFFSET, except within loop_spans)."""
        classes = track_classes(self.phones, num_frames)
        return np.where(self.looped(num_frames), classes, source_classes(classes, self.source))

    def looped(self, num_frames: int) -> np.ndarray:
        """(num_frames,) bool: frames whose phones the phone loop decoded."""
        if self.source == "loop":
            return np.ones(num_frames, dtype=bool)
        centres = (np.arange(num_frames) + 0.5) / FPS
        out = np.zeros(num_frames, dtype=bool)
        for start, end in self.loop_spans:
            out |= (centres >= start) & (centres < end)
        return out


def aligned_closures(track: PhoneTrack, num_frames: int) -> np.ndarray:
    """(num_frames,) 1.0 on the frames where the lips must meet, else 0.0: those an aligned or
    recognised bilabial owns. None where the phone loop decoded the phones: the loop's
    bilabials are too often wrong to act on without the network's judgement (which the contact
    output already is)."""
    out = np.zeros(num_frames, dtype=np.float32)
    owners = frame_phones(track.phones, num_frames)
    out[[i for i, p in enumerate(owners) if p and base_phone(p) in BILABIALS]] = 1.0
    out[track.looped(num_frames)] = 0.0
    return out


def source_classes(classes: np.ndarray, source: str) -> np.ndarray:
    """PHONE_LABELS classes -> the network's track classes for phones from `source` (one of
    SOURCES; aligned and recognised phones are read as aligned)."""
    if source not in SOURCES:
        raise ValueError(f"unknown phone source {source!r}")
    if source == "loop":
        return classes
    return np.where(classes >= 0, classes + ALIGNED_OFFSET, classes)


def phone_track(samples: np.ndarray, transcript: str | None = None, *,
                recognize_words: bool = False, language: str = "en-us",
                progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> PhoneTrack:
    """Phones of 16 kHz mono `samples`: forced alignment of `transcript` when given, else (or
    when the alignment fails, with a warning) recognised words if `recognize_words`, else
    phone-loop decoding (also, with a warning, when recognition cannot run)."""
    from . import loop

    warnings: list[str] = []
    if transcript is not None and transcript.strip():
        from .align import AlignmentError, align_phones

        try:
            phones = align_phones(samples, transcript, language=language)
            if progress:
                progress(1, 1)
            return PhoneTrack(phones, "alignment")
        except (AlignmentError, EmoTalkError) as exc:
            warnings.append(f"the transcript could not be aligned to the audio ({_short(exc)}); "
                            "lip sync uses the audio alone for this clip")
    if recognize_words:
        from .recognize import recognize

        try:
            found = recognize(samples, progress=progress, cancel=cancel)
            return PhoneTrack(found.phones, "recognition", warnings + found.warnings,
                              found.loop_spans)
        except Cancelled:
            raise
        except EmoTalkError as exc:
            warnings.append(f"word recognition failed ({_short(exc)}); lip sync uses the "
                            "phone loop for this clip")
    phones = loop.decode(samples, progress=progress, cancel=cancel)
    return PhoneTrack(phones, "loop", warnings)


def _short(exc: Exception, limit: int = 160) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."
