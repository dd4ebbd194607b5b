"""Phone-level forced alignment with pocketsphinx, and the lip-closure metric built on it.

`align_phones(audio, transcript)` gives ARPAbet phones (no stress digits, "SIL" for pauses)
with start and end seconds, from the en-us acoustic model and CMU dictionary inside the
pocketsphinx wheel. Words missing from the dictionary get espeak-ng's pronunciation mapped
through the same table as the synthetic corpus. Transcripts in other languages align through
the same English acoustic model, each word pronounced by espeak-ng in its language and mapped
onto the nearest English phones (`language=`). Uses: the real-speech labeller (the teacher
needs phone timings) and the evaluation's lip-closure AUC (DESIGN.md section 8, computed in
training/metrics.py, whose `frame_phones` gives each 30 fps frame its phone).

Alignment runs in two passes (pocketsphinx 5): `set_align_text` decodes a word sequence with
optional silences between words, then `set_alignment` re-decodes at the phone and state level.
pocketsphinx's word pass sometimes ends in a non-final grammar state ("Final result does not
match the grammar"), most often on low synthetic voices; a failed attempt is retried with
bestpath off and then without filler words (pauses then merge into the adjacent phones), and
only if all fail is an `AlignmentError` raised.
"""

from __future__ import annotations

import os
import re
import threading
import zlib
from pathlib import Path

import numpy as np

from .loop import decode_utterance, pcm16, phone_pass, tiling
from .phonemes import ARPABET, SIL, to_arpabet

SAMPLE_RATE = 16000
FPS = 30
ENGLISH = "en-us"  # espeak-ng's voice for the acoustic model's language
# Boundaries are taken at frame starts (k / 100 s), uncorrected: against CMU ARCTIC's labels
# (arctic_a0009) that gives 12.8 ms mean error; shifting by half a window (7.8 ms) would suit
# espeak-ng's phoneme times better (15 vs 18 ms) but real speech worse (18 ms).
# Decoder settings tried in order (see the module docstring).
_ATTEMPTS: tuple[dict[str, object], ...] = (
    {"bestpath": False, "beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100},
    {
        "bestpath": False,
        "beam": 1e-150,
        "wbeam": 1e-120,
        "pbeam": 1e-150,
        "maxhmmpf": -1,
        "maxwpf": -1,
    },
    {"bestpath": False, "beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100, "fsgusefiller": False},
)

Phones = list[tuple[str, float, float]]


class AlignmentError(RuntimeError):
    """Forced alignment could not match the transcript to the audio."""


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Transcripts

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(value: int) -> list[str]:
    """English words for 0 <= value < 1,000,000 ("one hundred twenty three")."""
    if value < 20:
        return [_ONES[value]]
    if value < 100:
        tens, ones = divmod(value, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return [_ONES[hundreds], "hundred"] + (number_words(rest) if rest else [])
    if value < 1_000_000:
        thousands, rest = divmod(value, 1000)
        return number_words(thousands) + ["thousand"] + (number_words(rest) if rest else [])
    return [_ONES[int(d)] for d in str(value)]


def normalise_transcript(text: str) -> list[str]:
    """Lower-case dictionary words: numbers spelt out, punctuation dropped, apostrophes kept
    inside words ("don't"), hyphens and slashes split words."""
    text = text.lower().replace("&", " and ").replace("%", " percent ")
    words: list[str] = []
    for token in re.split(r"[\s\-/]+", text):
        token = re.sub(r"[^a-z0-9']", "", token).strip("'")
        if not token:
            continue
        for part in re.findall(r"\d+|[a-z']+", token):
            words.extend(number_words(int(part)) if part.isdigit() else [part])
    return words


# ---------------------------------------------------------------------------------------------
# Decoders


class _Aligner:
    """One pocketsphinx decoder per attempt configuration, created on first use (loading the
    acoustic model takes a fraction of a second), plus the words added to their dictionaries."""

    def __init__(self) -> None:
        self._decoders: dict[int, object] = {}
        self._lock = threading.Lock()

    def decoder(self, attempt: int):  # noqa: ANN201 (pocketsphinx.Decoder)
        if attempt not in self._decoders:
            try:
                from pocketsphinx import Decoder
            except ImportError as exc:
                raise AlignmentError(
                    "pocketsphinx is not installed: pip install pocketsphinx (the 'train' extra)"
                ) from exc
            self._decoders[attempt] = Decoder(
                lm=None, samprate=SAMPLE_RATE, loglevel="FATAL", **_ATTEMPTS[attempt]
            )
        return self._decoders[attempt]

    def align(self, pcm: bytes, words: list[str],
              pronunciations: dict[str, list[str]] | None = None) -> Phones:  # fmt: skip
        """`pronunciations`: ARPAbet phones of words the dictionary lacks (others missing from
        it get espeak-ng's English pronunciation)."""
        with self._lock:
            failures = []
            for attempt in range(len(_ATTEMPTS)):
                decoder = self.decoder(attempt)
                _add_missing_words(decoder, words, pronunciations or {})
                try:
                    return _two_pass(decoder, pcm, words)
                except (RuntimeError, AlignmentError) as exc:
                    failures.append(f"{_ATTEMPTS[attempt] or 'defaults'}: {exc}")
        raise AlignmentError(
            f"forced alignment failed for {' '.join(words)!r} ({'; '.join(failures)})"
        )


_ALIGNER = _Aligner()


def _add_missing_words(decoder, words: list[str],  # noqa: ANN001
                       pronunciations: dict[str, list[str]]) -> None:
    """Give out-of-dictionary words their given pronunciation, else espeak-ng's English one."""
    for word in dict.fromkeys(words):
        if decoder.lookup_word(word) is None:
            phones = pronunciations.get(word) or _pronounce(word)
            decoder.add_word(word, " ".join(phones), True)


def _pronounce(word: str, language: str = ENGLISH) -> list[str]:
    """ARPAbet phones for a word as espeak-ng's voice for `language` says it. Sounds that
    English lacks map to the nearest English phone (a French "u" to UW, a rolled "r" to R):
    close enough to place the lip closures and vowels that the teacher animates."""
    from .espeak import Espeak, EspeakError, available

    if not available():
        raise AlignmentError(f"{word!r} is not in the pronunciation dictionary and espeak-ng "
                             "(espeakng-loader) is not installed to pronounce it")  # fmt: skip
    try:
        mnemonics = Espeak.get().text_to_mnemonics(word, voice=language)
    except EspeakError as exc:
        raise AlignmentError(f"cannot pronounce {word!r} ({language}): {exc}") from exc
    if language != ENGLISH:
        mnemonics = [m for m in mnemonics if not m.startswith("(")]  # "(en)" language switches
    # Only phones of the acoustic model: anything else would crash the decoder.
    phones = [p for m in mnemonics for p in _arpabet(m, language)
              if p != SIL and p in ARPABET]  # fmt: skip
    if not phones:
        raise AlignmentError(f"cannot pronounce {word!r} ({language})")
    return phones


def _two_pass(decoder, pcm: bytes, words: list[str]) -> Phones:  # noqa: ANN001
    decoder.set_align_text(" ".join(words))
    decode_utterance(decoder, pcm)
    hyp = decoder.hyp()
    if hyp is None or _clean_words(hyp.hypstr) != words:
        got = "nothing" if hyp is None else repr(hyp.hypstr)
        raise AlignmentError(f"word pass matched {got}")
    segments = phone_pass(decoder, pcm)
    if segments is None:
        raise AlignmentError("phone pass produced no alignment")
    return tiling(segments)


# espeak-ng mnemonics of other languages that the English table lacks, or that it splits
# differently, with their nearest English phones; then the overrides of single languages.
FOREIGN_MNEMONICS: dict[str, tuple[str, ...]] = {
    "y": ("UW",), "y-": ("UW",),  # French u (rounded, front)
    "Y": ("ER",), "W": ("ER",),  # French eu (rounded, mid)
    "W~": ("AH",),  # French un (nasal)
    "*": ("R",), "R": ("R",),  # tapped and trilled r
    "A": ("AA",),  # Russian stressed a
    "8": ("UH",),  # Russian ё after a soft consonant
    "ja": ("Y", "AA"), "ju": ("Y", "UW"),  # Russian я, ю
    "ts": ("T", "S"), "dz": ("D", "Z"),  # affricates English has no phone for
}  # fmt: skip
LANGUAGE_MNEMONICS: dict[str, dict[str, tuple[str, ...]]] = {
    "ru": {"y": ("IH",)},  # ы
}


def _arpabet(mnemonic: str, language: str) -> tuple[str, ...]:
    if language != ENGLISH:
        stem = mnemonic.rstrip(":;")
        for table in (LANGUAGE_MNEMONICS.get(language, {}), FOREIGN_MNEMONICS):
            found = table.get(mnemonic) or table.get(stem)
            if found:
                return found
    return to_arpabet(mnemonic)


def foreign_words(text: str, language: str) -> tuple[list[str], dict[str, list[str]]]:
    """Dictionary tokens for a transcript in another language, and their pronunciations.
    Words keep their letters in any script, digits included (espeak-ng reads numbers in the
    language); each becomes an ASCII token naming the language and a checksum of the word, so
    that it cannot clash with an English word of the same spelling."""
    words = re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.lower())
    tag = re.sub(r"[^a-z0-9]", "", language.lower())
    tokens = [f"{tag}x{zlib.crc32(word.encode()):08x}" for word in words]
    pronunciations = {token: _pronounce(word, language)
                      for token, word in zip(tokens, words, strict=True)}  # fmt: skip
    return tokens, pronunciations


def _clean_words(hypothesis: str) -> list[str]:
    """Hypothesis words without fillers and alternate-pronunciation suffixes."""
    words = []
    for word in hypothesis.split():
        if word.startswith(("<", "[", "+")):
            continue
        words.append(re.sub(r"\(\d+\)$", "", word))
    return words


# ---------------------------------------------------------------------------------------------
# Public API


def align_phones(audio: str | os.PathLike[str] | np.ndarray, transcript: str,
                 language: str = ENGLISH) -> Phones:  # fmt: skip
    """[(ARPAbet phone or "SIL", start s, end s), ...] tiling the clip.

    `audio` is a file path (any format emotalk_core.audio reads; converted to 16 kHz mono) or
    a float array already at 16 kHz mono. `language`: an espeak-ng voice name; for a language
    other than English each word gets espeak-ng's pronunciation in that language, mapped onto
    the English acoustic model's phones. Raises AlignmentError when the transcript cannot be
    matched to the audio.
    """
    samples = _load(audio)
    pronunciations = None
    if language == ENGLISH:
        words = normalise_transcript(transcript)
    else:
        words, pronunciations = foreign_words(transcript, language)
    if not words:
        raise AlignmentError(f"transcript {transcript!r} has no words to align")
    if samples.size < SAMPLE_RATE // 10:
        raise AlignmentError("audio shorter than 0.1 s cannot be aligned")
    pcm = pcm16(samples)
    phones = _ALIGNER.align(pcm, words, pronunciations)
    return _cover(phones, samples.size / SAMPLE_RATE)


def _load(audio: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise AlignmentError(f"expected mono 16 kHz samples, got shape {audio.shape}")
        return audio.astype(np.float32)
    from emotalk_core.audio import load_audio

    return load_audio(Path(audio))


def _cover(phones: Phones, seconds: float) -> Phones:
    """Extend the alignment with SIL so that it spans [0, seconds]."""
    out = list(phones)
    if out and out[0][1] > 0:
        out.insert(0, (SIL, 0.0, out[0][1]))
    if out and out[-1][2] < seconds:
        out.append((SIL, out[-1][2], seconds))
    return out
