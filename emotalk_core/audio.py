"""Load audio for the network: float32, mono, 16 kHz, optionally a time window of the clip.

Every wav2vec2 encoder expects mono speech at 16 kHz, whatever the user's file holds (stereo or
surround, 8 to 192 kHz, 8 to 32 bit, WAV/FLAC/OGG/MP3). Decoding goes through soundfile
(libsndfile), resampling through soxr at high quality; neither torch nor librosa is needed, so the
add-on side and light tools can import this module.

A window [start, end) is read from disk on its own (plus a little context for the resampler),
so a Blender strip that uses ten seconds of an hour-long recording does not load the hour. A
window is the matching slice of the whole clip's 16 kHz samples: its sample m is sample
round(start * 16000) + m of the full load (so it starts within half a sample, 31 us, of `start`).

Every failure is raised once as our own exception (`AudioError` for unreadable, empty or invalid
audio, `ControlError` for a window that does not fit the clip) with a message that names the file
and says what to do; no soundfile, soxr or numpy exception escapes.
"""

from __future__ import annotations

import math
import numbers
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .config import FPS, SAMPLE_RATE
from .errors import AudioError, ControlError, EmoTalkError, ResourceError
from .files import probe, require_file, shown

__all__ = ["audio_duration", "load_audio", "num_frames", "prepare_array"]

# Containers whose libsndfile seek is sample-exact. MP3 and Ogg Vorbis seeks can land hundreds of
# samples off (measured with libsndfile 1.2.2), so those are decoded from the start instead.
_EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})
# Formats that must be decoded in a single read call: libsndfile 1.2.2 corrupts mono MP3 at the
# boundary between two reads (samples jump by hundreds of frames), so a window of an MP3 costs
# decoding (and holding) everything before its end.
_SINGLE_READ_FORMATS = frozenset({"MP3"})
# Source-rate context read on each side of a window so that the resampler's filter sees the same
# neighbourhood as when the whole clip is resampled (soxr HQ needs a few milliseconds).
_CONTEXT_SECONDS = 0.05
_SKIP_BLOCK = 1 << 16  # frames decoded at a time while skipping to a window in a compressed file
_MAX_CHANNELS = 64  # more than this in an array almost certainly means (channels, samples)
_FORMATS_HINT = "convert it to WAV/FLAC/MP3/OGG"


def num_frames(num_samples: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of output frames for `num_samples` audio samples: the released EmoTalk formula.

    Computed in floating point exactly as the release does (`ceil(samples / rate * fps)`), because
    an exact rational formula differs by one frame for some lengths and the frame count must match
    the reference outputs.
    """
    return math.ceil(num_samples / sample_rate * fps)


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Duration of an audio file in seconds, from its header (nothing is decoded).

    A readable file that holds no samples gives 0.0; `load_audio` is the one that refuses it.
    """
    file = _checked_path(path)
    with _open(file) as f:
        return f.frames / f.samplerate if f.samplerate > 0 else 0.0


def load_audio(
    path: str | os.PathLike[str], start: float | None = None, end: float | None = None
) -> np.ndarray:
    """The window [start, end) seconds of an audio file as float32 mono at 16 kHz.

    `start` and `end` count from the file's beginning; None means the clip's start or end. An end
    past the clip by less than one output sample is clipped silently (rounding in callers that
    convert frames to seconds); anything further is a `ControlError` that states the duration.

    Only the window (plus 50 ms of resampler context) is decoded: WAV and FLAC seek to it, Ogg
    decodes and discards what precedes it, and MP3 is decoded from its start to the window's end
    in one call, the only way libsndfile 1.2.2 decodes mono MP3 correctly.
    """
    file = _checked_path(path)
    label = str(file)
    with _open(file) as f:
        window = _plan_window(f.frames, f.samplerate, start, end, label)
        chunk = _read_chunk(f, window, label)
        rate = f.samplerate
    return _finish(chunk, rate, window, label)


def prepare_array(
    samples: np.ndarray,
    sample_rate: float,
    start: float | None = None,
    end: float | None = None,
    *,
    source: str = "audio array",
) -> np.ndarray:
    """`load_audio` for samples already in memory, shaped (S,) or (S, C).

    Integer samples are scaled to [-1, 1) as libsndfile does (uint8 is offset binary). `source`
    names the array in error messages (a strip or clip name reads better than "audio array").
    """
    data = _as_float_frames(samples, source)
    rate = _checked_rate(sample_rate, source)
    window = _plan_window(data.shape[0], rate, start, end, source)
    return _finish(data[window.lo : window.hi], rate, window, source)


# ---------------------------------------------------------------------------------------------
# Files


def _checked_path(path: str | os.PathLike[str]) -> Path:
    """The path as a Path, after the checks that give clearer messages than libsndfile's."""
    try:
        file = Path(os.fspath(path))
    except TypeError as exc:
        raise AudioError(f"audio path {path!r:.80} is not a file path; pass a path string") \
            from exc
    status = probe(file, "audio file", AudioError)
    if status is None:
        raise AudioError(f"audio file {shown(file)} does not exist; check the path")
    if stat.S_ISDIR(status.st_mode):
        raise AudioError(f"{shown(file)} is a folder, not an audio file; choose an audio file "
                         "inside it")
    require_file(file, "audio file", AudioError, "choose an audio file")  # FIFOs, devices
    if not os.access(file, os.R_OK):
        raise AudioError(f"cannot open {shown(file)}: permission denied; make the file readable")
    if status.st_size == 0:
        raise AudioError(f"{shown(file)} is an empty file (0 bytes); choose a file with sound "
                         "in it")
    return file


def _open(file: Path) -> sf.SoundFile:
    """Open with libsndfile; a file it cannot parse is reported as not audio."""
    try:
        handle = sf.SoundFile(str(file))
    except MemoryError as exc:
        raise ResourceError(f"out of memory while opening {file}; close other programs") from exc
    except Exception as exc:  # libsndfile reports bad headers as several exception types
        raise AudioError(f"cannot read {file} as audio: {_reason(exc)}; {_FORMATS_HINT}") from exc
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioError(f"cannot read {file} as audio: invalid header; {_FORMATS_HINT}")
    return handle


def _reason(exc: BaseException) -> str:
    """A one-line reason from a libsndfile or OS error."""
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split()).rstrip(".")
    if "does not exist" in text:  # libsndfile's words for MPEG data it cannot sync to
        return "format not recognised or data damaged"
    return text


def _read_chunk(f: sf.SoundFile, window: _Window, label: str) -> np.ndarray:
    """Frames [window.lo, window.hi) of an open file as float32 (n, channels)."""
    try:
        if f.format in _SINGLE_READ_FORMATS:
            data = f.read(window.hi, dtype="float32", always_2d=True)
            return data[window.lo :] if window.lo else data
        if window.lo > 0:
            _skip_to(f, window.lo)
        return f.read(window.hi - window.lo, dtype="float32", always_2d=True)
    except MemoryError as exc:
        raise ResourceError(
            f"out of memory while reading {label}; load a shorter window (start/end)"
        ) from exc
    except Exception as exc:
        raise AudioError(
            f"cannot read {label} as audio: {_reason(exc)} (the file may be damaged); "
            f"{_FORMATS_HINT}"
        ) from exc


def _skip_to(f: sf.SoundFile, frame: int) -> None:
    """Position the decoder at `frame`: a seek where that is exact, else decode and discard."""
    if f.format in _EXACT_SEEK_FORMATS and f.seekable():
        f.seek(frame)
        return
    remaining = frame
    while remaining > 0:
        got = f.read(min(remaining, _SKIP_BLOCK), dtype="float32", always_2d=True).shape[0]
        if got == 0:  # the header overstated the length; the caller sees an empty chunk
            return
        remaining -= got


# ---------------------------------------------------------------------------------------------
# Arrays


def _as_float_frames(samples: np.ndarray, source: str) -> np.ndarray:
    """Validate an in-memory array and return it as float32 (S, C)."""
    try:
        data = np.asarray(samples)
    except Exception as exc:
        raise AudioError(f"{source} is not an array of samples: {_reason(exc)}") from exc
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(
            f"{source} has shape {data.shape}; pass samples shaped (samples,) or "
            "(samples, channels)"
        )
    if data.shape[1] > _MAX_CHANNELS:
        raise AudioError(
            f"{source} has shape {data.shape}, i.e. {data.shape[1]} channels; pass (samples, "
            "channels), transposing a (channels, samples) array"
        )
    return _to_float32(data, source)


def _to_float32(data: np.ndarray, source: str) -> np.ndarray:
    """Float32 samples; integer PCM scaled to [-1, 1) like libsndfile does."""
    kind = data.dtype.kind
    if kind == "f":
        return data.astype(np.float32, copy=False)
    if kind == "u" and data.dtype.itemsize == 1:
        return (data.astype(np.float32) - 128.0) / 128.0
    if kind == "i":
        scale = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) / scale).astype(np.float32)
    raise AudioError(f"{source} holds {data.dtype} values; pass float or integer PCM samples")


def _checked_rate(sample_rate: float, source: str) -> float:
    """A positive, finite sample rate (an int when it is integral, which soxr prefers)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise AudioError(f"{source}: sample rate {sample_rate!r} is not a number; pass Hz")
    rate = float(sample_rate)
    if not math.isfinite(rate) or rate <= 0:
        raise AudioError(f"{source}: sample rate {sample_rate!r} must be a positive number of Hz")
    return int(rate) if rate.is_integer() else rate


# ---------------------------------------------------------------------------------------------
# Windows, validation and resampling (shared by files and arrays)


@dataclass(frozen=True)
class _Window:
    """Source frames to decode, and which output samples of their resampling to keep.

    `lo:hi` includes resampler context around the window; output sample `offset` of the
    resampled chunk is at the window's start. `count` is None for the whole clip.
    """

    lo: int
    hi: int
    offset: int = 0
    count: int | None = None


def _plan_window(
    frames: int, rate: float, start: float | None, end: float | None, label: str
) -> _Window:
    """Validate [start, end) against the clip and choose what to decode."""
    if frames <= 0:
        raise AudioError(f"{label} contains no audio samples; choose a file with sound in it")
    start_s = _checked_time(start, "start", label)
    end_s = _checked_time(end, "end", label)
    if not start_s and end_s is None:
        return _Window(0, frames)
    duration = frames / rate
    begin, stop = _checked_window(start_s or 0.0, end_s, duration, label)
    count = round((stop - begin) * SAMPLE_RATE)
    if count <= 0:
        raise AudioError(
            f"the window [{begin:.6f}, {stop:.6f}) s of {label} holds no audio samples; "
            "choose a longer window"
        )
    context = math.ceil(_CONTEXT_SECONDS * rate)
    lo = _grid_floor(math.floor(begin * rate) - context, rate)
    hi = min(frames, math.ceil(stop * rate) + context)
    offset = round(begin * SAMPLE_RATE - lo * SAMPLE_RATE / rate)
    return _Window(lo, hi, offset, count)


def _grid_floor(frame: int, rate: float) -> int:
    """The largest source frame <= `frame` (and >= 0) that falls on a 16 kHz sample instant.

    Starting the decoded chunk there puts the resampled window on the same sample grid as the
    whole clip's resampling, so a window equals the matching slice of the full load instead of
    being shifted by a fraction of a sample (which changes high frequencies visibly).
    """
    if frame <= 0:
        return 0
    if not float(rate).is_integer():
        return frame
    step = int(rate) // math.gcd(int(rate), SAMPLE_RATE)  # source frames per common instant
    return frame - frame % step


def _checked_time(value: float | None, name: str, label: str) -> float | None:
    """A window bound as a finite float (or None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ControlError(f"window {name} {value!r} for {label} is not a number; pass seconds")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ControlError(f"window {name} {value!r} for {label} must be a finite number of s")
    return seconds


def _checked_window(
    start: float, end: float | None, duration: float, label: str
) -> tuple[float, float]:
    """The window clipped to the clip, or a ControlError that states the clip's duration."""
    clip = f"{label} (duration {duration:.3f} s)"
    if start < 0:
        raise ControlError(f"window start {start:.3f} s is negative for {clip}; use 0 or more")
    if start >= duration:
        raise ControlError(
            f"window start {start:.3f} s is at or past the end of {clip}; "
            f"choose a start before {duration:.3f} s"
        )
    if end is None:
        return start, duration
    if end <= start:
        raise ControlError(
            f"window end {end:.3f} s is not after its start {start:.3f} s for {clip}; "
            "choose an end after the start"
        )
    if end - duration >= 1.0 / SAMPLE_RATE:
        raise ControlError(
            f"window end {end:.3f} s is past the end of {clip}; choose an end at or before "
            f"{duration:.3f} s, or none for the clip's end"
        )
    return start, min(end, duration)


def _finish(chunk: np.ndarray, rate: float, window: _Window, label: str) -> np.ndarray:
    """Check, downmix, resample and cut out the window."""
    if chunk.shape[0] == 0:
        raise AudioError(f"{label} contains no audio samples; choose a file with sound in it")
    try:
        if not np.isfinite(chunk).all():
            raise AudioError(
                f"{label} contains NaN or infinite samples; re-export the audio from its source"
            )
        mono = chunk.mean(axis=1, dtype=np.float32) if chunk.shape[1] > 1 else chunk[:, 0]
        out = _resample(np.ascontiguousarray(mono, dtype=np.float32), rate)
    except EmoTalkError:
        raise
    except MemoryError as exc:
        raise ResourceError(
            f"out of memory while preparing {label}; load a shorter window (start/end)"
        ) from exc
    except Exception as exc:
        raise AudioError(f"cannot convert {label} to 16 kHz mono: {_reason(exc)}") from exc
    if window.count is not None:
        out = out[window.offset : window.offset + window.count]
    if out.shape[0] == 0:
        raise AudioError(f"the window of {label} holds no audio samples; choose a longer window")
    return np.ascontiguousarray(out, dtype=np.float32)


def _resample(mono: np.ndarray, rate: float) -> np.ndarray:
    """Mono float32 at `rate` to SAMPLE_RATE with soxr's high-quality filter."""
    if rate == SAMPLE_RATE:
        return mono
    return soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
