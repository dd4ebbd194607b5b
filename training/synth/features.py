"""Frame-level loudness and pitch of 16 kHz speech, at the teacher's internal 100 Hz rate.

The teacher modulates mouth opening with loudness and drives brows with pitch accents, for
synthetic and real speech alike, so both come from the audio rather than from TTS settings.
Pitch is a plain normalised-autocorrelation tracker: adequate for accent detection on clean
speech, and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
RATE = 100  # internal frames per second
HOP = SAMPLE_RATE // RATE
_WINDOW = 640  # 40 ms: two periods of a 50 Hz voice
_F0_MIN, _F0_MAX = 60.0, 420.0
_VOICING = 0.45  # normalised autocorrelation peak needed to call a frame voiced
_SILENCE_DB = -45.0  # below the loudest frame: never voiced


@dataclass(frozen=True)
class Prosody:
    """Per 10 ms frame: `level` in dB relative to the clip's speech median (0 = typical),
    `voiced`, and `pitch` in semitones relative to the clip's median voiced pitch (0 where
    unvoiced)."""

    level: np.ndarray
    voiced: np.ndarray
    pitch: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.level.size)


def frame_count(num_samples: int) -> int:
    return int(np.ceil(num_samples / HOP))


def _frames(audio: np.ndarray, width: int) -> np.ndarray:
    """(N, width) windows centred on each hop, zero padded at the edges."""
    count = frame_count(audio.size)
    pad = width // 2
    padded = np.pad(audio.astype(np.float64), (pad, pad + width + HOP))
    index = np.arange(count)[:, None] * HOP + np.arange(width)[None, :]
    return padded[index]


def level_db(audio: np.ndarray) -> np.ndarray:
    """RMS level per frame (25 ms Hann window) in dBFS."""
    frames = _frames(audio, 400) * np.hanning(400)
    rms = np.sqrt(np.mean(frames**2, axis=1) / 0.375) + 1e-7
    return 20.0 * np.log10(rms)


def pitch_track(audio: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz or 0, voiced mask) per frame from the normalised autocorrelation peak."""
    frames = _frames(audio, _WINDOW)
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, n=2 * _WINDOW, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :_WINDOW]
    # Unbias for the shrinking overlap, then normalise by lag-0 energy.
    acf = acf / (_WINDOW - np.arange(_WINDOW))[None, :] * _WINDOW
    acf = acf / (acf[:, :1] + 1e-12)
    lo, hi = int(SAMPLE_RATE / _F0_MAX), int(SAMPLE_RATE / _F0_MIN)
    lag = lo + np.argmax(acf[:, lo:hi], axis=1)
    peak = acf[np.arange(lag.size), lag]
    voiced = (peak > _VOICING) & (db > db.max() + _SILENCE_DB)
    f0 = np.where(voiced, SAMPLE_RATE / lag, 0.0)
    return f0, voiced


def analyse(audio: np.ndarray) -> Prosody:
    """Loudness and pitch of a clip, each relative to the clip's own typical value so that a
    quiet recording and a loud one give the same mouth amplitude range."""
    db = level_db(audio)
    f0, voiced = pitch_track(audio, db)
    speech = db > db.max() - 30.0
    median_db = float(np.median(db[speech])) if speech.any() else float(db.max())
    pitch = np.zeros_like(f0)
    if voiced.any():
        semitones = 12.0 * np.log2(np.maximum(f0, 1.0))
        pitch = np.where(voiced, semitones - float(np.median(semitones[voiced])), 0.0)
    return Prosody(level=db - median_db, voiced=voiced, pitch=pitch)
