"""Post-processing of predicted blendshape curves: smoothing, seeded blinks, mouth amplitude,
clamping and frame-rate resampling.

The network predicts (T, 52) curves at 30 fps. The released EmoTalk smooths them with a
Savitzky-Golay filter and overwrites the blink channels with synthetic blinks, because the
network cannot learn blinks from audio (they do not correlate with speech). We do the same, but
with a seed so that a bake is reproducible, and with the blink shape defined in seconds.

Post-processing is meant to run at the model's frame rate (30 fps), before `resample`: the
smoothing window is five frames, which is the released behaviour only at 30 fps.

numpy and scipy only: the add-on side and tools without torch may import this module.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import savgol_filter

from .arkit import BLINK_CHANNELS, INDEX, MOUTH_CHANNELS, NUM_CHANNELS
from .config import FPS
from .controls import PostProcess, checked_count, checked_real
from .errors import ControlError

# Savitzky-Golay settings of the released EmoTalk demo.
SMOOTH_WINDOW = 5
SMOOTH_ORDER = 2

# Blink timing, in seconds. Intervals are measured from one blink to the next.
BLINK_MIN_INTERVAL = 2.0
BLINK_MAX_INTERVAL = 6.0
BLINK_FIRST_EARLIEST = 0.5  # no blink right at the start of a clip
BLINK_FIRST_LATEST = 3.0
BLINK_CLOSE = 0.07  # eyelid closing: fast
BLINK_HOLD = 0.03  # fully closed
BLINK_OPEN = 0.15  # eyelid opening: slower

def smooth(values: np.ndarray) -> np.ndarray:
    """Savitzky-Golay (window 5, order 2) along time on every channel, as the released EmoTalk
    does: it removes frame-to-frame jitter while keeping mouth closures sharp. Clips shorter
    than the window are returned unchanged (the filter is undefined for them)."""
    data = _checked_values(values)
    if data.shape[0] < SMOOTH_WINDOW:
        return data.astype(np.float32)
    return savgol_filter(data, SMOOTH_WINDOW, SMOOTH_ORDER, axis=0).astype(np.float32)


def add_blinks(values: np.ndarray, fps: float = FPS, seed: int = 0) -> np.ndarray:
    """Replace the blink channels by natural blinks (both eyes together, one every 2 to 6 s).

    The network cannot predict blinks from audio, so whatever it outputs there is noise. The
    timing comes only from `seed`, so the same seed gives the same blinks, and a longer clip
    starts with the same blinks as a shorter one. Each blink's peak lands on a frame so that the
    eye closes fully at any frame rate. Between blinks the channels are 0.
    """
    data = _checked_values(values).astype(np.float32)
    rate = _check_fps(fps, "fps")
    curve = np.zeros(data.shape[0], dtype=np.float64)
    for peak in blink_peaks(data.shape[0], rate, seed):
        _draw_blink(curve, peak, rate)
    for channel in BLINK_CHANNELS:
        data[:, channel] = curve
    return data


def blink_peaks(num_frames: int, fps: float = FPS, seed: int = 0) -> list[int]:
    """Frame indices of the blink peaks (eyes fully closed) that `add_blinks` draws.

    Computed in whole frames so that rounding never drifts and intervals stay within
    2..6 s; only blinks that fit completely inside the clip are kept, so a clip never ends
    with the eyes shut."""
    rate = _check_fps(fps, "fps")
    rng = np.random.default_rng(checked_count(seed, "blink seed"))
    lo = math.ceil(BLINK_MIN_INTERVAL * rate - 1e-9)
    hi = math.floor(BLINK_MAX_INTERVAL * rate + 1e-9)
    first = rng.uniform(BLINK_FIRST_EARLIEST, BLINK_FIRST_LATEST) + BLINK_CLOSE
    peak = math.ceil(first * rate - 1e-9)
    last_fit = (num_frames - 1) - (BLINK_HOLD + BLINK_OPEN) * rate
    peaks: list[int] = []
    while peak <= last_fit:
        peaks.append(peak)
        step = round(rng.uniform(BLINK_MIN_INTERVAL, BLINK_MAX_INTERVAL) * rate)
        peak += min(max(step, lo), hi)
    return peaks


def blink_shape(seconds: np.ndarray) -> np.ndarray:
    """Eyelid closure at `seconds` from the moment the eye is fully closed: a quick
    half-cosine close, a short hold at 1, a slower half-cosine open; 0 outside the blink."""
    t = np.asarray(seconds, dtype=np.float64)
    out = np.zeros_like(t)
    closing = (t >= -BLINK_CLOSE) & (t < 0.0)
    out[closing] = 0.5 - 0.5 * np.cos(np.pi * (t[closing] + BLINK_CLOSE) / BLINK_CLOSE)
    out[(t >= 0.0) & (t <= BLINK_HOLD)] = 1.0
    opening = (t > BLINK_HOLD) & (t <= BLINK_HOLD + BLINK_OPEN)
    out[opening] = 0.5 + 0.5 * np.cos(np.pi * (t[opening] - BLINK_HOLD) / BLINK_OPEN)
    return out


def _draw_blink(curve: np.ndarray, peak: int, fps: float) -> None:
    """Write one blink whose closed moment is frame `peak` into `curve` (max with what is
    there, so overlapping blinks never cancel)."""
    start = max(0, math.floor(peak - BLINK_CLOSE * fps))
    stop = min(curve.shape[0], math.ceil(peak + (BLINK_HOLD + BLINK_OPEN) * fps) + 1)
    frames = np.arange(start, stop)
    curve[start:stop] = np.maximum(curve[start:stop], blink_shape((frames - peak) / fps))


def scale_mouth(values: np.ndarray, amplitude: float) -> np.ndarray:
    """Multiply the mouth and jaw channels (arkit.MOUTH_CHANNELS) by `amplitude`: the
    animator's control for mumbled or over-articulated speech. Other channels are untouched."""
    data = _checked_values(values).astype(np.float32)
    factor = checked_real(amplitude, "mouth amplitude")
    if factor < 0.0:
        raise ControlError(f"mouth amplitude must not be negative, got {factor:g}")
    data[:, list(MOUTH_CHANNELS)] *= np.float32(factor)
    return data


def clamp(values: np.ndarray) -> np.ndarray:
    """Clip to [0, 1], the range shape keys and ARKit consumers expect (the network itself
    is not squashed, because its training data slightly leaves that range)."""
    return np.clip(_checked_values(values), 0.0, 1.0).astype(np.float32)


def apply(values: np.ndarray, settings: PostProcess, fps: float = FPS,
          contact: np.ndarray | None = None, closures: np.ndarray | None = None) -> np.ndarray:
    """Run the enabled steps in the released order: smooth, then articulation (with a
    lip-contact probability per frame, `contact` (T,), and/or frames known to be closed,
    `closures` (T,) in [0, 1]), then blinks (so the blink shape is not smoothed away), then
    mouth amplitude, then clamp (last, so nothing leaves [0, 1]). Returns a new float32
    (T, 52) array; the input is never modified."""
    if not isinstance(settings, PostProcess):
        raise ControlError(
            f"post-processing settings must be a PostProcess, got {type(settings).__name__}"
        )
    data = _checked_values(values).astype(np.float32)  # always a copy
    rate = _check_fps(fps, "fps")
    if settings.smooth:
        data = smooth(data)
    if settings.articulate and (contact is not None or closures is not None):
        data = articulate(data, contact, closures)
    if settings.blinks:
        data = add_blinks(data, rate, settings.seed)
    if settings.mouth_amplitude != 1.0:
        data = scale_mouth(data, settings.mouth_amplitude)
    if settings.clamp:
        data = clamp(data)
    return data


# Lip contact: below CONTACT_LOW the curves stay as predicted, above CONTACT_HIGH the lips
# shut fully, linearly in between (a confident decision, with soft edges rather than a jump).
# Lower values shut more bilabials on voices the network has not heard, and more vowels too
# (emotalk_core/weights/README.md has the measurements).
CONTACT_LOW = 0.4
CONTACT_HIGH = 0.7
_JAW = INDEX["jawOpen"]
_CLOSE = INDEX["mouthClose"]
# Channels that part the lips beyond the jaw's opening (the lip-closure aperture's terms).
_LIP_OPENERS = tuple(INDEX[n] for n in ("mouthLowerDownLeft", "mouthLowerDownRight",
                                        "mouthUpperUpLeft", "mouthUpperUpRight", "mouthFunnel"))


def contact_weight(contact: np.ndarray) -> np.ndarray:
    """(T,) lip-contact probabilities -> (T,) closing weights in [0, 1]: a three-frame median
    first, so one stray frame neither opens nor shuts the lips."""
    p = np.asarray(contact, dtype=np.float64)
    if p.size >= 3:
        padded = np.concatenate([p[:1], p, p[-1:]])
        p = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return np.clip((p - CONTACT_LOW) / (CONTACT_HIGH - CONTACT_LOW), 0.0, 1.0)


def articulate(values: np.ndarray, contact: np.ndarray | None,
               closures: np.ndarray | None = None) -> np.ndarray:
    """Shut the lips where the model is confident they touch (`contact` (T,) probabilities,
    through `contact_weight`) or where they are known to touch (`closures` (T,) weights, e.g.
    a transcript's aligned bilabials): with weight w per frame, mouthClose moves towards
    jawOpen (ARKit's "lips together over an open jaw") and the channels that part the lips
    scale by 1 - w, so the mouth's aperture scales by 1 - w while the jaw keeps its motion.
    values (T, 52) -> new (T, 52)."""
    data = _checked_values(values).astype(np.float32)
    w = np.zeros(data.shape[0], dtype=np.float32)
    for name, given in (("lip contact", contact), ("closures", closures)):
        if given is None:
            continue
        if np.shape(given) != (data.shape[0],):
            raise ControlError(f"{name} must have one value per frame ({data.shape[0]}), got "
                               f"shape {np.shape(given)}")
        weight = contact_weight(given) if name == "lip contact" else np.clip(given, 0.0, 1.0)
        w = np.maximum(w, weight.astype(np.float32))
    data[:, _CLOSE] += w * (data[:, _JAW] - data[:, _CLOSE])
    data[:, list(_LIP_OPENERS)] *= (1.0 - w)[:, None]
    return data


def resample(values: np.ndarray, src_fps: float, dst_fps: float, num_frames: int) -> np.ndarray:
    """Linear interpolation in time from `src_fps` to `dst_fps`, giving `num_frames` frames.

    Output frame i is at time i / dst_fps, source frame k at k / src_fps; times past the last
    source frame hold its value (a scene's last frame may reach beyond the audio). Pass NTSC
    rates exactly (24000 / 1001, or Blender's fps / fps_base), not rounded to 23.976.
    """
    data = _checked_values(values)
    src = _check_fps(src_fps, "source fps")
    dst = _check_fps(dst_fps, "target fps")
    count = checked_count(num_frames, "number of frames")
    if count == 0:
        return np.zeros((0, NUM_CHANNELS), dtype=np.float32)
    if data.shape[0] == 0:
        raise ControlError("cannot resample an empty clip to a non-zero number of frames")
    if src == dst:
        held = np.minimum(np.arange(count), data.shape[0] - 1)
        return data[held].astype(np.float32)
    position = np.minimum(np.arange(count, dtype=np.float64) * (src / dst), data.shape[0] - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, data.shape[0] - 1)
    weight = (position - lower)[:, None]
    source = data.astype(np.float64)
    mixed = source[lower] * (1.0 - weight) + source[upper] * weight
    return mixed.astype(np.float32)


def _checked_values(values: np.ndarray) -> np.ndarray:
    """`values` as a real (T, 52) array of finite numbers; anything else is a caller's bug
    that must fail here with a clear message rather than as garbage curves later."""
    try:
        data = np.asarray(values)
    except Exception as exc:  # any failure to convert is the caller's misuse
        raise ControlError(f"blendshape values must be an array: {exc}") from exc
    if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ControlError(f"blendshape values must be real numbers, got dtype {data.dtype}")
    if data.ndim != 2 or data.shape[1] != NUM_CHANNELS:
        raise ControlError(
            f"blendshape values must have shape (frames, {NUM_CHANNELS}), got {data.shape}"
        )
    if not np.all(np.isfinite(data)):
        raise ControlError("blendshape values contain NaN or infinite entries")
    return data


def _check_fps(value: object, what: str) -> float:
    rate = checked_real(value, what)
    if rate <= 0.0:
        raise ControlError(f"{what} must be positive, got {rate:g}")
    return rate
