"""Emotions and "persons" of the synthetic corpus.

An emotion (the 8 RAVDESS categories) acts twice: on the voice (espeak pitch, pitch range,
rate, volume, plus a light voice effect) and on the face (an expression of the upper face and
mouth corners, a change of articulation size, blink rate and brow behaviour). Intensity 0 is a
normal, 1 a strong rendering, as in RAVDESS.

A person (EmoTalk's one-hot of 24) is a speaking style: an espeak voice variant with its own
base pitch and rate, and an articulation style (how wide the mouth opens, how much the lips
round, resting smile, coarticulation reach, asymmetry, expressiveness, blink rate). Persons are
fixed tables, not drawn from the corpus seed, so person 7 is the same in every corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotalk_core.controls import NUM_STYLES, PRESET_NAMES
from emotalk_core.phonetics.espeak import VoiceSettings

EMOTIONS: tuple[str, ...] = PRESET_NAMES
NUM_PERSONS = NUM_STYLES  # one synthetic speaker per style
# Share of the strong rendering used for intensity 0 (face and voice offsets alike).
NORMAL_SCALE = 0.55
# Zero-phase low-pass (7-tap Hann, half amplitude at 2 kHz) for darker voices.
_DARK_KERNEL = np.hanning(9)[1:-1] / np.hanning(9)[1:-1].sum()


@dataclass(frozen=True)
class EmotionSpec:
    """Voice offsets are for the strong rendering; `expression` maps an expression group
    (see teacher.EXPRESSION_GROUPS) to its value at strong intensity."""

    pitch: float = 0.0  # espeak pitch units (0..100 scale)
    range: float = 0.0
    rate: float = 1.0  # multiplies words per minute
    volume: float = 1.0
    tremolo: float = 0.0  # depth of a 6.5 Hz amplitude tremble (fear)
    brightness: float = 0.0  # >0 harsher (drive), <0 darker (low-pass)
    articulation: float = 1.0  # mouth opening gain
    spread: float = 0.0  # added lip spreading in speech
    blink: float = 1.0  # blink rate factor
    brow_sign: float = 1.0  # +1 brows rise on pitch accents, -1 they lower (anger, disgust)
    gaze_down: float = 0.0
    expression: dict[str, float] = field(default_factory=dict)


EMOTION_SPECS: dict[str, EmotionSpec] = {
    "neutral": EmotionSpec(),
    "calm": EmotionSpec(
        pitch=-6, range=-18, rate=0.88, volume=0.8, brightness=-0.3, articulation=0.85,
        blink=0.8,
        expression={"mouthSmile": 0.12, "cheekSquint": 0.05, "eyeSquint": 0.08,
                    "eyeBlink": 0.08, "browInnerUp": 0.03},
    ),
    "happy": EmotionSpec(
        pitch=12, range=30, rate=1.08, volume=1.15, brightness=0.2, articulation=1.1,
        spread=0.12,
        expression={"mouthSmile": 0.6, "cheekSquint": 0.45, "eyeSquint": 0.3,
                    "mouthDimple": 0.2, "mouthUpperUp": 0.08, "browOuterUp": 0.08,
                    "browInnerUp": 0.05},
    ),
    "sad": EmotionSpec(
        pitch=-12, range=-30, rate=0.78, volume=0.6, brightness=-0.6, articulation=0.75,
        blink=0.8, gaze_down=0.12,
        expression={"browInnerUp": 0.6, "browDown": 0.12, "mouthFrown": 0.45,
                    "mouthShrugLower": 0.25, "mouthPress": 0.1, "eyeBlink": 0.15,
                    "eyeSquint": 0.05},
    ),
    "angry": EmotionSpec(
        pitch=6, range=35, rate=1.12, volume=1.6, brightness=0.7, articulation=1.2,
        spread=0.05, blink=1.2, brow_sign=-1.0,
        expression={"browDown": 0.7, "eyeSquint": 0.35, "noseSneer": 0.3, "mouthPress": 0.25,
                    "mouthFrown": 0.2, "mouthStretch": 0.15, "mouthUpperUp": 0.12,
                    "jawForward": 0.08, "eyeWide": 0.1, "cheekSquint": 0.1},
    ),
    "fearful": EmotionSpec(
        pitch=18, range=10, rate=1.18, volume=0.9, tremolo=0.18, articulation=0.9,
        spread=0.1, blink=1.5,
        expression={"browInnerUp": 0.65, "browOuterUp": 0.35, "browDown": 0.15,
                    "eyeWide": 0.55, "mouthStretch": 0.4, "mouthFrown": 0.1, "jawOpen": 0.05,
                    "mouthLowerDown": 0.1},
    ),
    "disgusted": EmotionSpec(
        pitch=-8, range=15, rate=0.85, volume=1.0, brightness=0.2, articulation=0.95,
        blink=1.1, brow_sign=-1.0,
        expression={"noseSneer": 0.6, "mouthUpperUp": 0.4, "browDown": 0.4, "eyeSquint": 0.35,
                    "cheekSquint": 0.25, "mouthFrown": 0.25, "mouthShrugUpper": 0.2,
                    "mouthShrugLower": 0.15, "mouthLeft": 0.08},
    ),
    "surprised": EmotionSpec(
        pitch=20, range=45, rate=1.0, volume=1.25, brightness=0.1, articulation=1.1, blink=0.5,
        expression={"browOuterUp": 0.7, "browInnerUp": 0.55, "eyeWide": 0.65, "jawOpen": 0.15,
                    "mouthLowerDown": 0.12, "mouthFunnel": 0.1},
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Style:
    """A person's articulation and facial style (multipliers are 1.0 for an average speaker)."""

    openness: float = 1.0  # jaw and lip opening
    rounding: float = 1.0  # pucker and funnel
    spread: float = 1.0  # lip stretch in spread vowels
    smile_bias: float = 0.0  # resting smile
    coarticulation: float = 1.0  # dominance reach: larger blends neighbours more
    smoothness: float = 1.0  # articulator low-pass width
    lip_tension: float = 1.0  # press and seal strength on bilabials
    asymmetry: float = 0.0  # left minus right share, -0.15..0.15
    expressiveness: float = 1.0  # emotion expression gain
    brow_gain: float = 1.0  # brow motion with pitch accents
    blink_rate: float = 17.0  # blinks per minute at rest
    jaw_rest: float = 0.03


@dataclass(frozen=True)
class Person:
    index: int
    voice: str
    pitch: int
    range: int
    rate: int
    style: Style


# Voice variants (language x espeak variant): 12 lower and 12 higher voices, several accents.
_VOICES = (
    "en-us+m1", "en-us+f2", "en+m3", "en-us+f4", "en-gb-x-rp+m2", "en-gb-scotland+f3",
    "en-us-nyc+m4", "en-us+belinda", "en-us+m6", "en+f2", "en-gb-scotland+m1", "en-us+f1",
    "en-us+m7", "en-029+f2", "en-gb-x-gbcwmd+m6", "en-us+steph", "en-us+klatt3",
    "en-gb-x-rp+f4", "en-us+m2", "en-us-nyc+f1", "en-gb-x-gbclan+m7", "en-us+linda",
    "en-us+m5", "en-us+f5",
)  # fmt: skip


def _make_persons() -> tuple[Person, ...]:
    """24 persons from a fixed generator: a table in all but name, without 24 literal rows."""
    rng = np.random.default_rng(20240524)
    persons = []
    for index, voice in enumerate(_VOICES):
        u = rng.uniform(size=12)
        style = Style(
            openness=0.75 + 0.55 * u[0], rounding=0.75 + 0.5 * u[1], spread=0.7 + 0.6 * u[2],
            smile_bias=0.12 * u[3] ** 2, coarticulation=0.75 + 0.6 * u[4],
            smoothness=0.8 + 0.5 * u[5], lip_tension=0.8 + 0.4 * u[6],
            asymmetry=0.15 * (2 * u[7] - 1), expressiveness=0.75 + 0.5 * u[8],
            brow_gain=0.5 + u[9], blink_rate=10.0 + 14.0 * u[10], jaw_rest=0.01 + 0.04 * u[11],
        )  # fmt: skip
        extra = rng.uniform(size=3)
        persons.append(Person(
            index=index, voice=voice, pitch=int(round(40 + 20 * extra[0])),
            range=int(round(40 + 20 * extra[1])), rate=int(round(150 + 45 * extra[2])),
            style=style,
        ))  # fmt: skip
    return tuple(persons)


PERSONS: tuple[Person, ...] = _make_persons()


def intensity_scale(intensity: int) -> float:
    return 1.0 if intensity else NORMAL_SCALE


def voice_settings(person: Person, emotion: str, intensity: int) -> VoiceSettings:
    """espeak settings of `person` speaking with `emotion` at `intensity`."""
    spec = EMOTION_SPECS[emotion]
    k = intensity_scale(intensity)
    rate = person.rate * (1.0 + k * (spec.rate - 1.0))
    volume = 100.0 * (1.0 + k * (spec.volume - 1.0))
    return VoiceSettings(
        voice=person.voice,
        rate=int(np.clip(round(rate), 80, 450)),
        pitch=int(np.clip(round(person.pitch + k * spec.pitch), 0, 100)),
        range=int(np.clip(round(person.range + k * spec.range), 0, 100)),
        volume=int(np.clip(round(volume), 10, 200)),
    )


def voice_effect(audio: np.ndarray, emotion: str, intensity: int, phase: float) -> np.ndarray:
    """Light emotion-specific colouring that espeak's parameters cannot give: a tremble for
    fear, a darker (low-passed) voice for sadness and calm, a harsher (driven) one for anger.
    `phase` (0..1) sets the tremolo phase so that renditions differ."""
    spec = EMOTION_SPECS[emotion]
    k = intensity_scale(intensity)
    out = audio.astype(np.float64)
    if spec.tremolo:
        t = np.arange(out.size) / 16000.0
        out = out * (1.0 + k * spec.tremolo * np.sin(2 * np.pi * (6.5 * t + phase)))
    if spec.brightness < 0:
        mix = -k * spec.brightness
        smoothed = np.convolve(out, _DARK_KERNEL, mode="same")
        out = (1 - mix) * out + mix * smoothed
    elif spec.brightness > 0:
        drive = 1.0 + 3.0 * k * spec.brightness
        peak = float(np.max(np.abs(out))) or 1.0
        out = np.tanh(drive * out / peak) / np.tanh(drive) * peak
    return out.astype(np.float32)
