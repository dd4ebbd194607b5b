"""Procedural teacher: timed phones + loudness/pitch -> the 52 ARKit curves at 30 fps.

It labels synthetic speech (espeak phone timings) and real speech (forced-aligned phones)
alike, so its rules only use what both give: ARPAbet phones with times, and the audio.

Layers, all computed on a 100 Hz grid and sampled at the 30 fps frame centres:

1. Articulation. Each phone has a viseme target over mouth groups and two dominances (jaw,
   lips). Targets are blended with Cohen-Massaro style dominance functions that decay with the
   distance to each phone's interval, so a /k/ takes its lip shape from the neighbouring /u/
   while a /p/ imposes its own. Targets scale with stress and loudness.
2. Dynamics: a zero-phase Gaussian low-pass per group (the jaw is slower than the lips),
   which also gives anticipatory coarticulation.
3. Contact constraints: the lips really close on P/B/M (mouthClose above jawOpen, no lower or
   upper lip raise, jaw pulled towards closed) and the lower lip tucks under the teeth on F/V.
   Smoothing alone would leave short bilabials half open.
4. Emotion: a static expression of the 8 categories at two intensities, modulated by slow
   drift and loudness; brows follow pitch accents (raised, or lowered for anger and disgust).
5. Eyes: blinks (a Poisson process, more likely at pauses, rate by person and emotion) and
   small gaze fixations.

Values are clipped to [0, 1]. Everything random comes from the `seed` given, so a clip's curves
are a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from emotalk_core.arkit import INDEX, NUM_CHANNELS
from emotalk_core.phonetics.phonemes import BILABIALS, SIL, TimedPhone

from .features import RATE, Prosody
from .styles import EMOTION_SPECS, Style, intensity_scale

FPS = 30

# Articulation groups. Sided groups expand to their Left/Right channels.
GROUPS: tuple[str, ...] = (
    "jawOpen", "jawForward", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthLowerDown", "mouthUpperUp",
    "mouthStretch", "mouthSmile", "mouthPress", "tongueOut", "cheekPuff",
)  # fmt: skip
G = {name: i for i, name in enumerate(GROUPS)}
JAW_GROUPS = ("jawOpen", "jawForward")
OPENING = ("jawOpen", "mouthLowerDown", "mouthUpperUp")
ROUNDING = ("mouthFunnel", "mouthPucker")
SPREADING = ("mouthStretch", "mouthSmile")
SIDED = frozenset(
    [
        "browDown",
        "browOuterUp",
        "cheekSquint",
        "eyeBlink",
        "eyeLookDown",
        "eyeLookIn",
        "eyeLookOut",
        "eyeLookUp",
        "eyeSquint",
        "eyeWide",
        "mouthDimple",
        "mouthFrown",
        "mouthLowerDown",
        "mouthPress",
        "mouthSmile",
        "mouthStretch",
        "mouthUpperUp",
        "noseSneer",
    ]
)


@dataclass(frozen=True)
class Viseme:
    targets: dict[str, float]
    jaw: float = 1.0  # dominance over jaw groups
    lips: float = 1.0  # dominance over lip groups
    reach: float = 0.06  # seconds: how far the dominance extends beyond the interval


_V = Viseme
_VOWEL_REACH = 0.07
VISEMES: dict[str, Viseme] = {
    SIL: _V({"jawOpen": 0.0, "mouthClose": 0.02}, jaw=0.4, lips=0.4, reach=0.12),
    # open vowels
    "AA": _V({"jawOpen": 0.55, "mouthLowerDown": 0.30, "mouthUpperUp": 0.10, "mouthFunnel": 0.05},
             lips=0.8, reach=_VOWEL_REACH),
    "AE": _V({"jawOpen": 0.45, "mouthLowerDown": 0.35, "mouthUpperUp": 0.18,
              "mouthStretch": 0.25, "mouthSmile": 0.05}, lips=0.8, reach=_VOWEL_REACH),
    "AH": _V({"jawOpen": 0.40, "mouthLowerDown": 0.22, "mouthUpperUp": 0.08},
             lips=0.7, reach=_VOWEL_REACH),
    "AO": _V({"jawOpen": 0.45, "mouthLowerDown": 0.20, "mouthFunnel": 0.35, "mouthPucker": 0.2},
             lips=0.9, reach=_VOWEL_REACH),
    # other vowels
    "EH": _V({"jawOpen": 0.33, "mouthLowerDown": 0.25, "mouthUpperUp": 0.10,
              "mouthStretch": 0.2}, lips=0.8, reach=_VOWEL_REACH),
    "ER": _V({"jawOpen": 0.22, "mouthFunnel": 0.30, "mouthPucker": 0.25, "mouthUpperUp": 0.08},
             lips=1.0, reach=_VOWEL_REACH),
    "IH": _V({"jawOpen": 0.22, "mouthStretch": 0.25, "mouthLowerDown": 0.12, "mouthSmile": 0.05},
             lips=0.8, reach=_VOWEL_REACH),
    "IY": _V({"jawOpen": 0.14, "mouthStretch": 0.38, "mouthSmile": 0.12, "mouthUpperUp": 0.10,
              "mouthLowerDown": 0.08}, lips=1.0, reach=_VOWEL_REACH),
    "UH": _V({"jawOpen": 0.22, "mouthPucker": 0.35, "mouthFunnel": 0.25},
             lips=1.0, reach=_VOWEL_REACH),
    "UW": _V({"jawOpen": 0.13, "mouthPucker": 0.70, "mouthFunnel": 0.35},
             lips=1.3, reach=_VOWEL_REACH),
    "OW_": _V({"jawOpen": 0.38, "mouthFunnel": 0.45, "mouthPucker": 0.30,
               "mouthLowerDown": 0.12}, lips=1.1, reach=_VOWEL_REACH),
    # consonants
    "P": _V({"jawOpen": 0.08, "mouthPress": 0.35, "mouthRollLower": 0.08,
             "mouthRollUpper": 0.05, "cheekPuff": 0.06}, jaw=1.5, lips=6.0, reach=0.035),
    "B": _V({"jawOpen": 0.08, "mouthPress": 0.25, "mouthRollLower": 0.08,
             "mouthRollUpper": 0.05, "cheekPuff": 0.05}, jaw=1.5, lips=6.0, reach=0.035),
    "M": _V({"jawOpen": 0.08, "mouthPress": 0.20, "mouthRollLower": 0.06,
             "mouthRollUpper": 0.04}, jaw=1.5, lips=6.0, reach=0.035),
    "F": _V({"jawOpen": 0.10, "mouthRollLower": 0.45, "mouthUpperUp": 0.22,
             "mouthShrugUpper": 0.10, "mouthFunnel": 0.05}, jaw=1.0, lips=3.0, reach=0.04),
    "TH": _V({"jawOpen": 0.14, "tongueOut": 0.30, "mouthLowerDown": 0.12, "mouthUpperUp": 0.08},
             jaw=1.0, lips=0.6, reach=0.04),
    "T": _V({"jawOpen": 0.12, "mouthLowerDown": 0.08, "mouthUpperUp": 0.05},
            jaw=1.0, lips=0.2, reach=0.04),
    "L": _V({"jawOpen": 0.20, "mouthLowerDown": 0.10, "tongueOut": 0.04},
            jaw=0.7, lips=0.2, reach=0.05),
    "S": _V({"jawOpen": 0.06, "mouthStretch": 0.22, "mouthUpperUp": 0.12,
             "mouthLowerDown": 0.12, "mouthSmile": 0.05}, jaw=2.5, lips=0.8, reach=0.04),
    "SH": _V({"jawOpen": 0.10, "mouthFunnel": 0.45, "mouthPucker": 0.25, "mouthUpperUp": 0.18,
              "mouthLowerDown": 0.18, "mouthShrugUpper": 0.10}, jaw=1.5, lips=2.0, reach=0.045),
    "K": _V({"jawOpen": 0.16}, jaw=0.6, lips=0.15, reach=0.05),
    "HH": _V({"jawOpen": 0.20}, jaw=0.2, lips=0.1, reach=0.05),
    "R": _V({"jawOpen": 0.12, "mouthPucker": 0.35, "mouthFunnel": 0.25},
            jaw=0.7, lips=1.2, reach=0.05),
    "W": _V({"jawOpen": 0.06, "mouthPucker": 0.70, "mouthFunnel": 0.30},
            jaw=0.8, lips=3.0, reach=0.05),
    "Y": _V({"jawOpen": 0.08, "mouthStretch": 0.25, "mouthSmile": 0.08},
            jaw=0.8, lips=1.0, reach=0.045),
}  # fmt: skip
# Phones sharing another's viseme, and diphthongs as two visemes with the first one's share.
ALIASES = {"V": "F", "DH": "TH", "D": "T", "N": "T", "Z": "S", "ZH": "SH", "CH": "SH",
           "JH": "SH", "G": "K", "NG": "K"}  # fmt: skip
DIPHTHONGS = {"AW": ("AA", "UH", 0.55), "AY": ("AA", "IY", 0.55), "EY": ("EH", "IY", 0.6),
              "OW": ("OW_", "UW", 0.6), "OY": ("AO", "IY", 0.55)}  # fmt: skip

_LABIODENTAL = frozenset({"F", "V"})
_SEAL_MARGIN = 0.18  # mouthClose above jawOpen while the lips are sealed
_SEAL_JAW = 0.7  # how far the seal pulls the jaw towards the bilabial jaw target
_SIGMA_JAW, _SIGMA_LIPS = 0.028, 0.016  # articulator low-pass, seconds
_CONTACT_RAMP = 0.02  # seconds for the lips to close or open on a contact

# Expression groups: sided ones expand to Left/Right.
EXPRESSION_GROUPS: tuple[str, ...] = (
    "browDown", "browInnerUp", "browOuterUp", "cheekSquint", "eyeBlink", "eyeSquint", "eyeWide",
    "noseSneer", "mouthSmile", "mouthFrown", "mouthDimple", "mouthPress", "mouthStretch",
    "mouthUpperUp", "mouthLowerDown", "mouthShrugLower", "mouthShrugUpper", "mouthFunnel",
    "jawOpen", "jawForward", "mouthLeft",
)  # fmt: skip


def curves(
    phones: Sequence[TimedPhone],
    num_frames: int,
    prosody: Prosody,
    style: Style,
    emotion: str | None = "neutral",
    intensity: int = 0,
    seed: int | Sequence[int] = 0,
    fps: float = FPS,
) -> np.ndarray:
    """(num_frames, 52) float32 curves in EmoTalk channel order for one clip."""
    emotion = emotion or "neutral"
    rng = np.random.default_rng(seed)
    n = max(prosody.frames, int(np.ceil(num_frames / fps * RATE)) + 2)
    level = _fit(prosody.level, n, -60.0)
    pitch, voiced = _fit(prosody.pitch, n, 0.0), _fit(prosody.voiced, n, False).astype(bool)
    out = np.zeros((n, NUM_CHANNELS))
    mouth, seal = articulation(phones, n, level, style, emotion)
    _write_groups(out, mouth, GROUPS, style.asymmetry)
    _add_expression(out, n, level, pitch, voiced, phones, seal, style, emotion, intensity, rng)
    _add_eyes(out, n, phones, style, emotion, rng)
    t_frames = (np.arange(num_frames) + 0.5) / fps * RATE
    grid = np.arange(n)
    sampled = np.stack([np.interp(t_frames, grid, out[:, c]) for c in range(NUM_CHANNELS)], 1)
    return np.clip(sampled, 0.0, 1.0).astype(np.float32)


def _fit(values: np.ndarray, n: int, fill: float | bool) -> np.ndarray:
    """`values` cut or padded to n frames."""
    if values.size >= n:
        return values[:n]
    return np.concatenate([values, np.full(n - values.size, fill, dtype=values.dtype)])


# ---------------------------------------------------------------------------------------------
# Articulation


def articulation(
    phones: Sequence[TimedPhone], n: int, level: np.ndarray, style: Style, emotion: str
) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(GROUPS)) mouth groups on the 100 Hz grid, and the lip-seal weight (n,)."""
    segments = _segments(phones, level, style, emotion)
    t = (np.arange(n) + 0.5) / RATE
    jaw_cols = np.array([g in JAW_GROUPS for g in GROUPS])
    weighted = np.zeros((n, len(GROUPS)))
    total = np.full((n, len(GROUPS)), 1e-6)
    for start, end, target, viseme in segments:
        distance = np.maximum(0.0, np.maximum(start - t, t - end))
        decay = np.exp(-((distance / (viseme.reach * style.coarticulation)) ** 2))
        dom = np.where(jaw_cols[None, :], viseme.jaw, viseme.lips) * decay[:, None]
        weighted += dom * target[None, :]
        total += dom
    mouth = weighted / total
    sigma = np.where(jaw_cols, _SIGMA_JAW, _SIGMA_LIPS) * style.smoothness * RATE
    for g in range(len(GROUPS)):
        mouth[:, g] = gaussian_filter1d(mouth[:, g], sigma[g], mode="nearest")
    seal = _contact(phones, t, BILABIALS)
    mouth = _apply_seal(mouth, seal, style)
    mouth = _apply_labiodental(mouth, _contact(phones, t, _LABIODENTAL))
    mouth[:, G["jawOpen"]] += style.jaw_rest * (1.0 - seal)
    return mouth, seal


def _segments(
    phones: Sequence[TimedPhone], level: np.ndarray, style: Style, emotion: str
) -> list[tuple[float, float, np.ndarray, Viseme]]:
    """(start, end, scaled target vector, viseme) per articulatory segment: diphthongs give
    two segments, every target is scaled by stress, loudness, person and emotion."""
    spec = EMOTION_SPECS[emotion]
    out = []
    for phone in phones:
        for start, end, name in _split_diphthong(phone):
            viseme = VISEMES[name]
            gain = _opening_gain(phone, level, style, spec.articulation)
            target = np.zeros(len(GROUPS))
            for group, value in viseme.targets.items():
                target[G[group]] = value
            for group in OPENING:
                target[G[group]] *= gain
            for group in ROUNDING:
                target[G[group]] *= style.rounding
            if phone.phone != SIL:
                for group in SPREADING:
                    target[G[group]] = target[G[group]] * style.spread + spec.spread
            out.append((start, end, target, viseme))
    return out


def _split_diphthong(phone: TimedPhone) -> list[tuple[float, float, str]]:
    name = ALIASES.get(phone.phone, phone.phone)
    if name in DIPHTHONGS:
        first, second, share = DIPHTHONGS[name]
        cut = phone.start + share * phone.duration
        return [(phone.start, cut, first), (cut, phone.end, second)]
    return [(phone.start, phone.end, name if name in VISEMES else SIL)]


def _opening_gain(phone: TimedPhone, level: np.ndarray, style: Style, emotion_gain: float) -> float:
    """Bigger openings on stressed and louder phones, smaller on reduced vowels."""
    lo, hi = int(phone.start * RATE), max(int(phone.start * RATE) + 1, int(phone.end * RATE))
    loud = float(np.mean(level[lo:hi])) if lo < level.size else 0.0
    loud_gain = float(np.clip(1.0 + 0.035 * loud, 0.6, 1.4))
    stress_gain = 0.6 if phone.reduced else (0.9, 1.0, 1.12)[min(phone.stress, 2)]
    return style.openness * emotion_gain * loud_gain * stress_gain


def _contact(phones: Sequence[TimedPhone], t: np.ndarray, kinds: frozenset[str]) -> np.ndarray:
    """Weight 0..1 of lip contact over runs of phones of `kinds` ("bumped": M and P form one
    closure): 20 ms raised-cosine ramps centred on the run's boundaries (half closed at the
    acoustic closure and release, the fastest lip movement that reads as natural), fully
    closed in between."""
    runs: list[list[float]] = []
    for phone in phones:
        if phone.phone in kinds:
            if runs and phone.start - runs[-1][1] < 1e-3:
                runs[-1][1] = phone.end
            else:
                runs.append([phone.start, phone.end])
    weight = np.zeros_like(t)
    half = _CONTACT_RAMP / 2
    for start, end in runs:
        middle = 0.5 * (start + end)
        a, b = min(middle, start + half), max(middle, end - half)
        weight = np.maximum(weight, _plateau(t, a, b, _CONTACT_RAMP))
    return weight


def _plateau(t: np.ndarray, a: float, b: float, ramp: float) -> np.ndarray:
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - (a - ramp)) / ramp, 0, 1))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - b) / ramp, 0, 1))
    return np.where(t < a, rise, np.where(t > b, fall, 1.0))


def _apply_seal(mouth: np.ndarray, seal: np.ndarray, style: Style) -> np.ndarray:
    """Close the lips where `seal` is 1: jaw towards its bilabial target, lips not raised or
    lowered, mouthClose just above the jaw opening, lips pressed."""
    out = mouth.copy()
    s = seal[:, None]
    jaw_target = VISEMES["M"].targets["jawOpen"]
    out[:, G["jawOpen"]] = (1 - _SEAL_JAW * seal) * mouth[:, G["jawOpen"]] + (
        _SEAL_JAW * seal * jaw_target
    )
    for group, keep in (
        ("mouthLowerDown", 0.05),
        ("mouthUpperUp", 0.05),
        ("mouthFunnel", 0.3),
        ("mouthPucker", 0.6),
        ("mouthStretch", 0.5),
        ("tongueOut", 0.0),
    ):
        out[:, G[group]] = mouth[:, G[group]] * (1 - (1 - keep) * s[:, 0])
    close = out[:, G["jawOpen"]] + _SEAL_MARGIN * style.lip_tension
    out[:, G["mouthClose"]] = np.maximum(mouth[:, G["mouthClose"]] * (1 - seal), seal * close)
    press = np.maximum(mouth[:, G["mouthPress"]], 0.2 * style.lip_tension * seal)
    out[:, G["mouthPress"]] = press
    return out


def _apply_labiodental(mouth: np.ndarray, contact: np.ndarray) -> np.ndarray:
    """Lower lip under the upper teeth on F/V: rolled in, not lowered, jaw nearly closed."""
    out = mouth.copy()
    out[:, G["mouthRollLower"]] = np.maximum(mouth[:, G["mouthRollLower"]], 0.4 * contact)
    out[:, G["mouthLowerDown"]] = mouth[:, G["mouthLowerDown"]] * (1 - 0.9 * contact)
    out[:, G["jawOpen"]] = np.minimum(mouth[:, G["jawOpen"]], 0.1 + (1 - contact))
    return out


def _write_groups(out: np.ndarray, values: np.ndarray, groups: Sequence[str], asym: float) -> None:
    """Add group columns onto the 52 channels, splitting sided groups with the asymmetry."""
    for k, group in enumerate(groups):
        if group in SIDED:
            out[:, INDEX[group + "Left"]] += values[:, k] * (1 + asym)
            out[:, INDEX[group + "Right"]] += values[:, k] * (1 - asym)
        elif group in INDEX:
            out[:, INDEX[group]] += values[:, k]


# ---------------------------------------------------------------------------------------------
# Emotion and prosody


def _add_expression(
    out: np.ndarray, n: int, level: np.ndarray, pitch: np.ndarray, voiced: np.ndarray,
    phones: Sequence[TimedPhone], seal: np.ndarray, style: Style, emotion: str, intensity: int,
    rng: np.random.Generator,
) -> None:  # fmt: skip
    """The emotion's expression with its temporal modulation, plus brow accents and the
    person's resting smile."""
    spec = EMOTION_SPECS[emotion]
    t = np.arange(n) / RATE
    phases = rng.uniform(0, 2 * np.pi, size=3)
    drift = (
        1.0
        + 0.08 * np.sin(2 * np.pi * t / 3.1 + phases[0])
        + 0.05 * np.sin(2 * np.pi * t / 1.7 + phases[1])
    )
    slow_level = gaussian_filter1d(np.clip(level, -30, 15), 0.3 * RATE, mode="nearest")
    envelope = drift * (1.0 + 0.15 * np.clip(slow_level / 6.0, -1, 1))
    gain = intensity_scale(intensity) * style.expressiveness
    values = np.zeros((n, len(EXPRESSION_GROUPS)))
    for group, value in spec.expression.items():
        values[:, EXPRESSION_GROUPS.index(group)] = gain * value * envelope
    values[:, EXPRESSION_GROUPS.index("mouthSmile")] += style.smile_bias
    # Lips sealed for a bilabial cannot also be held apart by the expression.
    for group in ("jawOpen", "mouthLowerDown", "mouthUpperUp", "mouthFunnel"):
        values[:, EXPRESSION_GROUPS.index(group)] *= 1.0 - seal
    accent = pitch_accents(pitch, voiced, phones, n)
    brow = style.brow_gain * accent * (0.6 + 0.4 * gain)
    if spec.brow_sign > 0:
        values[:, EXPRESSION_GROUPS.index("browInnerUp")] += 0.18 * brow
        values[:, EXPRESSION_GROUPS.index("browOuterUp")] += 0.14 * brow
    else:
        values[:, EXPRESSION_GROUPS.index("browDown")] += 0.15 * brow
    if emotion in ("surprised", "fearful"):
        values[:, EXPRESSION_GROUPS.index("eyeWide")] += 0.1 * brow
    # Rounded lips reduce a smile (a pucker and a smile pull the corners opposite ways).
    rounding = out[:, INDEX["mouthPucker"]]
    values[:, EXPRESSION_GROUPS.index("mouthSmile")] *= 1.0 - 0.6 * np.clip(rounding, 0, 1)
    _write_groups(out, values, EXPRESSION_GROUPS, style.asymmetry * 0.5)


def pitch_accents(
    pitch: np.ndarray, voiced: np.ndarray, phones: Sequence[TimedPhone], n: int
) -> np.ndarray:
    """0..1 accent strength per frame: pitch excursions above the speaker's median (smoothed
    over a syllable) and, where the phones carry it, primary stress."""
    rise = np.where(voiced, np.clip(pitch - 1.0, 0, None), 0.0)
    accent = gaussian_filter1d(rise, 0.06 * RATE, mode="constant") / 3.0
    t = np.arange(n) / RATE
    for phone in phones:
        if phone.stress == 2:
            accent += 0.4 * np.exp(-0.5 * ((t - phone.start - 0.03) / 0.08) ** 2)
    return np.clip(accent, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Eyes


def _add_eyes(
    out: np.ndarray, n: int, phones: Sequence[TimedPhone], style: Style, emotion: str,
    rng: np.random.Generator,
) -> None:  # fmt: skip
    """Blinks and gaze fixations. Baseline lid closure from the expression is kept: a blink
    closes the rest of the way."""
    spec = EMOTION_SPECS[emotion]
    blink = blink_curve(n, phones, style.blink_rate * spec.blink, rng)
    for side in ("Left", "Right"):
        lid = out[:, INDEX["eyeBlink" + side]]
        amp = 0.92 + 0.06 * rng.uniform()
        out[:, INDEX["eyeBlink" + side]] = lid + (1 - lid) * amp * blink
        out[:, INDEX["eyeSquint" + side]] += 0.05 * blink
        out[:, INDEX["eyeWide" + side]] *= 1 - blink
    x, y = gaze(n, rng, spec.gaze_down)
    y = y - 0.05 * blink
    out[:, INDEX["eyeLookOutRight"]] += np.clip(x, 0, None)
    out[:, INDEX["eyeLookInLeft"]] += np.clip(x, 0, None)
    out[:, INDEX["eyeLookOutLeft"]] += np.clip(-x, 0, None)
    out[:, INDEX["eyeLookInRight"]] += np.clip(-x, 0, None)
    for side in ("Left", "Right"):
        out[:, INDEX["eyeLookUp" + side]] += np.clip(y, 0, None)
        out[:, INDEX["eyeLookDown" + side]] += np.clip(-y, 0, None)


def blink_curve(
    n: int, phones: Sequence[TimedPhone], per_minute: float, rng: np.random.Generator
) -> np.ndarray:
    """0..1 blink closure per 100 Hz frame: Poisson blink onsets with a refractory period,
    plus a chance of a blink at the start of each pause."""
    seconds = n / RATE
    onsets: list[float] = []
    t = rng.exponential(60.0 / per_minute) * rng.uniform()
    while t < seconds:
        onsets.append(t)
        t += 0.8 + rng.exponential(60.0 / per_minute)
    draws = rng.uniform(size=len(phones))
    for phone, draw in zip(phones, draws, strict=True):
        if phone.phone == SIL and phone.duration > 0.25 and phone.start > 0.1 and draw < 0.35:
            onsets.append(phone.start + 0.05)
    onsets.sort()
    kept: list[float] = []
    for onset in onsets:
        if not kept or onset - kept[-1] > 0.8:
            kept.append(onset)
    grid = np.arange(n) / RATE
    curve = np.zeros(n)
    for onset in kept:
        curve = np.maximum(curve, _blink_shape(grid - onset))
    return curve


def _blink_shape(dt: np.ndarray) -> np.ndarray:
    """Close in 80 ms, hold 40 ms, open in 160 ms (opening is slower than closing)."""
    close = 0.5 - 0.5 * np.cos(np.pi * np.clip(dt / 0.08, 0, 1))
    opening = 0.5 + 0.5 * np.cos(np.pi * np.clip((dt - 0.12) / 0.16, 0, 1))
    return np.where(dt < 0, 0.0, np.where(dt < 0.12, close, opening))


def gaze(n: int, rng: np.random.Generator, down: float) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical gaze: fixations of 0.4..2.5 s joined by 40 ms saccades."""
    x, y = np.zeros(n), np.zeros(n)
    t, cx, cy = 0, 0.0, -down
    while t < n:
        length = int(rng.uniform(0.4, 2.5) * RATE)
        nx, ny = rng.normal(0, 0.07), rng.normal(-down, 0.05)
        ramp = np.clip(np.arange(length) / 4.0, 0, 1)
        end = min(n, t + length)
        x[t:end] = (cx + (nx - cx) * ramp)[: end - t]
        y[t:end] = (cy + (ny - cy) * ramp)[: end - t]
        t, cx, cy = end, nx, ny
    return x, y
