"""The Predictor: controls, post-processing, long audio, progress and cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalk_core.audio import load_audio
from emotalk_core.controls import Controls, EmotionControl, PostProcess
from emotalk_core.errors import Cancelled, ControlError
from emotalk_core.inference import Predictor, crossfade_weights, plan_windows
from emotalk_core.model import level_weights, one_hot_weights

from .conftest import speechlike

RAW = Controls(postprocess=None)


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor(tiny_model_dir, device="cpu")


def test_raw_output_is_the_networks(predictor, speech_wav):
    result = predictor.predict(speech_wav, controls=RAW)
    audio = torch.from_numpy(load_audio(speech_wav))[None]  # as stored: 16-bit PCM
    with torch.no_grad():
        expected, logits = predictor.model(audio, torch.tensor([32000]),
                                           level_weights(torch.tensor([1.0])),
                                           one_hot_weights(torch.tensor([0]), 24))
    assert result.values.shape == (60, 52) and result.values.dtype == np.float32
    np.testing.assert_allclose(result.values, expected[0].numpy(), atol=1e-4)
    probs = torch.softmax(logits[0], -1).numpy()
    assert list(result.emotion_probabilities) == ["neutral", "happy", "sad"]
    np.testing.assert_allclose(list(result.emotion_probabilities.values()), probs, atol=1e-5)


@pytest.mark.parametrize(("fps", "frames"), [(30, 60), (24, 48), (25, 50), (60, 120),
                                             (24000 / 1001, 48), (30000 / 1001, 60)])
def test_frame_count_at_any_fps(predictor, speech_wav, fps, frames):
    result = predictor.predict(speech_wav, fps=fps)
    assert result.values.shape == (frames, 52)
    assert result.fps == pytest.approx(fps)


def test_window_start_and_end(predictor, speech_wav):
    full = predictor.predict(speech_wav, controls=RAW)
    part = predictor.predict(speech_wav, start=0.5, end=1.5, controls=RAW)
    assert part.values.shape == (30, 52) and part.start == 0.5
    assert not np.allclose(part.values, full.values[15:45])  # the network saw another window


def test_postprocessing_is_seeded_and_clamped(predictor, speech_wav):
    a = predictor.predict(speech_wav, controls=Controls(postprocess=PostProcess(seed=7)))
    b = predictor.predict(speech_wav, controls=Controls(postprocess=PostProcess(seed=7)))
    np.testing.assert_array_equal(a.values, b.values)
    assert a.values.min() >= 0 and a.values.max() <= 1
    long = speechlike(12.0, seed=1)
    c, d = (predictor.predict(long, sample_rate=16000,
                              controls=Controls(postprocess=PostProcess(seed=seed)))
            for seed in (1, 2))
    assert not np.array_equal(c.values[:, 8], d.values[:, 8])  # blink timing follows the seed
    np.testing.assert_array_equal(np.delete(c.values, [8, 9], 1), np.delete(d.values, [8, 9], 1))


def test_emotion_controls(predictor, speech_wav, tmp_path):
    own = predictor.predict(speech_wav, controls=RAW).values
    zero = predictor.predict(speech_wav, controls=Controls(
        emotion=EmotionControl("preset", "happy", strength=0.0), postprocess=None)).values
    np.testing.assert_allclose(zero, own, atol=1e-5)
    happy = predictor.predict(speech_wav, controls=Controls(
        emotion=EmotionControl("preset", "happy"), postprocess=None)).values
    assert np.abs(happy - own).mean() > 1e-3
    # The clip as its own reference gives its own emotion features.
    same = predictor.predict(speech_wav, controls=Controls(
        emotion=EmotionControl("reference", reference=str(speech_wav)), postprocess=None)).values
    np.testing.assert_allclose(same, own, atol=1e-4)
    with pytest.raises(ControlError, match="unknown emotion preset 'joyful'.*happy"):
        predictor.predict(speech_wav, controls=Controls(emotion=EmotionControl("preset", "joyful")))
    with pytest.raises(ControlError, match="strength"):
        EmotionControl("preset", "happy", strength=1.5)
    with pytest.raises(ControlError, match="needs a reference clip"):
        EmotionControl("reference")


def test_style_controls(predictor, speech_wav):
    p3 = predictor.predict(speech_wav, controls=Controls(person=3, postprocess=None)).values
    w3 = predictor.predict(speech_wav, controls=Controls(person_weights={3: 2.0},
                                                         postprocess=None)).values
    np.testing.assert_allclose(w3, p3, atol=1e-5)
    p0 = predictor.predict(speech_wav, controls=RAW).values
    mix = predictor.predict(speech_wav, controls=Controls(person_weights={0: 1, 3: 1},
                                                          postprocess=None)).values
    assert not np.allclose(mix, p0) and not np.allclose(mix, p3)
    with pytest.raises(ControlError, match="person 24 is out of range"):
        predictor.predict(speech_wav, controls=Controls(person=24))
    with pytest.raises(ControlError, match="level"):
        Controls(level=-0.1)
    with pytest.raises(ControlError, match="all be zero"):
        Controls(person_weights={1: 0.0})


def test_silence_is_a_valid_neutral_input(predictor):
    result = predictor.predict(np.zeros(16000, np.float32), sample_rate=16000)
    assert result.values.shape == (30, 52) and np.isfinite(result.values).all()


def test_windows_cover_the_clip_and_fades_sum_to_one():
    for total in (10, 5000, 5001, 18000, 9700):
        windows = list(plan_windows(total, 5000, 300))
        coverage = np.zeros(total)
        for first, last, fade_in, fade_out in windows:
            assert first % 3 == 0 and last - first <= 5000
            coverage[first:last] += crossfade_weights(last - first, fade_in, fade_out)
        np.testing.assert_allclose(coverage, 1.0, atol=1e-6)


class LocalStubNet(torch.nn.Module):
    """Each output frame is the mean |sample| of its own 1/30 s of audio: no context at all, so
    windowed and one-pass runs must agree exactly when windows are aligned right."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def progress_modules(self):
        return []

    contact_head = None

    def encode_content(self, audio, lengths, frames, phones=None):
        t = int(frames[0])
        edges = np.ceil(np.arange(t + 1) * 16000 / 30).astype(int)
        x = audio[0].abs()
        return torch.stack([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)]
                           )[None, :, None]  # (1, T, 1)

    def encode_emotion(self, audio, lengths, frames):
        return audio.new_zeros(1, int(frames[0]), 1), audio.new_zeros(1, 3)

    def decode_features(self, content, emotion, level, person):
        return content.expand(-1, -1, 52)

    def head(self, features):
        return features

    def contact(self, features):
        return None


def test_windows_are_aligned_with_the_audio(tiny_model_dir):
    from emotalk_core.checkpoint import LoadedModel, load_model

    stub = LocalStubNet(load_model(tiny_model_dir).config)
    audio = speechlike(20.0, seed=2) * np.linspace(0.2, 2.0, 320000, dtype=np.float32)
    one_pass = Predictor(LoadedModel(stub), device="cpu")
    chunked = Predictor(LoadedModel(stub), device="cpu", max_one_pass_frames=150,
                        chunk_overlap_frames=45)
    ref = one_pass.predict(audio, sample_rate=16000, controls=RAW).values
    got = chunked.predict(audio, sample_rate=16000, controls=RAW).values
    assert len(list(plan_windows(600, 150, 45))) == 6
    direct = stub.encode_content(torch.from_numpy(audio)[None], None, [600])[0, :, 0].numpy()
    np.testing.assert_allclose(ref[:, 0], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_chunked_long_audio_agrees_with_one_pass(tiny_model_dir):
    audio = speechlike(12.0, seed=5)
    one_pass = Predictor(tiny_model_dir, device="cpu", max_one_pass_frames=5000)
    chunked = Predictor(tiny_model_dir, device="cpu", max_one_pass_frames=150,
                        chunk_overlap_frames=45)
    ref = one_pass.predict(audio, sample_rate=16000, controls=RAW).values
    got = chunked.predict(audio, sample_rate=16000, controls=RAW).values
    assert got.shape == ref.shape == (360, 52)
    windows = list(plan_windows(360, 150, 45))
    assert len(windows) == 3
    scale = np.abs(ref).mean()
    # Each window sees 5 s of audio instead of 12 s: close to one pass, not equal.
    for first, last, _, _ in windows:
        assert np.abs(got[first:last] - ref[first:last]).mean() < 0.05 * scale
    # In each overlap the two windows' predictions blend without a jump.
    jumps = np.abs(np.diff(got, axis=0)).max()
    assert jumps < 2 * np.abs(np.diff(ref, axis=0)).max() + 0.02 * scale


def test_progress_reaches_total_and_cancel_stops(predictor, speech_wav):
    seen = []
    predictor.predict(speech_wav, progress=lambda d, t, m: seen.append((d, t, m)))
    assert seen[-1][0] == seen[-1][1] and len(seen) > 5
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:], strict=False))
    calls = []

    def cancel_after_three() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        predictor.predict(speech_wav, cancel=cancel_after_three)
    assert predictor.predict(speech_wav).values.shape == (60, 52)  # still usable
