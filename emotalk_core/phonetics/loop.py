"""Phones of English speech without a transcript, by one of two METHODS:
- "loop": phone-loop decoding, the most likely phone sequence (pocketsphinx `allphone` search
  with the en-us phone language model, both inside the pocketsphinx wheel): fast;
- "words": word recognition (pocketsphinx's en-us language model and dictionary, beams narrowed
  for speed) followed by a phone alignment of the recognised words: half as fast, and its
  phones are those of real words, so its bilabials are right far more often.

Long audio is decoded in chunks of `CHUNK_S` seconds that overlap by `MARGIN_S` on each side;
each chunk keeps the phones whose centres fall in its own core, so the result does not depend
on where chunks are cut (a phone cut by a chunk's edge is decoded whole by its neighbour).
Chunks run in worker processes, one per core (pocketsphinx holds the GIL while it decodes), so
memory stays bounded by the chunk size and the time by the number of cores.

`python -m emotalk_core.phonetics.loop --worker` is such a worker (stdin: chunks, stdout: one
JSON line of phones per chunk).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable

import numpy as np

from ..errors import Cancelled, DependencyError, EmoTalkError
from .phonemes import ARPABET, SIL, strip_stress

SAMPLE_RATE = 16000
_FRAME_RATE = 100  # pocketsphinx frames per second
CHUNK_S = 30.0  # seconds of audio per decoding job
MARGIN_S = 1.5  # context decoded on each side of a chunk's core and then dropped
# One process decodes clips up to this long; longer ones go to worker processes.
IN_PROCESS_MAX_S = 2 * CHUNK_S
METHODS = ("loop", "words")
# Word recognition's search, narrowed from pocketsphinx's defaults: 3x faster on the held-out
# recordings with the same lip-sync scores (training/README.md, 2026-12-06).
WORD_SEARCH = {"fwdflat": False, "bestpath": False, "maxhmmpf": 3000, "beam": 1e-40,
               "wbeam": 1e-30, "pbeam": 1e-40, "topn": 2}

Phones = list[tuple[str, float, float]]


class PhoneDecodingError(EmoTalkError):
    """pocketsphinx is missing or failed on the audio."""


_decoders: dict[str, object] = {}
_decoder_lock = threading.Lock()


def _get_decoder(method: str):  # noqa: ANN202 (pocketsphinx.Decoder)
    """One decoder per method and process (loading the models takes 0.2 to 1 s)."""
    if method not in _decoders:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise DependencyError(
                f"the backend's Python {sys.executable} has no module named 'pocketsphinx'",
                "pip install pocketsphinx (a dependency of emotalk-blender; reinstall the "
                "package)") from exc
        if method == "loop":
            phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
            _decoders[method] = Decoder(allphone=phone_lm, lm=None, samprate=SAMPLE_RATE,
                                        loglevel="FATAL", bestpath=False)
        else:
            _decoders[method] = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **WORD_SEARCH)
    return _decoders[method]


def pcm16(samples: np.ndarray) -> bytes:
    """16-bit PCM with a fixed +-1 LSB triangular dither: digital silence (exact zeros, as in
    TTS output and padded clips) gives degenerate log energies that derail the decoder, and a
    fixed noise keeps results reproducible."""
    noise = np.random.default_rng(0).triangular(-1.0, 0.0, 1.0, samples.size)
    scaled = np.clip(samples.astype(np.float64), -1.0, 1.0) * 32766.0 + noise
    return np.round(scaled).astype("<i2").tobytes()


def decode_chunk(samples: np.ndarray, method: str = "loop") -> Phones:
    """Phones of one stretch of 16 kHz mono audio, times from its start, tiling it (gaps and
    fillers become "SIL")."""
    if method not in METHODS:
        raise ValueError(f"unknown phone decoding method {method!r}")
    if samples.size < SAMPLE_RATE // 20:
        return [(SIL, 0.0, samples.size / SAMPLE_RATE)] if samples.size else []
    with _decoder_lock:
        decoder = _get_decoder(method)
        try:
            pcm = pcm16(samples)
            decode_utterance(decoder, pcm)
            if method == "words":
                segments = _word_phones(decoder, pcm)
            else:
                segments = [(s.word, s.start_frame, s.end_frame) for s in decoder.seg()]
        except RuntimeError as exc:
            raise PhoneDecodingError(f"phone decoding failed: {exc}") from exc
    return tiling(segments) or [(SIL, 0.0, samples.size / SAMPLE_RATE)]


def decode_utterance(decoder, pcm: bytes) -> None:  # noqa: ANN001
    """One whole utterance through `decoder` (any search: loop, recognition, alignment)."""
    # The decoder carries its feature normalisation over from the previous utterance (up to
    # 150 ms of difference in a boundary); reset it so that the same audio always gives the
    # same phones.
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def _word_phones(decoder, pcm: bytes) -> list[tuple[str, int, int]]:  # noqa: ANN001
    """(phone, first frame, last frame) of the recognised words after a recognition pass:
    a second pass aligns the hypothesis' phones (an empty hypothesis is silence)."""
    hypothesis = decoder.hyp()
    words = [w for w in (hypothesis.hypstr.split() if hypothesis else [])
             if not w.startswith(("<", "["))]
    if not words:
        return []
    try:
        segments = phone_pass(decoder, pcm)
    finally:
        decoder.activate_search()  # back to recognition for the next chunk
    if segments is None:
        raise PhoneDecodingError("word recognition: the recognised words did not align")
    return segments


def phone_pass(decoder, pcm: bytes) -> list[tuple[str, int, int]] | None:  # noqa: ANN001
    """After a word pass (recognition, or `set_align_text`), align the hypothesis' phones:
    (phone, first frame, last frame) each, or None when they do not align."""
    decoder.set_alignment()
    decode_utterance(decoder, pcm)
    alignment = decoder.get_alignment()
    if alignment is None:
        return None
    return [(p.name, p.start, p.start + p.duration - 1) for p in alignment.phones()]


def tiling(segments: list[tuple[str, int, int]]) -> Phones:
    """(phone, first frame, last frame) segments -> Phones in seconds: anything outside
    ARPABET (fillers, silences) is "SIL", and neighbouring pauses merge."""
    phones: Phones = []
    for word, first, last in segments:
        name = strip_stress(word)
        label = name if name in ARPABET else SIL
        start, end = first / _FRAME_RATE, (last + 1) / _FRAME_RATE
        if phones and phones[-1][0] == label == SIL:
            phones[-1] = (SIL, phones[-1][1], end)
        else:
            phones.append((label, start, end))
    return phones


def plan_chunks(num_samples: int, chunk_s: float = CHUNK_S, margin_s: float = MARGIN_S
                ) -> list[tuple[int, int, int, int]]:
    """(decode_start, decode_end, core_start, core_end) sample ranges: cores tile the audio,
    each decoded with up to `margin_s` of context on both sides."""
    chunk, margin = int(chunk_s * SAMPLE_RATE), int(margin_s * SAMPLE_RATE)
    count = max(1, math.ceil(num_samples / chunk))
    plans = []
    for k in range(count):
        core_start, core_end = k * chunk, min(num_samples, (k + 1) * chunk)
        plans.append((max(0, core_start - margin), min(num_samples, core_end + margin),
                      core_start, core_end))
    return plans


def _keep_core(phones: Phones, offset: float, core: tuple[float, float]) -> Phones:
    """The chunk's phones (times from `offset`) whose centres fall in [core), clipped to it."""
    low, high = core
    kept = []
    for label, start, end in phones:
        start, end = start + offset, end + offset
        if low <= (start + end) / 2 < high:
            kept.append((label, max(start, low), min(end, high)))
    return kept


def stitch(parts: list[Phones], seconds: float) -> Phones:
    """Chunks' phones in order -> one list tiling [0, seconds]: gaps close at the midpoint,
    neighbouring pauses merge."""
    out: Phones = []
    for label, start, end in (p for part in parts for p in part):
        if out and start > out[-1][2]:
            middle = (out[-1][2] + start) / 2
            out[-1] = (out[-1][0], out[-1][1], middle)
            start = middle
        elif out:
            start = out[-1][2]
        if end <= start:
            continue
        if out and out[-1][0] == label == SIL:
            out[-1] = (SIL, out[-1][1], end)
        else:
            out.append((label, start, end))
    if not out:
        return [(SIL, 0.0, seconds)] if seconds > 0 else []
    out[0] = (out[0][0], 0.0, out[0][2])
    out[-1] = (out[-1][0], out[-1][1], seconds)
    return out


class _Workers:
    """Decoding processes kept for the life of this process (a server decodes clip after
    clip): each is `python -m emotalk_core.phonetics.loop --worker`, fed float32 samples on its
    stdin (a byte naming the method, an 8-byte length, then the bytes) and answering one JSON
    line per chunk. Plain subprocesses rather than multiprocessing: they never re-import the
    caller's main module and never touch its stdout (the stdio server's protocol channel)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def ensure(self, count: int) -> list[subprocess.Popen]:
        self.procs = [p for p in self.procs if p.poll() is None]
        while len(self.procs) < count:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "emotalk_core.phonetics.loop", "--worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True))
        return self.procs[:count]

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        self.procs = []

    def run(self, chunks: list[np.ndarray], count: int, progress, cancel,
            method: str = "loop") -> list[Phones]:
        """Phones of each chunk, decoded `count` at a time in order."""
        with self.lock:
            results: list[Phones] = []
            try:
                for first in range(0, len(chunks), count):
                    _check(cancel)
                    batch = chunks[first: first + count]
                    procs = self.ensure(len(batch))
                    for proc, chunk in zip(procs, batch, strict=False):
                        data = np.ascontiguousarray(chunk, dtype="<f4").tobytes()
                        proc.stdin.write(struct.pack("<BQ", METHODS.index(method), len(data))
                                         + data)
                        proc.stdin.flush()
                    for proc in procs:
                        results.append(_answer(proc.stdout.readline()))
                        if progress:
                            progress(len(results), len(chunks))
            except (OSError, ValueError) as exc:
                self.close()
                raise PhoneDecodingError(f"a phone decoding process failed: {exc}") from exc
            except BaseException:
                self.close()  # a cancel or an error mid-batch: no half-read answers left
                raise
            return results


def _answer(line: bytes) -> Phones:
    if not line:
        raise PhoneDecodingError("a phone decoding process ended unexpectedly")
    reply = json.loads(line)
    if "error" in reply:
        raise PhoneDecodingError(reply["error"])
    return [(p, float(a), float(b)) for p, a, b in reply["phones"]]


_WORKERS = _Workers()
atexit.register(_WORKERS.close)


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def decode(samples: np.ndarray, *, method: str = "loop", workers: int | None = None,
           progress: Callable[[int, int], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> Phones:
    """[(ARPAbet phone or "SIL", start s, end s), ...] tiling 16 kHz mono `samples`, by
    `method` (one of METHODS).

    `progress(done, total)` is called per chunk; `cancel()` is polled between chunks (raises
    Cancelled). Clips up to IN_PROCESS_MAX_S decode in this process; longer ones in `workers`
    processes (default: one per core)."""
    if method not in METHODS:
        raise ValueError(f"unknown phone decoding method {method!r}")
    seconds = samples.size / SAMPLE_RATE
    plans = plan_chunks(samples.size)
    workers = workers or default_workers()
    if seconds <= IN_PROCESS_MAX_S or workers == 1:
        parts = []
        for k, plan in enumerate(plans):
            _check(cancel)
            parts.append(_decode_plan(samples, plan, method))
            if progress:
                progress(k + 1, len(plans))
        return stitch(parts, seconds)
    decoded = _WORKERS.run([samples[a:b] for a, b, _, _ in plans], workers, progress, cancel,
                           method)
    parts = [_keep_core(chunk, a / SAMPLE_RATE, (c / SAMPLE_RATE, d / SAMPLE_RATE))
             for chunk, (a, _, c, d) in zip(decoded, plans, strict=True)]
    return stitch(parts, seconds)


def _decode_plan(samples: np.ndarray, plan: tuple[int, int, int, int], method: str) -> Phones:
    a, b, core_start, core_end = plan
    return _keep_core(decode_chunk(samples[a:b], method), a / SAMPLE_RATE,
                      (core_start / SAMPLE_RATE, core_end / SAMPLE_RATE))


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def worker_main() -> int:
    """Serve chunks on stdin until it closes: a byte indexing METHODS, an 8-byte little-endian
    length, float32 samples."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = source.read(9)
        if len(header) < 9:
            return 0
        method, size = struct.unpack("<BQ", header)
        samples = np.frombuffer(source.read(size), dtype="<f4")
        try:
            reply = {"phones": decode_chunk(samples, METHODS[method])}
        except EmoTalkError as exc:
            reply = {"error": exc.message}
        sink.write(json.dumps(reply).encode() + b"\n")
        sink.flush()


if __name__ == "__main__":
    if sys.argv[1:] != ["--worker"]:
        sys.exit("usage: python -m emotalk_core.phonetics.loop --worker (a decoding process "
                 "started by emotalk_core itself)")
    sys.exit(worker_main())
