"""Phone-loop decoding: the most likely phone sequence of any English speech, without a
transcript (pocketsphinx `allphone` search with the en-us phone language model, both inside the
pocketsphinx wheel).

Long audio is decoded in chunks of `CHUNK_S` seconds that overlap by `MARGIN_S` on each side;
each chunk keeps the phones whose centres fall in its own core, so the result does not depend
on where chunks are cut (a phone cut by a chunk's edge is decoded whole by its neighbour).
Chunks run in worker processes, one per core (pocketsphinx holds the GIL while it decodes), so
memory stays bounded by the chunk size and the time by the number of cores.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from ..errors import Cancelled, EmoTalkError
from .phonemes import ARPABET, SIL, strip_stress

SAMPLE_RATE = 16000
_FRAME_RATE = 100  # pocketsphinx frames per second
CHUNK_S = 30.0  # seconds of audio per decoding job
MARGIN_S = 1.5  # context decoded on each side of a chunk's core and then dropped
# One process decodes clips up to this long; longer ones go to worker processes.
IN_PROCESS_MAX_S = 2 * CHUNK_S

Phones = list[tuple[str, float, float]]


class PhoneDecodingError(EmoTalkError):
    """pocketsphinx is missing or failed on the audio."""

    code = -32603


_decoder = None
_decoder_lock = threading.Lock()


def _get_decoder():  # noqa: ANN202 (pocketsphinx.Decoder)
    """One allphone decoder per process (loading the acoustic model takes ~0.2 s)."""
    global _decoder
    if _decoder is None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise PhoneDecodingError(
                "pocketsphinx is not installed", "pip install pocketsphinx (a dependency of "
                "emotalk-blender; reinstall the package)") from exc
        phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
        _decoder = Decoder(allphone=phone_lm, lm=None, samprate=SAMPLE_RATE,
                           loglevel="FATAL", bestpath=False)
    return _decoder


def pcm16(samples: np.ndarray) -> bytes:
    """16-bit PCM with a fixed +-1 LSB triangular dither: digital silence (exact zeros, as in
    TTS output and padded clips) gives degenerate log energies that derail the decoder, and a
    fixed noise keeps results reproducible."""
    noise = np.random.default_rng(0).triangular(-1.0, 0.0, 1.0, samples.size)
    scaled = np.clip(samples.astype(np.float64), -1.0, 1.0) * 32766.0 + noise
    return np.round(scaled).astype("<i2").tobytes()


def decode_chunk(samples: np.ndarray) -> Phones:
    """Phones of one stretch of 16 kHz mono audio, times from its start, tiling it (gaps and
    fillers become "SIL")."""
    if samples.size < SAMPLE_RATE // 20:
        return [(SIL, 0.0, samples.size / SAMPLE_RATE)] if samples.size else []
    with _decoder_lock:
        decoder = _get_decoder()
        try:
            # The decoder carries its feature normalisation over from the previous utterance;
            # reset it so that the same audio always gives the same phones.
            decoder.reinit_feat()
            decoder.start_utt()
            decoder.process_raw(pcm16(samples), full_utt=True)
            decoder.end_utt()
            segments = [(s.word, s.start_frame, s.end_frame) for s in decoder.seg()]
        except RuntimeError as exc:
            raise PhoneDecodingError(f"phone decoding failed: {exc}") from exc
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


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the life of the process (a server decodes clip after clip).
    Workers are spawned, not forked: the parent may hold torch's threads."""
    global _pool
    with _pool_lock:
        if _pool is None or getattr(_pool, "_max_workers", 0) != workers:
            if _pool is not None:
                _pool.shutdown(cancel_futures=True)
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def decode(samples: np.ndarray, *, workers: int | None = None,
           progress: Callable[[int, int], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> Phones:
    """[(ARPAbet phone or "SIL", start s, end s), ...] tiling 16 kHz mono `samples`.

    `progress(done, total)` is called per chunk; `cancel()` is polled between chunks (raises
    Cancelled). Clips up to IN_PROCESS_MAX_S decode in this process; longer ones in `workers`
    processes (default: one per core)."""
    seconds = samples.size / SAMPLE_RATE
    plans = plan_chunks(samples.size)
    workers = workers or default_workers()
    if seconds <= IN_PROCESS_MAX_S or workers == 1:
        parts = []
        for k, plan in enumerate(plans):
            _check(cancel)
            parts.append(_decode_plan(samples, plan))
            if progress:
                progress(k + 1, len(plans))
        return stitch(parts, seconds)
    pool = _worker_pool(workers)
    futures: list[Future] = [pool.submit(decode_chunk, samples[a:b]) for a, b, _, _ in plans]
    try:
        parts = []
        for k, (future, plan) in enumerate(zip(futures, plans, strict=True)):
            while True:
                _check(cancel)
                try:
                    chunk = future.result(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            a, _, core_start, core_end = plan
            parts.append(_keep_core(chunk, a / SAMPLE_RATE,
                                    (core_start / SAMPLE_RATE, core_end / SAMPLE_RATE)))
            if progress:
                progress(k + 1, len(plans))
    finally:
        for future in futures:
            future.cancel()
    return stitch(parts, seconds)


def _decode_plan(samples: np.ndarray, plan: tuple[int, int, int, int]) -> Phones:
    a, b, core_start, core_end = plan
    return _keep_core(decode_chunk(samples[a:b]), a / SAMPLE_RATE,
                      (core_start / SAMPLE_RATE, core_end / SAMPLE_RATE))


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()
