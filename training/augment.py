"""On-the-fly audio augmentation: gain, noise at a random SNR, spectral tilt EQ, short reverb,
band limiting; and speed perturbation of audio with its curves (`change_speed`, `stretch_curves`).

Why: the targets (face motion) do not change when the recording chain does, so the network
should not either. Users feed the add-on laptop microphones, phone recordings and roomy
dialogue tracks, while 3D-ETF and the synthetic corpus are clean close-mic speech.

Every draw comes from the `numpy.random.Generator` passed in, which the dataset derives from
(seed, epoch, clip): the same run gives the same augmented audio in any worker process, and a
resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np
import soxr
from scipy.signal import butter, fftconvolve, sosfiltfilt

from emotalk_core.config import SAMPLE_RATE

from .config import AugmentSection

_EPS = 1e-8


def augment(audio: np.ndarray, cfg: AugmentSection, rng: np.random.Generator) -> np.ndarray:
    """audio (S,) float32 16 kHz -> augmented (S,) float32. Reverb and EQ act on the dry
    signal, then noise is added at the drawn SNR relative to the result, then the gain."""
    if not cfg.enabled or audio.size == 0:
        return audio
    out = audio.astype(np.float32, copy=True)
    # Draw every random number in a fixed order whatever is applied, so that changing one
    # probability does not reshuffle the other augmentations of the same clip.
    use_reverb = rng.random() < cfg.reverb_probability
    rt60, wet = rng.uniform(*cfg.reverb_rt60_s), rng.uniform(*cfg.reverb_wet)
    use_eq = rng.random() < cfg.eq_probability
    tilt = rng.uniform(*cfg.eq_tilt_db_per_octave)
    use_noise = rng.random() < cfg.noise_probability
    snr = rng.uniform(*cfg.snr_db)
    gain = rng.uniform(*cfg.gain_db)
    seed = int(rng.integers(2**31))
    noise_rng = np.random.default_rng(seed)
    use_lowpass = rng.random() < cfg.lowpass_probability
    cutoff = rng.uniform(*cfg.lowpass_hz)
    if use_reverb:
        out = reverb(out, rt60, wet, noise_rng)
    if use_eq:
        out = spectral_tilt(out, tilt)
    if use_lowpass:
        out = lowpass(out, cutoff)
    if use_noise:
        out = add_noise(out, snr, noise_rng)
    return apply_gain(out, gain)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    return (audio * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` below the signal's mean power (silence gets none)."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    if power <= _EPS**2:
        return audio
    noise = rng.standard_normal(audio.shape[0])
    noise *= np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (audio + noise).astype(np.float32)


def spectral_tilt(audio: np.ndarray, db_per_octave: float, pivot_hz: float = 1000.0
                  ) -> np.ndarray:
    """A first-order EQ stand-in: gain `db_per_octave * log2(f / pivot)` on the FFT, limited to
    +-12 dB, DC untouched. Positive tilts brighten (a close cheap mic), negative ones darken
    (a distant or muffled one). The signal's RMS is kept."""
    n = audio.shape[0]
    spectrum = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(freqs, 1.0) / pivot_hz)
    gain_db = np.clip(db_per_octave * octaves, -12.0, 12.0)
    gain_db[0] = 0.0
    out = np.fft.irfft(spectrum * 10.0 ** (gain_db / 20.0), n)
    return _match_rms(out, audio)


def lowpass(audio: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """An 8th-order Butterworth low-pass (zero phase): the band of a phone line or a cheap
    recorder. The signal's RMS is kept."""
    sos = butter(8, cutoff_hz, btype="low", fs=SAMPLE_RATE, output="sos")
    padding = min(audio.shape[0] - 1, 3 * (2 * sos.shape[0] + 1))
    if padding < 1:
        return audio
    out = sosfiltfilt(sos, audio.astype(np.float64), padlen=padding)
    return _match_rms(out, audio)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """audio (S,) played `factor` times faster: (round(S / factor),) samples, pitch and formants
    scaled by `factor` (a resampling, as tape speed would)."""
    out = soxr.resample(audio.astype(np.float32), SAMPLE_RATE * factor, SAMPLE_RATE)
    return np.ascontiguousarray(out, dtype=np.float32)


def stretch_curves(curves: np.ndarray, frames: int) -> np.ndarray:
    """curves (T, C) linearly resampled in time to (frames, C), ends kept aligned to the clip's
    ends (frame t sits at time t / fps in both)."""
    source = curves.shape[0]
    if frames == source:
        return curves
    if source == 1 or frames == 1:
        return np.repeat(curves[:1], frames, axis=0)
    positions = np.arange(frames) * ((source - 1) / (frames - 1))
    left = np.floor(positions).astype(int).clip(0, source - 2)
    weight = (positions - left)[:, None].astype(np.float32)
    return ((1.0 - weight) * curves[left] + weight * curves[left + 1]).astype(curves.dtype)


def stretch_labels(labels: np.ndarray, frames: int) -> np.ndarray:
    """labels (T,) class indices resampled in time to (frames,) by the nearest source frame, on
    the same time grid as `stretch_curves`."""
    source = labels.shape[0]
    if frames == source:
        return labels
    if source == 1 or frames == 1:
        return np.repeat(labels[:1], frames)
    positions = np.arange(frames) * ((source - 1) / (frames - 1))
    return labels[np.rint(positions).astype(int).clip(0, source - 1)]


def reverb(audio: np.ndarray, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolution with a synthetic room: a direct impulse plus exponentially decaying noise
    (60 dB down after `rt60_s`), the tail scaled by `wet`. Same length and RMS as the input."""
    length = max(1, int(rt60_s * SAMPLE_RATE))
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.907755 * t / max(rt60_s, 1e-3))  # ln(1000)
    tail *= wet / max(np.sqrt(np.sum(tail**2)), _EPS)
    impulse = np.concatenate([[1.0], tail])
    out = fftconvolve(audio.astype(np.float64), impulse)[: audio.shape[0]]
    return _match_rms(out, audio)


def _match_rms(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ref = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    now = float(np.sqrt(np.mean(np.square(out))))
    if now > _EPS:
        out = out * (ref / now)
    return out.astype(np.float32)
