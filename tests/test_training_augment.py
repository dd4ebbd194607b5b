"""Audio augmentation and the speed change that moves curves and labels with the audio
(training.augment)."""

from __future__ import annotations

import numpy as np
import pytest

from training import augment as A
from training.config import AugmentSection

from .test_training_corpus import voice


def test_augmentation_is_seeded_and_sane():
    audio = voice(1.0, 150.0, seed=0)
    cfg = AugmentSection(noise_probability=1.0, eq_probability=1.0, reverb_probability=1.0)
    a = A.augment(audio, cfg, np.random.default_rng(5))
    b = A.augment(audio, cfg, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == audio.shape and a.dtype == np.float32
    assert not np.array_equal(a, A.augment(audio, cfg, np.random.default_rng(6)))
    assert A.augment(audio, AugmentSection(enabled=False), np.random.default_rng(0)) is audio
    noisy = A.add_noise(audio, 20.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(audio**2) / np.mean((noisy - audio) ** 2))
    assert abs(snr - 20.0) < 0.5
    rms = np.sqrt(np.mean(audio**2))
    for out in (A.spectral_tilt(audio, 3.0), A.reverb(audio, 0.3, 0.5, np.random.default_rng(0))):
        assert out.shape == audio.shape
        assert np.sqrt(np.mean(out**2)) == pytest.approx(rms, rel=1e-3)
    assert np.allclose(A.apply_gain(audio, 6.0206), audio * 2, atol=1e-5)


def test_band_limit_and_speed_change():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32)
    limited = A.lowpass(noise, 3400.0)
    spectrum = np.abs(np.fft.rfft(limited)) ** 2
    freqs = np.fft.rfftfreq(limited.size, 1 / 16000)
    assert spectrum[freqs > 4500].sum() < 1e-3 * spectrum[freqs < 3000].sum()
    assert np.sqrt(np.mean(limited**2)) == pytest.approx(np.sqrt(np.mean(noise**2)), rel=1e-3)
    tone = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000).astype(np.float32)
    faster = A.change_speed(tone, 1.1)
    assert faster.size == round(16000 / 1.1) and faster.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(faster))) * 16000 / faster.size
    assert peak == pytest.approx(220, abs=2)  # pitch rises with speed
    curves = np.linspace(0, 1, 31, dtype=np.float32)[:, None].repeat(52, 1)
    stretched = A.stretch_curves(curves, 41)
    assert stretched.shape == (41, 52) and stretched[0, 0] == 0 and stretched[-1, 0] == 1
    assert np.all(np.diff(stretched[:, 0]) > 0)
    cfg = AugmentSection(lowpass_probability=1.0, lowpass_hz=(3000.0, 3000.0), gain_db=(0, 0),
                         noise_probability=0.0, eq_probability=0.0, reverb_probability=0.0)
    np.testing.assert_allclose(A.augment(noise, cfg, np.random.default_rng(1)),
                               A.lowpass(noise, 3000.0), atol=1e-6)


def test_stretch_labels_picks_the_nearest_frame():
    labels = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(A.stretch_labels(labels, 7), [0, 1, 1, 2, 3, 3, 4])
    np.testing.assert_array_equal(A.stretch_labels(labels, 3), [0, 2, 4])
    assert A.stretch_labels(labels, 5) is labels
