"""Phones of English speech without a transcript: phone-loop decoding, the most likely phone
sequence (pocketsphinx `allphone` search with the en-us phone language model, both inside the
pocketsphinx wheel).

Long audio is decoded in chunks of `CHUNK_S` seconds that overlap by `MARGIN_S` on each side;
each chunk keeps the phones whose centres fall in its own core, so the result does not depend
on where chunks are cut (a phone cut by a chunk's edge is decoded whole by its neighbour).
Chunks run in worker processes, one per core (pocketsphinx holds the GIL while it decodes), so
memory stays bounded by the chunk size and the time by the number of cores. The same workers
align recognised words (`emotalk_core.phonetics.recognize`): a job is one of JOBS.

`python -m emotalk_core.phonetics.loop --worker` is such a worker (stdin: jobs, stdout: one
JSON line of phones per job).
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
# What a worker does with a stretch of audio: decode it with the phone loop, or align the
# words that come with it (None when they do not align).
JOBS = ("loop", "align")

Phones = list[tuple[str, float, float]]


class PhoneDecodingError(EmoTalkError):
    """pocketsphinx is missing or failed on the audio."""


_decoder: list[object] = []  # this process's phone-loop decoder, made on first use
_decoder_lock = threading.Lock()


def _get_decoder():  # noqa: ANN202 (pocketsphinx.Decoder)
    """The phone-loop decoder of this process (loading the models takes 0.2 to 1 s)."""
    if not _decoder:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise DependencyError(
                f"the backend's Python {sys.executable} has no module named 'pocketsphinx'",
                "pip install pocketsphinx (a dependency of emotalk-blender; reinstall the "
                "package)") from exc
        phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
        _decoder.append(Decoder(allphone=phone_lm, lm=None, samprate=SAMPLE_RATE,
                                loglevel="FATAL", bestpath=False))
    return _decoder[0]


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
            decode_utterance(decoder, pcm16(samples))
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


def phone_pass(decoder, pcm: bytes) -> list[tuple[str, int, int]] | None:  # noqa: ANN001
    """After a word pass (`set_align_text`), align the hypothesis' phones:
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


Job = tuple[str, np.ndarray, str]  # (one of JOBS, 16 kHz mono samples, words to align)


class _Workers:
    """Decoding processes kept for the life of this process (a server decodes clip after
    clip): each is `python -m emotalk_core.phonetics.loop --worker`, fed jobs on its stdin (a
    byte indexing JOBS, the 8-byte lengths of the float32 samples and of the UTF-8 words, then
    both) and answering one JSON line per job. Plain subprocesses rather than multiprocessing:
    they never re-import the caller's main module and never touch its stdout (the stdio
    server's protocol channel)."""

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

    def run(self, jobs: list[Job], count: int, progress, cancel) -> list[Phones | None]:
        """Each job's phones (None: its words did not align), on `count` processes: each
        takes the next job as soon as it is done with its last (a thread per process feeds
        it), so none waits for a slower neighbour."""
        with self.lock:
            _check(cancel)
            procs = self.ensure(min(count, len(jobs)))
            results: list[Phones | None] = [None] * len(jobs)
            state = {"next": 0, "done": 0, "error": None}
            guard = threading.Lock()

            def feed(proc: subprocess.Popen) -> None:
                while True:
                    with guard:
                        k = state["next"]
                        if k >= len(jobs) or state["error"] is not None:
                            return
                        if cancel is not None and cancel():
                            state["error"] = Cancelled()
                            return
                        state["next"] += 1
                    try:
                        results[k] = _exchange(proc, jobs[k])
                    except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                        with guard:
                            state["error"] = state["error"] or exc
                        return
                    with guard:
                        state["done"] += 1
                        if progress:
                            progress(state["done"], len(jobs))

            threads = [threading.Thread(target=feed, args=(proc,), daemon=True)
                       for proc in procs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            error = state["error"]
            if error is not None:
                self.close()  # a cancel or an error mid-job: no half-read answers left
                if isinstance(error, OSError | ValueError):
                    raise PhoneDecodingError(f"a phone decoding process failed: {error}"
                                             ) from error
                raise error
            return results


def _exchange(proc: subprocess.Popen, job: Job) -> Phones | None:
    """Send one job to a worker process and read its answer."""
    kind, samples, words = job
    data = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    text = words.encode()
    proc.stdin.write(struct.pack("<BQQ", JOBS.index(kind), len(data), len(text)) + data + text)
    proc.stdin.flush()
    return _answer(proc.stdout.readline())


def _answer(line: bytes) -> Phones | None:
    if not line:
        raise PhoneDecodingError("a phone decoding process ended unexpectedly")
    reply = json.loads(line)
    if "error" in reply:
        raise PhoneDecodingError(reply["error"])
    if reply["phones"] is None:
        return None
    return [(p, float(a), float(b)) for p, a, b in reply["phones"]]


_WORKERS = _Workers()
atexit.register(_WORKERS.close)


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
    decoded = run_jobs([("loop", samples[a:b], "") for a, b, _, _ in plans], workers, progress,
                       cancel, in_process=seconds <= IN_PROCESS_MAX_S or workers == 1)
    parts = [_keep_core(chunk, a / SAMPLE_RATE, (c / SAMPLE_RATE, d / SAMPLE_RATE))
             for chunk, (a, _, c, d) in zip(decoded, plans, strict=True)]
    return stitch(parts, seconds)


def run_jobs(jobs: list[Job], workers: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             cancel: Callable[[], bool] | None = None, in_process: bool = False
             ) -> list[Phones | None]:
    """Each job's phones: phone-loop decoding, or the alignment of the job's words (None when
    they do not align). From the worker processes (`workers` at a time, default one per core),
    or with `in_process` one after the other in this process (short audio: no process to feed).
    `progress(done, total)` counts jobs; `cancel()` is polled between them. Raises
    PhoneDecodingError when a process fails, Cancelled on `cancel()`."""
    if not in_process:
        return _WORKERS.run(jobs, workers or default_workers(), progress, cancel)
    done: list[Phones | None] = []
    for job in jobs:
        _check(cancel)
        done.append(do_job(*job))
        if progress:
            progress(len(done), len(jobs))
    return done


def do_job(kind: str, samples: np.ndarray, words: str) -> Phones | None:
    """One job in this process (what a worker does with it)."""
    if kind == "loop":
        return decode_chunk(samples)
    if kind != "align":
        raise ValueError(f"unknown phone job {kind!r}")
    from .align import AlignmentError, align_phones

    try:
        return align_phones(samples, words)
    except AlignmentError:
        return None


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def worker_main() -> int:
    """Serve jobs on stdin until it closes: a byte indexing JOBS, the 8-byte little-endian
    lengths of the samples and the words, float32 samples, UTF-8 words."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = source.read(17)
        if len(header) < 17:
            return 0
        kind, size, text_size = struct.unpack("<BQQ", header)
        samples = np.frombuffer(source.read(size), dtype="<f4")
        words = source.read(text_size).decode()
        try:
            reply = {"phones": do_job(JOBS[kind], samples, words)}
        except EmoTalkError as exc:
            reply = {"error": exc.message}
        sink.write(json.dumps(reply).encode() + b"\n")
        sink.flush()


if __name__ == "__main__":
    if sys.argv[1:] != ["--worker"]:
        sys.exit("usage: python -m emotalk_core.phonetics.loop --worker (a decoding process "
                 "started by emotalk_core itself)")
    sys.exit(worker_main())
