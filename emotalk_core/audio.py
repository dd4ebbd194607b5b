"""Load audio for the network: float32, mono, 16 kHz, optionally a time window of the clip.

Every wav2vec2 encoder expects mono speech at 16 kHz, whatever the user's file holds (stereo or
surround, 8 to 192 kHz, 8 to 32 bit). Decoding goes through soundfile (libsndfile: WAV, FLAC, OGG,
MP3, AIFF...) first, so those give the same samples as always; whatever libsndfile refuses goes to
FFmpeg through PyAV, which reads what Blender plays: m4a, aac, wma, opus, and the first audio
stream of a video (mp4, mov, mkv, webm, avi...). Resampling goes through soxr at high quality;
neither torch nor librosa is needed, and PyAV is imported only for such a file, so the add-on side
and light tools can import this module.

A window [start, end) is read from disk on its own (plus a little context for the resampler),
so a Blender strip that uses ten seconds of an hour-long recording does not load the hour. A
window is the matching slice of the whole clip's 16 kHz samples: its sample m is sample
round(start * 16000) + m of the full load (so it starts within half a sample, 31 us, of `start`).
The one exception: an AAC window that FFmpeg reaches by a seek has the same waveform but not the
same bits where the encoder used noise substitution (the decoder draws that noise at random).

Every failure is raised once as our own exception (`AudioError` for unreadable, empty or invalid
audio, `ControlError` for a window that does not fit the clip) with a message that names the file
(and its role, such as "emotion reference clip", when the caller gives one) and says what to do;
no soundfile, PyAV, soxr or numpy exception escapes.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

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
_FORMATS_HINT = "re-export it from its source, or convert it to WAV/FLAC/MP3/OGG"
# FFmpeg demuxers whose stream duration is the stored sample count (the edit list of mp4/mov),
# not an estimate: the decoder's padding after it is cut off, as players do. Elsewhere (raw AAC,
# Matroska) the duration is a bitrate or rounded estimate, so the clip is what decodes.
_STATED_LENGTH_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})
# Audio decoded before a window after an FFmpeg seek and thrown away: codecs need it to settle
# (AAC overlaps each frame with the previous one, Opus asks for 80 ms of pre-roll).
_SEEK_WARMUP_SECONDS = 0.5


def num_frames(num_samples: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of output frames for `num_samples` audio samples: the released EmoTalk formula.

    Computed in floating point exactly as the release does (`ceil(samples / rate * fps)`), because
    an exact rational formula differs by one frame for some lengths and the frame count must match
    the reference outputs.
    """
    return math.ceil(num_samples / sample_rate * fps)


def audio_duration(path: str | os.PathLike[str], *, role: str | None = None) -> float:
    """Duration of an audio file in seconds, from its header (nothing is decoded).

    A readable file that holds no samples gives 0.0; `load_audio` is the one that refuses it.
    Files that state no exact length (raw AAC, Matroska) give FFmpeg's estimate. `role` names
    the file in errors, as in `load_audio`.
    """
    file = _checked_path(path, role)
    label = _label(file, role)
    try:
        handle = _open(file, label)
    except _Refused as refused:
        return _ffmpeg_duration(file, label, refused.reason)
    with handle as f:
        return f.frames / f.samplerate if f.samplerate > 0 else 0.0


def load_audio(
    path: str | os.PathLike[str],
    start: float | None = None,
    end: float | None = None,
    *,
    role: str | None = None,
) -> np.ndarray:
    """The window [start, end) seconds of an audio file as float32 mono at 16 kHz.

    `start` and `end` count from the file's beginning; None means the clip's start or end. An end
    past the clip by less than one output sample is clipped silently (rounding in callers that
    convert frames to seconds); anything further is a `ControlError` that states the duration.
    `role` says what the file is to the caller ("emotion reference clip"); every error then names
    it so, instead of just the path.

    Only the window (plus 50 ms of resampler context) is decoded: WAV and FLAC seek to it, Ogg
    decodes and discards what precedes it, and MP3 is decoded from its start to the window's end
    in one call, the only way libsndfile 1.2.2 decodes mono MP3 correctly. FFmpeg's formats seek
    where the file states its length and frame timestamps count samples (mp4, mov, m4a);
    elsewhere (raw AAC, Matroska, WebM) they are decoded from the start, once through to count
    the clip's samples and once to the window's end, keeping no more than the window.
    """
    file = _checked_path(path, role)
    label = _label(file, role)
    try:
        handle = _open(file, label)
    except _Refused as refused:
        return _load_ffmpeg(file, start, end, label, refused.reason)
    with handle as f:
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


def _label(file: Path, role: str | None) -> str:
    """How messages name the file: its path, after its role when the caller gave one."""
    return f"{role} {file}" if role else str(file)


def _checked_path(path: str | os.PathLike[str], role: str | None = None) -> Path:
    """The path as a Path, after the checks that give clearer messages than libsndfile's."""
    noun = role or "audio file"
    try:
        file = Path(os.fspath(path))
    except TypeError as exc:
        raise AudioError(f"{role or 'audio'} path {path!r:.80} is not a file path; pass a path "
                         "string") from exc
    status = probe(file, noun, AudioError)
    if status is None:
        raise AudioError(f"{noun} {shown(file)} does not exist; check the path")
    where = f"{role} " if role else ""
    if stat.S_ISDIR(status.st_mode):
        raise AudioError(f"{where}{shown(file)} is a folder, not an audio file; choose an audio "
                         "file inside it")
    require_file(file, noun, AudioError, "choose an audio file")  # FIFOs, devices
    if not os.access(file, os.R_OK):
        raise AudioError(f"cannot open {where}{shown(file)}: permission denied; make the file "
                         "readable")
    if status.st_size == 0:
        raise AudioError(f"{where}{shown(file)} is an empty file (0 bytes); choose a file with "
                         "sound in it")
    return file


class _Refused(Exception):
    """libsndfile cannot parse the file (FFmpeg's turn); `reason` is libsndfile's error."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.reason = reason


class _InvalidHeader(Exception):
    """libsndfile opened the file but found no usable rate or channel count."""

    error_string = "invalid header"


def _open(file: Path, label: str) -> sf.SoundFile:
    """Open with libsndfile; a file it cannot parse raises `_Refused`, for FFmpeg to try."""
    try:
        handle = sf.SoundFile(str(file))
    except MemoryError as exc:
        raise ResourceError(f"out of memory while opening {label}; close other programs") \
            from exc
    except Exception as exc:  # libsndfile reports bad headers as several exception types
        raise _Refused(exc) from exc
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise _Refused(_InvalidHeader())
    return handle


def _reason(exc: BaseException) -> str:
    """A one-line reason from a libsndfile, FFmpeg or OS error."""
    text = (getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
            or type(exc).__name__)
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
# FFmpeg (PyAV): the formats libsndfile refuses


@dataclass(frozen=True)
class _Stream:
    """What the first audio stream of an FFmpeg input says about itself."""

    index: int
    rate: int
    stated: int | None  # frames per a stated (exact) length, else None
    estimate: float | None  # seconds per the container's header, maybe a bitrate estimate
    seekable: bool  # timestamps count whole samples from the stream's start


def _load_ffmpeg(
    file: Path, start: float | None, end: float | None, label: str, refused: BaseException
) -> np.ndarray:
    """`load_audio` for a file libsndfile refused."""
    info = _ffmpeg_stream(file, label, refused)
    if not start and end is None:
        chunk = _ffmpeg_read(file, info, 0, info.stated, label, refused)
        window = _plan_window(chunk.shape[0], info.rate, start, end, label)
    else:
        frames = info.stated
        if frames is None:  # no exact length in the header: count what decodes
            frames = _ffmpeg_count(file, info, label, refused)
        window = _plan_window(frames, info.rate, start, end, label)
        chunk = _ffmpeg_read(file, info, window.lo, window.hi, label, refused)
    return _finish(chunk, info.rate, window, label)


def _ffmpeg_duration(file: Path, label: str, refused: BaseException) -> float:
    """`audio_duration` for a file libsndfile refused: the stated length, else the header's
    estimate, else (no estimate either) what decodes."""
    info = _ffmpeg_stream(file, label, refused)
    if info.stated is not None:
        return info.stated / info.rate
    if info.estimate is not None:
        return info.estimate
    return _ffmpeg_count(file, info, label, refused) / info.rate


@contextlib.contextmanager
def _ffmpeg_input(file: Path, label: str, refused: BaseException) -> Iterator[Any]:
    """An open PyAV input container; errors name the file, chained to libsndfile's refusal."""
    try:
        import av
    except ImportError as exc:
        raise AudioError(
            f"cannot read {label} as audio: {_reason(refused)}, and PyAV, which reads m4a, aac, "
            f"mp4, mov and other FFmpeg formats, is not installed ({exc}); install it into the "
            f"backend's Python (pip install av), or convert the file to WAV/FLAC/MP3/OGG"
        ) from refused
    try:
        container = av.open(str(file), metadata_errors="ignore")
    except MemoryError as exc:
        raise ResourceError(f"out of memory while opening {label}; close other programs") \
            from exc
    except Exception as exc:  # FFmpeg's errors are OSError and ValueError subclasses
        raise AudioError(f"cannot read {label} as audio: {_reason(exc)} (neither libsndfile "
                         f"nor FFmpeg recognises it); {_FORMATS_HINT}") from refused
    try:
        yield container
    finally:
        container.close()


def _ffmpeg_stream(file: Path, label: str, refused: BaseException) -> _Stream:
    """The first audio stream's facts, or an AudioError when there is none."""
    with _ffmpeg_input(file, label, refused) as container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise AudioError(f"{label} has no audio stream (it holds {', '.join(kinds)}); "
                             "choose a file with sound in it, or add the sound to the video")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise AudioError(f"cannot read {label} as audio: its audio stream has no sample rate "
                             f"(the file may be damaged); {_FORMATS_HINT}") from refused
        base, start = stream.time_base, stream.start_time
        stated = None
        if container.format.name in _STATED_LENGTH_FORMATS and stream.duration and base:
            stated = round(stream.duration * base * rate)
        estimate = container.duration / 1_000_000 if container.duration else None
        seekable = bool(stated and base and start is not None and (base * rate).denominator == 1)
        return _Stream(stream.index, rate, stated, estimate, seekable)


def _ffmpeg_read(
    file: Path, info: _Stream, lo: int, hi: int | None, label: str, refused: BaseException
) -> np.ndarray:
    """Mono frames [lo, hi) (hi None: to the end) as float32 (n, 1)."""
    warmup = math.ceil(_SEEK_WARMUP_SECONDS * info.rate)
    found = None
    with _decoding(label):
        if info.seekable and lo - warmup > 0:
            with _ffmpeg_input(file, label, refused) as container:
                found = _collect(_seek_frames(container, info, lo - warmup, label), lo, hi)
        if found is None:
            with _ffmpeg_input(file, label, refused) as container:
                found = _collect(_counted_frames(container, info, label), lo, hi)
    if found is None or (found.shape[0] == 0 and lo == 0):
        _decoded_nothing(label, refused)
    return found


def _ffmpeg_count(file: Path, info: _Stream, label: str, refused: BaseException) -> int:
    """How many samples the first audio stream decodes to (nothing is kept)."""
    with _decoding(label), _ffmpeg_input(file, label, refused) as container:
        total = 0
        for frame in container.decode(container.streams[info.index]):
            total += frame.samples
    if total == 0:
        _decoded_nothing(label, refused)
    return total


def _decoded_nothing(label: str, refused: BaseException) -> NoReturn:
    raise AudioError(f"cannot read {label} as audio: FFmpeg decoded no samples from it (the "
                     f"file may be damaged); {_FORMATS_HINT}") from refused


@contextlib.contextmanager
def _decoding(label: str) -> Iterator[None]:
    """FFmpeg's decoding errors as AudioError (running out of memory as ResourceError)."""
    try:
        yield
    except EmoTalkError:
        raise
    except MemoryError as exc:
        raise ResourceError(
            f"out of memory while reading {label}; load a shorter window (start/end)"
        ) from exc
    except Exception as exc:
        raise AudioError(f"cannot read {label} as audio: {_reason(exc)} (the file may be "
                         f"damaged); {_FORMATS_HINT}") from exc


def _counted_frames(container: Any, info: _Stream, label: str) -> Iterator[tuple[int, np.ndarray]]:
    """(position, mono samples) of each decoded frame from the start, positions counted."""
    position = 0
    for frame in container.decode(container.streams[info.index]):
        samples = _mono(frame, info, label)
        yield position, samples
        position += samples.shape[0]


class _SeekMissed(Exception):
    """A seek did not land where samples can be counted from; decode from the start."""


def _seek_frames(
    container: Any, info: _Stream, target: int, label: str
) -> Iterator[tuple[int, np.ndarray]]:
    """(position, mono samples) of each frame from a seek to at most `target`, positions from
    the frames' timestamps; raises `_SeekMissed` (the caller then decodes from the start) when
    a frame has no timestamp or the seek landed after `target`."""
    stream = container.streams[info.index]
    base = Fraction(stream.time_base)
    container.seek(stream.start_time + math.floor(Fraction(target, info.rate) / base),
                   stream=stream, backward=True)
    first = True
    for frame in container.decode(stream):
        if frame.pts is None:
            raise _SeekMissed
        position = (frame.pts - stream.start_time) * base * info.rate
        if position.denominator != 1 or (first and position > target):
            raise _SeekMissed
        first = False
        yield int(position), _mono(frame, info, label)


def _collect(
    frames: Iterator[tuple[int, np.ndarray]], lo: int, hi: int | None
) -> np.ndarray | None:
    """Samples [lo, hi) from positioned frames as (n, 1); None when the frames' positions cannot
    be trusted."""
    parts: list[np.ndarray] = []
    try:
        for position, samples in frames:
            if hi is not None and position >= hi:
                break
            lo_in = max(lo - position, 0)
            hi_in = samples.shape[0] if hi is None else min(hi - position, samples.shape[0])
            if hi_in > lo_in:
                parts.append(samples[lo_in:hi_in])
    except _SeekMissed:
        return None
    if not parts:
        return np.zeros((0, 1), np.float32)
    return np.concatenate(parts)[:, None]


def _mono(frame: Any, info: _Stream, label: str) -> np.ndarray:
    """A decoded frame as mono float32 samples (n,): channels averaged, integers scaled."""
    if frame.sample_rate != info.rate:
        raise AudioError(f"{label} changes its sample rate inside the audio stream "
                         f"({info.rate} -> {frame.sample_rate} Hz); {_FORMATS_HINT}")
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    data = _to_float32(data, label)
    if channels > 1:
        return data.mean(axis=1, dtype=np.float32)
    return np.array(data[:, 0], dtype=np.float32)  # a copy: the frame's buffer is reused


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
