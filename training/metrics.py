"""Evaluation metrics (DESIGN.md section 8), numpy only.

- LVE (lip vertex error): per frame, the largest L2 distance over the lip-region vertices of a
  head mesh (emotalk_core.head.HeadMesh, read by load_head) driven by the predicted vs the true
  coefficients; mean over frames; mm on a real-size head. EVE: the same over eye and brow
  vertices.
- The same in coefficient space (no mesh needed): per frame, the largest absolute coefficient
  error over the lip channel group (`mouth*`, `jaw*`) or the eye channel group (`eye*`, `brow*`);
  mean over frames. Unit: blendshape weight (0..1).
- Lip-closure AUC: with a phone per 30 fps frame, the probability that mouth aperture at an
  open-vowel frame (AA AE AH AO AW AY) exceeds aperture at a bilabial frame (P B M); ties count
  half. aperture = jawOpen - mouthClose + 0.5 mean(mouthLowerDown L/R) + 0.25 mean(mouthUpperUp
  L/R). The audio-energy baseline scores log RMS per frame on the same frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from emotalk_core.arkit import CHANNELS, NUM_CHANNELS
from emotalk_core.arkit import aperture as aperture  # the metrics' mouth opening, re-exported
from emotalk_core.config import FPS, SAMPLE_RATE
from emotalk_core.errors import EmoTalkError
from emotalk_core.head import HeadFileError, HeadMesh, load_npz
from emotalk_core.phonetics.track import base_phone, frame_phones
from emotalk_core.protocol import INVALID_PARAMS

LIP_CHANNELS: tuple[int, ...] = tuple(
    i for i, n in enumerate(CHANNELS) if n.startswith(("mouth", "jaw"))
)
EYE_CHANNELS: tuple[int, ...] = tuple(
    i for i, n in enumerate(CHANNELS) if n.startswith(("eye", "brow"))
)
# The metric's phone classes (DESIGN.md section 8), ARPAbet without stress digits.
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY"})
BILABIALS = frozenset({"P", "B", "M"})


class HeadError(EmoTalkError):
    """A head-mesh file that cannot be used for mm metrics."""

    code = INVALID_PARAMS


# -- coefficient space ----------------------------------------------------------------------------
def max_channel_error(pred: np.ndarray, true: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """pred, true (T, 52) -> (T,) largest absolute error over `channels` per frame."""
    _check_pair(pred, true)
    idx = list(channels)
    return np.abs(pred[:, idx] - true[:, idx]).max(axis=1)


def coefficient_lve(pred: np.ndarray, true: np.ndarray) -> float:
    return float(max_channel_error(pred, true, LIP_CHANNELS).mean())


def coefficient_eve(pred: np.ndarray, true: np.ndarray) -> float:
    return float(max_channel_error(pred, true, EYE_CHANNELS).mean())


def _check_pair(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != NUM_CHANNELS:
        raise ValueError(f"expected two (T, {NUM_CHANNELS}) arrays, got {pred.shape} and "
                         f"{true.shape}")


# -- mesh space -----------------------------------------------------------------------------------
def load_head(path: str | os.PathLike) -> HeadMesh:
    """The head mesh for mm metrics (head.load_npz); every problem is a HeadError naming the
    file."""
    try:
        return load_npz(path)
    except HeadFileError as exc:
        raise HeadError(str(exc), exc.hint) from exc


def max_vertex_error(head: HeadMesh, pred: np.ndarray, true: np.ndarray, region: np.ndarray
                     ) -> np.ndarray:
    """(T,) largest vertex distance over `region` per frame between the head driven by `pred`
    and by `true`. Linear in the coefficients, so the meshes' difference is the coefficient
    difference through the region's deltas."""
    _check_pair(pred, true)
    deltas = head.deltas[:, region].astype(np.float64)  # a float32 head is measured in float64
    diff = np.einsum("tk,kvc->tvc", pred - true, deltas)  # (T, R, 3)
    return np.sqrt(np.square(diff).sum(axis=2)).max(axis=1)


def mesh_lve(head: HeadMesh, pred: np.ndarray, true: np.ndarray) -> float:
    return float(max_vertex_error(head, pred, true, head.lip_vertices).mean())


def mesh_eve(head: HeadMesh, pred: np.ndarray, true: np.ndarray) -> float:
    return float(max_vertex_error(head, pred, true, head.eye_vertices).mean())


# -- lip closure ----------------------------------------------------------------------------------
def frame_log_rms(audio: np.ndarray, frames: int) -> np.ndarray:
    """audio (S,) 16 kHz -> (frames,) log RMS of each 30 fps frame's samples (the energy
    baseline); frames past the audio's end get the floor value."""
    out = np.full(frames, math.log(1e-8))
    edges = np.round(np.arange(frames + 1) * SAMPLE_RATE / FPS).astype(np.int64)
    for i in range(frames):
        chunk = audio[edges[i]: edges[i + 1]].astype(np.float64)
        if chunk.size:
            out[i] = math.log(math.sqrt(float(np.mean(chunk * chunk))) + 1e-8)
    return out


def phone_class(phone: str | None) -> str | None:
    """"vowel", "bilabial" or None for an ARPAbet phone (stress digits ignored)."""
    if not phone:
        return None
    base = base_phone(phone)
    if base in OPEN_VOWELS:
        return "vowel"
    if base in BILABIALS:
        return "bilabial"
    return None


def closure_frames(frame_phones: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of open-vowel frames and of bilabial frames."""
    classes = [phone_class(p) for p in frame_phones]
    vowels = np.array([i for i, c in enumerate(classes) if c == "vowel"], dtype=np.int64)
    bilabials = np.array([i for i, c in enumerate(classes) if c == "bilabial"], dtype=np.int64)
    return vowels, bilabials


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(positive score > negative score) + 0.5 P(equal): Mann-Whitney U / (n_pos n_neg) with
    average ranks for ties. NaN when either side is empty."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


@dataclass
class ClosureScores:
    """Scores pooled over clips: for each scorer (model, baseline, ...) the values at open-vowel
    and at bilabial frames."""

    vowel: dict[str, list[np.ndarray]]
    bilabial: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls) -> ClosureScores:
        return cls({}, {})

    def add(self, frame_phones: Sequence[str | None], scores: dict[str, np.ndarray]) -> None:
        vowels, bilabials = closure_frames(frame_phones)
        for name, values in scores.items():
            self.vowel.setdefault(name, []).append(values[vowels])
            self.bilabial.setdefault(name, []).append(values[bilabials])

    def extend(self, other: ClosureScores) -> None:
        """Pool another set of clips' scores into this one."""
        for name in other.vowel:
            self.vowel.setdefault(name, []).extend(other.vowel[name])
            self.bilabial.setdefault(name, []).extend(other.bilabial[name])

    def counts(self) -> tuple[int, int]:
        first = next(iter(self.vowel), None)
        if first is None:
            return 0, 0
        return (sum(a.size for a in self.vowel[first]),
                sum(a.size for a in self.bilabial[first]))

    def auc(self, name: str) -> float:
        if name not in self.vowel:
            return float("nan")
        return auc(np.concatenate(self.vowel[name]), np.concatenate(self.bilabial[name]))


# -- committed articulation -------------------------------------------------------------------
# A bilabial phone is closed when the aperture's smallest value over its frames is below this;
# an open vowel is open when its largest value reaches OPEN_APERTURE (DESIGN.md section 8).
CLOSED_APERTURE = 0.05
OPEN_APERTURE = 0.15


# Phones where shut lips are no error: bilabials, the labiodentals (lower lip on the teeth)
# and pauses.
NOT_FALSE_CLOSURES = frozenset(BILABIALS) | {"F", "V", "SIL", "SP", "SPN", ""}


def phone_extremes(phones: Sequence[tuple[str, float, float]], opening: np.ndarray,
                   fps: float = FPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(smallest aperture over each bilabial phone's frames, largest over each open vowel's,
    smallest over each other speech phone's (not NOT_FALSE_CLOSURES)): a phone owns the frames
    whose centres it covers; phones owning no frame are left out."""
    closes, opens, others = [], [], []
    for phone, start, end in phones:
        cls = phone_class(phone)
        if cls is None and (not phone or base_phone(phone) in NOT_FALSE_CLOSURES):
            continue
        first = max(0, math.ceil(start * fps - 0.5))
        last = min(opening.shape[0], math.ceil(end * fps - 0.5))
        if last <= first:
            continue
        span = opening[first:last]
        if cls == "vowel":
            opens.append(float(span.max()))
        else:
            (closes if cls == "bilabial" else others).append(float(span.min()))
    return np.array(closes), np.array(opens), np.array(others)


@dataclass
class LipSyncScores:
    """Closure AUC (frames) with closure and open rates (phones), pooled over clips, for
    each scorer."""

    frames: ClosureScores
    closes: dict[str, list[np.ndarray]]
    opens: dict[str, list[np.ndarray]]
    others: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls) -> LipSyncScores:
        return cls(ClosureScores.empty(), {}, {}, {})

    def add(self, phones: Sequence[tuple[str, float, float]], scores: dict[str, np.ndarray],
            rates: Sequence[str] | None = None) -> None:
        """`scores`: per scorer a (T,) opening; `rates`: the scorers whose values are
        apertures (closure and open rates make sense only for those; default all)."""
        first = next(iter(scores.values()))
        self.frames.add(frame_phones(phones, first.shape[0]), scores)
        for name in (scores if rates is None else rates):
            closes, opens, others = phone_extremes(phones, scores[name])
            self.closes.setdefault(name, []).append(closes)
            self.opens.setdefault(name, []).append(opens)
            self.others.setdefault(name, []).append(others)

    def report(self, name: str) -> dict[str, float | int | None]:
        vowels, bilabials = self.frames.counts()
        out: dict[str, float | int | None] = {"auc": self.frames.auc(name),
                                              "bilabial_frames": bilabials,
                                              "open_vowel_frames": vowels}
        if name in self.closes:
            closes, opens = np.concatenate(self.closes[name]), np.concatenate(self.opens[name])
            others = np.concatenate(self.others[name])
            out.update({
                "closure_rate": float((closes < CLOSED_APERTURE).mean()) if closes.size else None,
                "open_rate": float((opens >= OPEN_APERTURE).mean()) if opens.size else None,
                # Lips shut where they should not be: the price of closing more often.
                "false_closure_rate": (float((others < CLOSED_APERTURE).mean())
                                       if others.size else None),
                "bilabial_phones": int(closes.size), "open_vowel_phones": int(opens.size),
                "other_phones": int(others.size)})
        return out
