"""Tests of emotalk_core.audio: decoding, downmix, resampling, windows and error reporting.

Every file is written here, with soundfile or (formats only FFmpeg reads) PyAV, so the tests
need no data and run in seconds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core import audio
from emotalk_core.audio import audio_duration, load_audio, num_frames, prepare_array
from emotalk_core.errors import AudioError, ControlError, EmoTalkError

SR = 16000


def _sine(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(x: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def _write(path: Path, data: np.ndarray, rate: int, **kwargs) -> Path:
    sf.write(str(path), data, rate, **kwargs)
    return path


# ---------------------------------------------------------------------------------------------
# Formats, sample widths and rates


@pytest.mark.parametrize(
    ("name", "rate", "kwargs"),
    [
        ("u8.wav", 16000, {"subtype": "PCM_U8"}),
        ("s16.wav", 16000, {"subtype": "PCM_16"}),
        ("s24.wav", 22050, {"subtype": "PCM_24"}),
        ("s32.wav", 48000, {"subtype": "PCM_32"}),
        ("f32.wav", 44100, {"subtype": "FLOAT"}),
        ("f64.wav", 8000, {"subtype": "DOUBLE"}),
        ("a.flac", 44100, {"format": "FLAC", "subtype": "PCM_16"}),
    ],
)
def test_lossless_formats_load_as_16k_mono_float32(tmp_path, name, rate, kwargs):
    seconds = 1.5
    path = _write(tmp_path / name, _sine(rate, seconds), rate, **kwargs)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags["C_CONTIGUOUS"]
    assert abs(len(out) - seconds * SR) <= 1
    # The 16 kHz result must be the same sine, in phase (no delay added by the resampler).
    expected = _sine(SR, seconds)[: len(out)]
    tolerance = 0.02 if "u8" in name else 2e-3  # 8-bit PCM is coarse
    assert np.abs(out[200:-200] - expected[200:-200]).max() < tolerance


@pytest.mark.parametrize(
    ("name", "rate", "kwargs"),
    [
        ("a.ogg", 44100, {"format": "OGG", "subtype": "VORBIS"}),
        ("a.mp3", 44100, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
        ("b.mp3", 8000, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    ],
)
def test_lossy_formats_keep_length_and_pitch(tmp_path, name, rate, kwargs):
    seconds = 2.0
    path = _write(tmp_path / name, _sine(rate, seconds), rate, **kwargs)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - seconds * SR) <= 0.01 * SR
    assert abs(_dominant_hz(out) - 440.0) <= 1.0
    assert 0.3 < np.abs(out).max() < 0.7


@pytest.mark.parametrize("rate", [8000, 44100, 192000])
def test_resampling_keeps_frequency_and_length(tmp_path, rate):
    path = _write(tmp_path / f"sine_{rate}.wav", _sine(rate, 2.0), rate, subtype="FLOAT")
    out = load_audio(path)
    assert len(out) == 2 * SR
    assert abs(_dominant_hz(out) - 440.0) <= 0.5
    reference = _sine(SR, 2.0)
    assert np.abs(out[100:-100] - reference[100:-100]).max() < 2e-3


def test_resampler_is_high_quality(tmp_path):
    # A 7 kHz tone sits inside the 16 kHz passband and must keep its level; a 10 kHz tone is
    # above 8 kHz and must be filtered out instead of aliasing to 6 kHz.
    kept = load_audio(
        _write(tmp_path / "7k.wav", _sine(44100, 1.0, 7000.0, 1.0), 44100, subtype="FLOAT")
    )
    removed = load_audio(
        _write(tmp_path / "10k.wav", _sine(44100, 1.0, 10000.0, 1.0), 44100, subtype="FLOAT")
    )
    assert np.abs(kept[500:-500]).max() > 0.995
    assert np.abs(removed[500:-500]).max() < 1e-3


def test_16k_input_is_returned_unchanged(tmp_path):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32)
    out = load_audio(_write(tmp_path / "x.wav", data, SR, subtype="FLOAT"))
    np.testing.assert_array_equal(out, data)


# ---------------------------------------------------------------------------------------------
# Downmix


def test_stereo_is_averaged(tmp_path):
    rng = np.random.default_rng(1)
    stereo = rng.uniform(-0.5, 0.5, (3000, 2)).astype(np.float32)
    out = load_audio(_write(tmp_path / "st.wav", stereo, SR, subtype="FLOAT"))
    np.testing.assert_allclose(out, stereo.mean(axis=1), atol=1e-7)


def test_six_channels_are_averaged(tmp_path):
    levels = np.linspace(-0.3, 0.6, 6, dtype=np.float32)
    data = np.tile(levels, (2000, 1))
    data[:, 0] += _sine(SR, 2000 / SR, amp=0.2)
    out = load_audio(_write(tmp_path / "six.wav", data, SR, subtype="FLOAT"))
    np.testing.assert_allclose(out, data.mean(axis=1), atol=1e-6)


def test_stereo_at_44k_is_downmixed_then_resampled(tmp_path):
    left, right = _sine(44100, 1.0, amp=0.6), _sine(44100, 1.0, amp=0.2)
    out = load_audio(_write(tmp_path / "st44.wav", np.stack([left, right], 1), 44100))
    np.testing.assert_allclose(out[100:-100], _sine(SR, 1.0, amp=0.4)[100:-100], atol=2e-3)


# ---------------------------------------------------------------------------------------------
# Windows


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
@pytest.mark.parametrize(("start", "end"), [(0.5, 1.5), (0.0, 1.0), (1.0, None), (0.123, 2.9)])
def test_window_equals_slice_of_full_load(tmp_path, rate, start, end):
    rng = np.random.default_rng(2)
    data = (_sine(rate, 3.0) + 0.1 * rng.standard_normal(3 * rate)).astype(np.float32)
    path = _write(tmp_path / "w.wav", data, rate, subtype="FLOAT")
    full = load_audio(path)
    window = load_audio(path, start, end)
    first = round(start * SR)
    expected_len = round(((end if end is not None else 3.0) - start) * SR)
    assert len(window) == expected_len
    np.testing.assert_allclose(window, full[first : first + expected_len], atol=1e-5)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("w.mp3", {"format": "MP3"}), ("w.ogg", {"format": "OGG", "subtype": "VORBIS"})],
)
def test_window_of_compressed_file_equals_slice(tmp_path, name, kwargs):
    # libsndfile's MP3/Vorbis seeks (and multi-call MP3 reads) land off the right sample.
    path = _write(tmp_path / name, _sine(44100, 4.0), 44100, **kwargs)
    full = load_audio(path)
    for start, end in [(0.5, 1.5), (3.0, None)]:
        window = load_audio(path, start, end)
        first = round(start * SR)
        np.testing.assert_allclose(window, full[first : first + len(window)], atol=1e-4)
        assert len(window) == round(((end or 4.0) - start) * SR)


def test_window_reads_only_the_window(tmp_path, monkeypatch):
    rate = 16000
    path = _write(tmp_path / "long.wav", np.zeros(rate * 20, np.int16), rate)
    requested: list[int] = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    out = load_audio(path, 15.0, 16.0)
    assert len(out) == SR
    assert requested and sum(requested) < 2 * rate  # one second plus a little context


def test_end_past_clip_by_less_than_a_sample_is_clipped(tmp_path):
    path = _write(tmp_path / "c.wav", _sine(SR, 1.0), SR)
    out = load_audio(path, 0.5, 1.0 + 0.5 / SR)
    assert len(out) == SR // 2


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (-0.1, None, "negative"),
        (1.0, None, "past the end"),
        (5.0, 6.0, "past the end"),
        (0.5, 0.5, "not after"),
        (0.6, 0.2, "not after"),
        (0.0, 1.01, "past the end"),
        (float("nan"), None, "finite"),
        (0.0, float("inf"), "finite"),
        ("0.5", None, "not a number"),
    ],
)
def test_bad_windows_raise_control_error_with_duration(tmp_path, start, end, words):
    path = _write(tmp_path / "clip.wav", _sine(SR, 1.0), SR)
    with pytest.raises(ControlError) as info:
        load_audio(path, start, end)
    message = str(info.value)
    assert words in message and "clip.wav" in message
    if words in ("negative", "past the end", "not after"):
        assert "duration 1.000 s" in message


def test_window_too_short_for_one_sample_is_empty(tmp_path):
    path = _write(tmp_path / "clip.wav", _sine(SR, 1.0), SR)
    with pytest.raises(AudioError, match="no audio samples.*longer window"):
        load_audio(path, 0.2, 0.2 + 0.2 / SR)


# ---------------------------------------------------------------------------------------------
# Bad files


def _assert_names(exc: EmoTalkError, path: Path, *words: str) -> None:
    message = str(exc)
    assert path.name in message, message
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "does not exist", "check the path")


def test_directory(tmp_path):
    folder = tmp_path / "takes.wav"
    folder.mkdir()
    with pytest.raises(AudioError) as info:
        load_audio(folder)
    _assert_names(info.value, folder, "is a folder")


def _truncated_header(path: Path) -> None:
    _write(path, _sine(SR, 0.5), SR)
    path.write_bytes(path.read_bytes()[:20])


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("notes.wav", lambda p: p.write_text("these are my notes, not audio\n" * 20)),
        ("truncated.wav", _truncated_header),
        ("random.wav", lambda p: p.write_bytes(np.random.default_rng(3).bytes(4000))),
        ("random.mp3", lambda p: p.write_bytes(np.random.default_rng(4).bytes(4000))),
        ("random.flac", lambda p: p.write_bytes(np.random.default_rng(5).bytes(4000))),
    ],
)
def test_files_that_are_not_audio(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "cannot read", "as audio", "convert it to WAV/FLAC/MP3/OGG")
    with pytest.raises(AudioError):
        audio_duration(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "empty")


def test_wav_without_samples(tmp_path):
    path = _write(tmp_path / "none.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "no audio samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    data = _sine(SR, 0.2)
    data[100] = bad
    path = _write(tmp_path / "bad.wav", data, SR, subtype="FLOAT")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "NaN or infinite")


def test_errors_are_chained_not_leaked(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("plain text")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert isinstance(info.value.__cause__, sf.SoundFileError)
    assert not isinstance(info.value, RuntimeError)


def test_digital_silence_is_valid(tmp_path):
    path = _write(tmp_path / "silence.wav", np.zeros(44100, np.int16), 44100)
    out = load_audio(path)
    assert len(out) == SR and not out.any()


# ---------------------------------------------------------------------------------------------
# FFmpeg formats (PyAV): what Blender plays and libsndfile does not


def write_ffmpeg(
    path: str | Path, samples: np.ndarray, rate: int, *, codec: str = "aac",
    video: bool = False, audio: bool = True,
) -> Path:
    """Encode float samples ((S,) or (S, C)) with PyAV into `path`'s container (by extension).

    `video` adds a small black picture stream, interleaved with the sound as cameras write it
    (reference footage); `audio=False` writes the picture alone. Also run by the bpy tests in
    the backend's interpreter, where PyAV is installed.
    """
    import av

    data = np.asarray(samples, np.float32).reshape(len(samples), -1).T  # (C, S)
    layout = "mono" if data.shape[0] == 1 else "stereo"
    seconds = data.shape[1] / rate
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=25) if video else None
        if picture is not None:
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(codec, rate=rate, layout=layout) if audio else None
        frame_count = math.ceil(seconds * 25) if video else 0
        shown = 0
        for first in range(0, data.shape[1], 1024):
            while shown < frame_count and shown / 25 <= first / rate:
                _mux_picture(out, picture, shown)
                shown += 1
            if sound is not None:
                chunk = np.ascontiguousarray(data[:, first : first + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, first
                out.mux(sound.encode(frame))
        while shown < frame_count:
            _mux_picture(out, picture, shown)
            shown += 1
        for stream in (sound, picture):
            if stream is not None:
                out.mux(stream.encode(None))
    return Path(path)


def _mux_picture(out, stream, index: int) -> None:
    import av

    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
    frame.pts = index
    out.mux(stream.encode(frame))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


# file name, audio encoder, with a picture stream, channels, sample rate, and whether the
# container states the exact length (mp4/mov: then windows seek instead of decoding from the start)
FFMPEG_CASES = [
    pytest.param("line.m4a", "aac", False, 1, 44100, True, id="m4a"),
    pytest.param("take.mp4", "aac", True, 2, 48000, True, id="mp4-stereo"),
    pytest.param("take.mov", "aac", True, 1, 44100, True, id="mov"),
    pytest.param("take.mkv", "aac", True, 1, 22050, False, id="mkv"),
    pytest.param("line.webm", "libopus", False, 1, 48000, False, id="webm-opus"),
]


def _speech(rate: int, channels: int, seconds: float = 3.0) -> np.ndarray:
    from tests.conftest import speechlike

    mono = speechlike(seconds, seed=5, sr=rate)
    return mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)


@pytest.mark.parametrize(("name", "codec", "video", "channels", "rate", "exact"), FFMPEG_CASES)
def test_ffmpeg_formats_match_the_wav(tmp_path, name, codec, video, channels, rate, exact):
    samples = _speech(rate, channels)
    wav = load_audio(_write(tmp_path / "same.wav", samples, rate, subtype="FLOAT"))
    path = write_ffmpeg(tmp_path / name, samples, rate, codec=codec, video=video)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags["C_CONTIGUOUS"]
    if exact:  # mp4/mov state their length: the codec's padding is cut off
        assert len(out) == len(wav) == 3 * SR
        assert audio_duration(path) == pytest.approx(3.0, abs=1e-6)
    else:  # the clip is what decodes (the last codec frame's padding included)
        assert 0 <= len(out) - len(wav) <= 0.03 * SR
        assert audio_duration(path) == pytest.approx(3.0, abs=0.05)
    assert _correlation(out, wav) > 0.98  # lossy, but in time with the WAV (no codec delay)


@pytest.mark.parametrize(("name", "codec", "video", "channels", "rate", "exact"), FFMPEG_CASES)
@pytest.mark.parametrize(("start", "end"), [(0.25, 1.0), (1.5, 2.5), (2.0, None)])
def test_ffmpeg_window_matches_the_wav_window(
    tmp_path, name, codec, video, channels, rate, exact, start, end
):
    samples = _speech(rate, channels)
    wav = _write(tmp_path / "same.wav", samples, rate, subtype="FLOAT")
    path = write_ffmpeg(tmp_path / name, samples, rate, codec=codec, video=video)
    window = load_audio(path, start, end)
    expected = load_audio(wav, start, end if end is not None else 3.0)
    if exact or end is not None:
        assert len(window) == len(expected) == round(((end or 3.0) - start) * SR)
    assert _correlation(window, expected) > 0.98
    full = load_audio(path)
    first = round(start * SR)
    # The full load's slice. After a seek (mp4/mov windows past the codec's 0.5 s warm-up),
    # AAC's noise substitution draws other random values: the same waveform, not the same bits.
    assert _correlation(window, full[first : first + len(window)]) > 0.99
    if not exact or start < 0.5:  # decoded from the start: identical
        np.testing.assert_allclose(window, full[first : first + len(window)], atol=1e-5)


def test_ffmpeg_window_of_a_long_file_decodes_only_the_window(tmp_path, monkeypatch):
    rate = 44100
    path = write_ffmpeg(tmp_path / "long.m4a", _speech(rate, 1, seconds=30.0), rate)
    decoded: list[int] = []
    original = audio._mono

    def spy(frame, *args):
        decoded.append(frame.samples)
        return original(frame, *args)

    monkeypatch.setattr(audio, "_mono", spy)
    out = load_audio(path, 25.0, 26.0)
    assert len(out) == SR
    assert 0 < sum(decoded) < 2 * rate  # one second, the codec's warm-up and resampler context


def test_ffmpeg_bad_window_states_the_duration(tmp_path):
    path = write_ffmpeg(tmp_path / "line.m4a", _speech(44100, 1, 1.0), 44100)
    with pytest.raises(ControlError) as info:
        load_audio(path, 0.5, 2.0)
    _assert_names(info.value, path, "past the end", "duration 1.000 s")


def test_soundfile_formats_never_reach_ffmpeg(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("libsndfile's formats must not be decoded by FFmpeg")

    monkeypatch.setattr(audio, "_load_ffmpeg", refuse)
    monkeypatch.setattr(audio, "_ffmpeg_duration", refuse)
    for name, kwargs in [("a.wav", {}), ("a.flac", {"format": "FLAC"}),
                         ("a.ogg", {"format": "OGG"}), ("a.mp3", {"format": "MP3"})]:
        path = _write(tmp_path / name, _sine(44100, 1.0), 44100, **kwargs)
        assert abs(len(load_audio(path, 0.25, 0.75)) - SR // 2) <= 1
        assert audio_duration(path) == pytest.approx(1.0, abs=0.05)


def test_video_without_sound(tmp_path):
    path = write_ffmpeg(tmp_path / "silent.mov", np.zeros(44100, np.float32), 44100, video=True,
                        audio=False)
    for call in (lambda: load_audio(path), lambda: load_audio(path, 0.1, 0.5),
                 lambda: audio_duration(path)):
        with pytest.raises(AudioError) as info:
            call()
        _assert_names(info.value, path, "has no audio stream", "choose a file with sound")


def _damaged(path: Path) -> None:
    """An m4a whose AAC data is overwritten with noise (its index, written last, intact)."""
    write_ffmpeg(path, _speech(44100, 1, 2.0), 44100)
    data = bytearray(path.read_bytes())
    lo, hi = len(data) // 10, len(data) // 2
    data[lo:hi] = np.random.default_rng(1).bytes(hi - lo)
    path.write_bytes(bytes(data))


def _cut_in_half(path: Path) -> None:
    """An m4a cut short: the index (written last) is gone."""
    write_ffmpeg(path, _speech(44100, 1, 2.0), 44100)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("damaged.m4a", _damaged, "may be damaged"),
        ("cut.m4a", _cut_in_half, "neither libsndfile nor FFmpeg recognises it"),
        ("random.mov", lambda p: p.write_bytes(np.random.default_rng(6).bytes(4000)),
         "neither libsndfile nor FFmpeg recognises it"),
    ],
)
def test_damaged_ffmpeg_files(tmp_path, name, make, words):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "cannot read", "as audio", words,
                  "convert it to WAV/FLAC/MP3/OGG")


def test_role_names_the_file_in_every_error(tmp_path):
    role = "emotion reference clip"
    missing = tmp_path / "angry.m4a"
    with pytest.raises(AudioError) as info:
        load_audio(missing, role=role)
    _assert_names(info.value, missing, f"{role} {missing}", "does not exist")
    damaged = tmp_path / "damaged.m4a"
    _damaged(damaged)
    with pytest.raises(AudioError) as info:
        load_audio(damaged, role=role)
    _assert_names(info.value, damaged, f"cannot read {role} {damaged} as audio")
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio")
    with pytest.raises(AudioError) as info:
        audio_duration(notes, role=role)
    _assert_names(info.value, notes, f"cannot read {role} {notes} as audio")
    silent = write_ffmpeg(tmp_path / "silent.mp4", np.zeros(16000, np.float32), 16000,
                          video=True, audio=False)
    with pytest.raises(AudioError) as info:
        load_audio(silent, role=role)
    _assert_names(info.value, silent, f"{role} {silent} has no audio stream")


def test_without_pyav_the_message_says_how_to_get_it(tmp_path, monkeypatch):
    path = write_ffmpeg(tmp_path / "line.m4a", _speech(44100, 1, 1.0), 44100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(AudioError) as info:
        load_audio(path)
    _assert_names(info.value, path, "cannot read", "pip install av",
                  "convert the file to WAV/FLAC/MP3/OGG")


# ---------------------------------------------------------------------------------------------
# Duration and frame count


def test_audio_duration(tmp_path):
    path = _write(tmp_path / "d.flac", _sine(44100, 1.5), 44100, format="FLAC")
    assert audio_duration(path) == pytest.approx(1.5)
    with pytest.raises(AudioError, match="does not exist"):
        audio_duration(tmp_path / "missing.wav")


@pytest.mark.parametrize(
    ("samples", "frames"),
    [(32000, 60), (52800, 99), (1, 1), (0, 0), (16000, 30), (16001, 31), (533, 1), (534, 2)],
)
def test_num_frames(samples, frames):
    assert num_frames(samples) == frames


def test_num_frames_is_the_released_float_formula():
    for samples in range(0, 200000, 37):
        assert num_frames(samples) == math.ceil(samples / 16000 * 30)
    # Exactly 249 frames of audio, but the released float formula gives 250: keep it that way.
    assert num_frames(132800) == 250
    assert num_frames(48000, fps=60) == 180
    assert num_frames(44100, fps=30, sample_rate=44100) == 30


# ---------------------------------------------------------------------------------------------
# In-memory arrays


def test_prepare_array_matches_load_audio(tmp_path):
    data = np.stack([_sine(44100, 2.0), _sine(44100, 2.0, 300.0)], axis=1)
    path = _write(tmp_path / "m.wav", data, 44100, subtype="FLOAT")
    np.testing.assert_allclose(prepare_array(data, 44100), load_audio(path), atol=1e-6)
    np.testing.assert_allclose(
        prepare_array(data, 44100, 0.5, 1.25), load_audio(path, 0.5, 1.25), atol=1e-6
    )


def test_prepare_array_scales_integer_pcm():
    pcm16 = np.array([0, 16384, -32768], dtype=np.int16)
    np.testing.assert_allclose(prepare_array(pcm16, SR), [0.0, 0.5, -1.0])
    pcm8 = np.array([128, 192, 0], dtype=np.uint8)
    np.testing.assert_allclose(prepare_array(pcm8, SR), [0.0, 0.5, -1.0])


@pytest.mark.parametrize(
    ("samples", "rate", "words"),
    [
        (np.zeros(0, np.float32), SR, "no audio samples"),
        (np.zeros((2, 48000), np.float32), SR, "transposing"),
        (np.zeros((4, 4, 4), np.float32), SR, "shape"),
        (np.array([0.0, np.nan]), SR, "NaN"),
        (np.array(["a", "b"]), SR, "float or integer"),
        (np.zeros(100, np.float32), 0, "positive"),
        (np.zeros(100, np.float32), float("nan"), "positive"),
    ],
)
def test_prepare_array_rejects_bad_input(samples, rate, words):
    with pytest.raises(AudioError) as info:
        prepare_array(samples, rate, source="strip 'Dialog.001'")
    assert words in str(info.value) and "Dialog.001" in str(info.value)


def test_prepare_array_window_errors_are_control_errors():
    with pytest.raises(ControlError, match="duration 1.000 s"):
        prepare_array(np.zeros(SR, np.float32), SR, 2.0, 3.0)


def test_module_does_not_import_torch():
    source = Path(audio.__file__).read_text()
    assert "import torch" not in source
