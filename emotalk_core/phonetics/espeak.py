"""espeak-ng through ctypes: speech samples plus the time of every phoneme.

The `espeakng-loader` wheel ships libespeak-ng and its data, so no system package is needed.
The library runs in AUDIO_OUTPUT_SYNCHRONOUS mode: `espeak_Synth` returns after calling our
callback with every buffer of samples and the events in it; espeakEVENT_PHONEME events carry
the phoneme mnemonic and its sample position, which become the teacher's phone timings.

The library is a process-wide singleton with hidden state: some of its wave generator's state
(flutter phase, noise generator) carries over from one utterance to the next and survives
espeak_Terminate. Output is therefore a function of the process's synthesis history, and the
corpus builder renders each group of clips in a freshly forked process to stay reproducible.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from .phonemes import SIL, STOPS, TimedPhone, expand, parse_mnemonic

SAMPLE_RATE = 16000

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
# Shortest phone kept as its own interval; shorter ones borrow time from their left neighbour.
_MIN_PHONE_S = 0.02
_BORROW_MAX_S = 0.05
# Stop closures: espeak reports voiceless (and utterance-initial) stops at their burst, after
# the silent closure. The lips close during that silence, so the stop's interval is moved
# back over it (searched up to this far, in frames of this size, under this level).
_CLOSURE_SEARCH_S = 0.12
_CLOSURE_AFTER_PAUSE_S = 0.08
_ENV_FRAME_S = 0.005
_CLOSURE_DB = -42.0


class EspeakError(RuntimeError):
    """espeak-ng is missing, failed to start, or rejected a voice or a text."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h (API revision 12)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class VoiceSettings:
    """What espeak_SetVoiceByName / espeak_SetParameter receive for one utterance.

    rate: words per minute (80..450, espeak default 175); pitch and range: 0..100 (default 50);
    volume: 0..200 (default 100); wordgap: extra pause between words in 10 ms units.
    """

    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100
    wordgap: int = 0


@dataclass(frozen=True)
class Utterance:
    """Synthesised speech: float32 mono samples at 16 kHz and the phones covering them."""

    audio: np.ndarray
    phones: list[TimedPhone]
    mnemonics: list[tuple[str, float]]

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def available() -> bool:
    """Whether the espeakng-loader wheel (library and data) is installed."""
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return False
    return True


class Espeak:
    """The process's espeak-ng library. Use `Espeak.get()`: the C library is a singleton."""

    _instance: Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EspeakError(
                "espeak-ng is not installed: pip install espeakng-loader (the 'train' extra)"
            ) from exc
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._declare()
        data_root = str(Path(espeakng_loader.get_data_path()).parent).encode()
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_root, options)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data in {data_root!r}")
        self.native_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: C holds a raw pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _declare(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
        ]  # fmt: skip
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]

    def _on_synth(self, wav, count: int, events) -> int:  # noqa: ANN001 (ctypes pointers)
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = event.id.string.decode("utf-8", "replace")
                self._events.append((name, int(event.sample)))
            i += 1
        return 0

    def _configure(self, settings: VoiceSettings) -> None:
        status = self._lib.espeak_SetVoiceByName(settings.voice.encode())
        if status != 0:
            raise EspeakError(f"espeak-ng has no voice {settings.voice!r} (status {status})")
        for key, code in _PARAM.items():
            self._lib.espeak_SetParameter(code, int(getattr(settings, key)), 0)

    def synthesize_raw(
        self, text: str, settings: VoiceSettings, seed: int = 0
    ) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """int16 samples at the native rate and (mnemonic with stress marks, seconds) events."""
        with self._lock:
            self._configure(settings)
            self._lib.espeak_ng_SetRandSeed(seed)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                            None, None)  # fmt: skip
            if status != 0:
                raise EspeakError(f"espeak_Synth failed ({status}) on {text!r}")
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return samples, [(name, pos / self.native_rate) for name, pos in events]

    def text_to_mnemonics(self, text: str, voice: str = "en-us") -> list[str]:
        """espeak's phoneme mnemonics for `text` without synthesising (pronunciations of words
        that the aligner's dictionary lacks)."""
        with self._lock:
            self._configure(VoiceSettings(voice=voice))
            buffer = ctypes.c_char_p(text.encode("utf-8"))
            pointer = ctypes.pointer(buffer)
            out: list[str] = []
            separator = ord(" ") << 8
            while buffer.value:
                result = self._lib.espeak_TextToPhonemes(pointer, _CHARS_UTF8, separator)
                if result:
                    out.extend(result.decode("utf-8", "replace").split())
        return [parse_mnemonic(m)[0] for m in out if parse_mnemonic(m)[0]]


def synthesize(
    text: str,
    settings: VoiceSettings,
    lead_s: float = 0.2,
    tail_s: float = 0.3,
    seed: int = 0,
) -> Utterance:
    """Speak `text`, resample to 16 kHz, pad with silence, and time its phones.

    Phone i spans from its event to the next event (the last one to the end of speech);
    pauses become SIL; stop intervals are moved back over their silent closures.
    """
    engine = Espeak.get()
    raw, events = engine.synthesize_raw(text, settings, seed)
    if raw.size == 0 or not events:
        raise EspeakError(f"espeak-ng produced no speech for {text!r}")
    speech = soxr.resample(raw.astype(np.float32) / 32768.0, engine.native_rate, SAMPLE_RATE)
    lead = np.zeros(int(round(lead_s * SAMPLE_RATE)), np.float32)
    tail = np.zeros(int(round(tail_s * SAMPLE_RATE)), np.float32)
    audio = np.concatenate([lead, speech.astype(np.float32), tail])
    speech_end = lead.size / SAMPLE_RATE + speech.size / SAMPLE_RATE
    shifted = [(name, t + lead.size / SAMPLE_RATE) for name, t in events]
    phones = phones_from_events(shifted, speech_end, audio.size / SAMPLE_RATE)
    phones = refine_stop_closures(phones, audio)
    return Utterance(audio=audio, phones=phones, mnemonics=shifted)


def phones_from_events(
    events: list[tuple[str, float]], speech_end: float, total: float
) -> list[TimedPhone]:
    """Contiguous phones covering [0, total] from (mnemonic, onset) events."""
    phones: list[TimedPhone] = []
    onsets = [t for _, t in events] + [speech_end]
    for (name, start), end in zip(events, onsets[1:], strict=True):
        mnemonic, stress = parse_mnemonic(name)
        phones.extend(expand(mnemonic, start, max(start, end), stress))
    phones = [TimedPhone(SIL, 0.0, phones[0].start if phones else total)] + phones
    phones.append(TimedPhone(SIL, phones[-1].end, total))
    return _merge_silences(_lengthen_short(phones))


def _lengthen_short(phones: list[TimedPhone]) -> list[TimedPhone]:
    """Give near-zero phones (espeak reports some final consonants at the same instant as the
    following pause) a share of their left neighbour, so every phone owns some time."""
    out: list[TimedPhone] = []
    for phone in phones:
        if phone.duration < _MIN_PHONE_S and phone.phone != SIL and out:
            prev = out[-1]
            borrow = min(_BORROW_MAX_S, 0.35 * prev.duration)
            cut = max(prev.start, phone.start - borrow)
            out[-1] = _retime(prev, prev.start, cut)
            phone = _retime(phone, cut, max(phone.end, cut + borrow))
        out.append(phone)
    return [p for p in out if p.duration > 0 or p.phone != SIL]


def _merge_silences(phones: list[TimedPhone]) -> list[TimedPhone]:
    out: list[TimedPhone] = []
    for phone in phones:
        if phone.duration <= 0:
            continue
        if out and phone.phone == SIL and out[-1].phone == SIL:
            out[-1] = _retime(out[-1], out[-1].start, phone.end)
        else:
            out.append(phone)
    # Intervals must tile time: fix rounding and borrowed overlaps.
    for i in range(1, len(out)):
        if out[i].start != out[i - 1].end:
            out[i] = _retime(out[i], out[i - 1].end, max(out[i].end, out[i - 1].end))
    return out


def _retime(phone: TimedPhone, start: float, end: float) -> TimedPhone:
    return TimedPhone(phone.phone, start, end, phone.stress, phone.reduced)


def refine_stop_closures(phones: list[TimedPhone], audio: np.ndarray) -> list[TimedPhone]:
    """Move each stop's start back over the near-silent closure that precedes its burst,
    taking the time from the left neighbour (never more than half of it)."""
    level = _envelope_db(audio)
    out = list(phones)
    for i in range(1, len(out)):
        phone = out[i]
        if phone.phone not in STOPS:
            continue
        prev = out[i - 1]
        limit = (
            _CLOSURE_AFTER_PAUSE_S
            if prev.phone == SIL
            else min(_CLOSURE_SEARCH_S, 0.5 * prev.duration)
        )
        start = _closure_start(level, phone.start, limit)
        if start < phone.start:
            out[i - 1] = _retime(prev, prev.start, start)
            out[i] = _retime(phone, start, phone.end)
    return out


def _envelope_db(audio: np.ndarray) -> np.ndarray:
    """RMS level in 5 ms frames, dB relative to the loudest frame."""
    hop = int(_ENV_FRAME_S * SAMPLE_RATE)
    count = audio.size // hop
    frames = audio[: count * hop].reshape(count, hop).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    return 20.0 * np.log10(rms / rms.max())


def _closure_start(level: np.ndarray, onset: float, limit: float) -> float:
    """Earliest time t >= onset - limit such that [t, onset) is all below the closure level."""
    frame = int(onset / _ENV_FRAME_S)
    steps = int(limit / _ENV_FRAME_S)
    k = frame
    while k > 0 and frame - k < steps and level[min(k - 1, level.size - 1)] < _CLOSURE_DB:
        k -= 1
    return min(onset, k * _ENV_FRAME_S)
