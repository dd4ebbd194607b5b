"""Post-processing: released smoothing, seeded blinks, mouth amplitude, clamp, resampling."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import savgol_filter

from emotalk_core import postprocess as pp
from emotalk_core.arkit import BLINK_CHANNELS, INDEX, MOUTH_CHANNELS, NUM_CHANNELS
from emotalk_core.errors import ControlError

NTSC_FILM = 24000 / 1001
NTSC = 30000 / 1001
ALL_FPS = (NTSC_FILM, 24.0, 25.0, NTSC, 30.0, 60.0)
LEFT, RIGHT = BLINK_CHANNELS


def _random(frames: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.2, 1.2, (frames, NUM_CHANNELS)).astype(np.float32)


def _blink_runs(curve: np.ndarray, threshold: float = 0.0) -> list[tuple[int, int]]:
    """(first, last) frame of each stretch where the curve is above `threshold`."""
    above = np.concatenate([[False], curve > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


# --- smoothing -------------------------------------------------------------------------------


def test_smooth_equals_scipy_savgol_window5_order2():
    values = _random()
    expected = savgol_filter(values, 5, 2, axis=0)
    out = pp.smooth(values)
    assert out.dtype == np.float32 and out.shape == values.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    # Not a no-op, and not some other window: window 7 gives a visibly different result.
    assert not np.allclose(out, values, atol=1e-3)
    assert not np.allclose(out, savgol_filter(values, 7, 2, axis=0), atol=1e-3)


def test_smooth_reduces_high_frequency_noise():
    t = np.arange(300) / 30.0
    clean = 0.5 + 0.3 * np.sin(2 * np.pi * 0.7 * t)
    noise = np.random.default_rng(1).normal(0.0, 0.05, (300, NUM_CHANNELS))
    noisy = (clean[:, None] + noise).astype(np.float32)
    out = pp.smooth(noisy)
    error_before = np.sqrt(np.mean((noisy - clean[:, None]) ** 2))
    error_after = np.sqrt(np.mean((out - clean[:, None]) ** 2))
    assert error_after < 0.75 * error_before
    assert np.std(np.diff(out, axis=0)) < 0.6 * np.std(np.diff(noisy, axis=0))


@pytest.mark.parametrize("frames", [0, 1, 4])
def test_smooth_leaves_clips_shorter_than_the_window_unchanged(frames):
    values = _random(frames)
    np.testing.assert_array_equal(pp.smooth(values), values)


# --- blinks ----------------------------------------------------------------------------------


def test_blinks_are_reproducible_and_depend_on_the_seed():
    values = _random(900)
    a = pp.add_blinks(values, 30, seed=7)
    b = pp.add_blinks(values, 30, seed=7)
    c = pp.add_blinks(values, 30, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, LEFT], c[:, LEFT])


def test_blinks_touch_only_the_blink_channels_and_both_eyes_match():
    values = _random(600)
    out = pp.add_blinks(values, 30, seed=3)
    others = [i for i in range(NUM_CHANNELS) if i not in BLINK_CHANNELS]
    np.testing.assert_array_equal(out[:, others], values[:, others])
    np.testing.assert_array_equal(out[:, LEFT], out[:, RIGHT])
    # The network's blink output is replaced, not kept: 0 between blinks.
    assert np.min(out[:, LEFT]) == 0.0
    assert np.mean(out[:, LEFT] == 0.0) > 0.8


@pytest.mark.parametrize("fps", ALL_FPS)
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_blink_timing_shape_and_peak_in_seconds(fps, seed):
    frames = int(120 * fps)
    curve = pp.add_blinks(np.zeros((frames, NUM_CHANNELS)), fps, seed)[:, LEFT]
    runs = _blink_runs(curve)
    assert len(runs) >= 120 / 6 - 1
    assert runs[0][0] / fps >= 0.5  # no blink right at the start
    onsets = np.array([first for first, _ in _blink_runs(curve, 0.5)])
    intervals = np.diff(onsets) / fps
    assert intervals.min() >= 2.0 - 1e-9 and intervals.max() <= 6.0 + 1e-9
    for first, last in runs:
        blink = curve[first : last + 1]
        assert blink.max() == pytest.approx(1.0, abs=1e-6)  # the eye closes fully
        assert 0.15 <= (last - first + 1) / fps <= 0.35  # about 0.2-0.3 s
        closing = np.argmax(blink) + 1
        assert closing < len(blink) - closing  # fast close, slower open
    assert curve[-1] == 0.0  # never ends with the eyes shut


def test_first_blink_is_never_right_at_the_start():
    starts = []
    for seed in range(300):
        curve = pp.add_blinks(np.zeros((120, NUM_CHANNELS)), 30, seed)[:, LEFT]
        starts.append(np.flatnonzero(curve)[0] / 30 if curve.any() else math.inf)
    assert min(starts) >= 0.5
    assert min(starts) < 0.7  # ... but soon after it for some seeds
    assert np.mean(np.isfinite(starts)) > 0.5  # most 4 s clips get a blink


def test_blink_rate_is_natural_and_independent_of_fps():
    means = []
    for fps in (24.0, 60.0):
        curve = pp.add_blinks(np.zeros((int(600 * fps), NUM_CHANNELS)), fps, 0)[:, LEFT]
        onsets = np.array([first for first, _ in _blink_runs(curve, 0.5)])
        means.append(np.mean(np.diff(onsets)) / fps)
    for mean in means:
        assert 3.5 <= mean <= 4.5  # uniform 2..6 s
    assert means[0] == pytest.approx(means[1], abs=0.05)


def test_blinks_of_a_longer_clip_start_like_a_shorter_one():
    short = pp.add_blinks(np.zeros((300, NUM_CHANNELS)), 30, 5)
    long = pp.add_blinks(np.zeros((900, NUM_CHANNELS)), 30, 5)
    np.testing.assert_array_equal(short[:250], long[:250])


def test_blinks_on_clips_too_short_for_a_blink():
    out = pp.add_blinks(_random(10), 30, 0)
    assert np.all(out[:, list(BLINK_CHANNELS)] == 0.0)
    assert pp.add_blinks(np.zeros((0, NUM_CHANNELS)), 30, 0).shape == (0, NUM_CHANNELS)


# --- mouth amplitude and clamp ---------------------------------------------------------------


def test_scale_mouth_touches_only_mouth_channels():
    values = _random()
    out = pp.scale_mouth(values, 1.5)
    mouth = list(MOUTH_CHANNELS)
    others = [i for i in range(NUM_CHANNELS) if i not in MOUTH_CHANNELS]
    assert INDEX["jawOpen"] in mouth and INDEX["mouthClose"] in mouth
    assert not set(BLINK_CHANNELS) & set(mouth) and INDEX["browInnerUp"] not in mouth
    np.testing.assert_allclose(out[:, mouth], values[:, mouth] * 1.5, rtol=1e-6)
    np.testing.assert_array_equal(out[:, others], values[:, others])
    assert np.all(pp.scale_mouth(values, 0.0)[:, mouth] == 0.0)


def test_clamp_bounds():
    values = _random()
    assert values.min() < 0 and values.max() > 1
    out = pp.clamp(values)
    assert out.min() == 0.0 and out.max() == 1.0
    inside = (values >= 0) & (values <= 1)
    np.testing.assert_array_equal(out[inside], values[inside])


# --- apply -----------------------------------------------------------------------------------


def test_apply_runs_steps_in_order_and_never_mutates_input():
    values = _random(300)
    before = values.copy()
    settings = pp.PostProcess(seed=4, mouth_amplitude=2.0)
    out = pp.apply(values, settings)
    np.testing.assert_array_equal(values, before)
    assert out.dtype == np.float32 and out.shape == values.shape and out is not values
    expected = pp.clamp(pp.scale_mouth(pp.add_blinks(pp.smooth(values), 30, 4), 2.0))
    np.testing.assert_array_equal(out, expected)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_apply_with_everything_off_is_a_float32_copy():
    values = _random().astype(np.float64)
    off = pp.PostProcess(smooth=False, blinks=False, clamp=False)
    out = pp.apply(values, off)
    assert out.dtype == np.float32 and not np.shares_memory(out, values)
    np.testing.assert_array_equal(out, values.astype(np.float32))


def test_apply_steps_are_switchable():
    values = _random(200)
    no_blinks = pp.apply(values, pp.PostProcess(blinks=False, clamp=False))
    np.testing.assert_allclose(no_blinks, savgol_filter(values, 5, 2, axis=0), atol=1e-6)
    blinks_only = pp.apply(values, pp.PostProcess(smooth=False, clamp=False, seed=9), fps=60)
    np.testing.assert_array_equal(blinks_only, pp.add_blinks(values, 60, 9))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mouth_amplitude": -0.1},
        {"mouth_amplitude": 3.01},
        {"mouth_amplitude": math.nan},
        {"mouth_amplitude": math.inf},
        {"mouth_amplitude": "1"},
        {"mouth_amplitude": True},
        {"seed": -1},
        {"seed": 1.5},
        {"seed": True},
        {"seed": "3"},
        {"smooth": "false"},
        {"blinks": 1},
        {"clamp": None},
    ],
)
def test_postprocess_settings_are_validated(kwargs):
    with pytest.raises(ControlError) as info:
        pp.PostProcess(**kwargs)
    assert next(iter(kwargs)) in str(info.value) or "seed" in str(info.value)


def test_postprocess_settings_accept_the_range_limits():
    assert pp.PostProcess(mouth_amplitude=0).mouth_amplitude == 0.0
    assert isinstance(pp.PostProcess(mouth_amplitude=3).mouth_amplitude, float)
    assert pp.PostProcess(seed=np.int64(2**40)).seed == 2**40


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 51)),
        np.zeros(52),
        np.zeros((2, 10, 52)),
        np.full((10, 52), np.nan),
        np.array([["a"] * 52]),
        "values",
        None,
    ],
)
def test_every_function_rejects_bad_values(bad):
    calls = [
        lambda: pp.smooth(bad),
        lambda: pp.add_blinks(bad),
        lambda: pp.scale_mouth(bad, 1.0),
        lambda: pp.clamp(bad),
        lambda: pp.apply(bad, pp.PostProcess()),
        lambda: pp.resample(bad, 30, 24, 5),
    ]
    for call in calls:
        with pytest.raises(ControlError):
            call()


def test_bad_arguments_raise_control_error():
    values = _random(20)
    with pytest.raises(ControlError):
        pp.add_blinks(values, fps=0)
    with pytest.raises(ControlError):
        pp.add_blinks(values, seed=-3)
    with pytest.raises(ControlError):
        pp.scale_mouth(values, -1.0)
    with pytest.raises(ControlError):
        pp.apply(values, {"smooth": True})  # type: ignore[arg-type]
    with pytest.raises(ControlError):
        pp.apply(values, pp.PostProcess(), fps=-30)


# --- resampling ------------------------------------------------------------------------------


def test_resample_same_fps_same_length_is_an_exact_copy():
    values = _random(90)
    out = pp.resample(values, 30, 30, 90)
    np.testing.assert_array_equal(out, values)
    assert not np.shares_memory(out, values)


@pytest.mark.parametrize(
    ("dst", "frame", "source_position"),
    [
        (24.0, 3, 3.75),  # 3 / 24 s = frame 3.75 at 30 fps
        (25.0, 2, 2.4),
        (60.0, 7, 3.5),
        (NTSC, 100, 100 * 30 / NTSC),
        (NTSC_FILM, 10, 10 * 30 / NTSC_FILM),
    ],
)
def test_resample_interpolates_linearly_at_the_right_time(dst, frame, source_position):
    values = _random(200, seed=2)
    out = pp.resample(values, 30, dst, 150)
    k = math.floor(source_position)
    w = source_position - k
    expected = (1 - w) * values[k].astype(np.float64) + w * values[k + 1].astype(np.float64)
    np.testing.assert_allclose(out[frame], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dst", ALL_FPS)
def test_resample_of_a_ramp_is_exact_and_holds_the_last_value(dst):
    src_frames = 61  # 2 s at 30 fps
    ramp = np.repeat((np.arange(src_frames) / 30.0)[:, None], NUM_CHANNELS, axis=1)
    count = math.ceil(3 * dst)  # a second past the end of the audio
    out = pp.resample(ramp, 30, dst, count)
    assert out.shape == (count, NUM_CHANNELS) and out.dtype == np.float32
    times = np.arange(count) / dst
    expected = np.minimum(times, 2.0)
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(out[:, 0], out[:, -1])


def test_resample_lengths_zero_one_and_fraction_fps():
    values = _random(30)
    assert pp.resample(values, 30, 24, 0).shape == (0, NUM_CHANNELS)
    np.testing.assert_array_equal(pp.resample(values, 30, 24, 1), values[:1])
    a = pp.resample(values, 30, Fraction(24000, 1001), 24)
    b = pp.resample(values, 30, NTSC_FILM, 24)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        pp.resample(values, 30, 30, 40)[30:], np.repeat(values[-1:], 10, 0)
    )
    np.testing.assert_array_equal(pp.resample(values, 30, 30, 10), values[:10])


def test_resample_to_a_higher_rate_and_back_returns_the_source():
    values = _random(50)
    up = pp.resample(values, 30, 60, 100)
    np.testing.assert_allclose(pp.resample(up, 60, 30, 50), values, atol=1e-6)


@pytest.mark.parametrize(
    ("src", "dst", "count"),
    [(0, 30, 5), (30, -24, 5), (math.nan, 30, 5), (30, math.inf, 5), (30, 24, -1),
     (30, 24, 2.0), (30, 24, True), ("30", 24, 5)],
)  # fmt: skip
def test_resample_rejects_bad_arguments(src, dst, count):
    with pytest.raises(ControlError):
        pp.resample(_random(10), src, dst, count)


def test_resample_of_an_empty_clip():
    empty = np.zeros((0, NUM_CHANNELS), dtype=np.float32)
    assert pp.resample(empty, 30, 24, 0).shape == (0, NUM_CHANNELS)
    with pytest.raises(ControlError):
        pp.resample(empty, 30, 24, 3)


def test_articulation_scales_the_aperture_and_keeps_the_jaw():
    from emotalk_core.arkit import INDEX
    from emotalk_core.postprocess import articulate, contact_weight
    from training.metrics import aperture

    values = np.zeros((6, 52), np.float32)
    values[:, INDEX["jawOpen"]] = 0.4
    values[:, INDEX["mouthLowerDownLeft"]] = 0.2
    values[:, INDEX["mouthClose"]] = 0.05
    contact = np.array([0.0, 0.0, 0.9, 0.9, 0.9, 0.0])
    closures = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    out = articulate(values, contact, closures)
    w = np.maximum(contact_weight(contact), closures)
    np.testing.assert_allclose(aperture(out), (1 - w) * aperture(values), atol=1e-6)
    np.testing.assert_array_equal(out[:, INDEX["jawOpen"]], values[:, INDEX["jawOpen"]])
    assert aperture(out)[[0, 2, 3, 4]].max() < 1e-6 and aperture(out)[1] > 0.3
    # one confident frame alone does not shut the lips; a run of them does
    assert contact_weight(np.array([0.0, 0.95, 0.0, 0.0])).max() == 0.0
    assert contact_weight(np.array([0.0, 0.95, 0.95, 0.0]))[1:3].min() == 1.0
    with pytest.raises(ControlError, match="one value per frame"):
        articulate(values, contact[:3])
