"""Speed of the whole default pipeline on the CPU, phone decoding included, beside the network
alone, in one run.

    .venv/bin/python benchmarks/bench_pipeline.py              # 10 minutes of speech
    .venv/bin/python benchmarks/bench_pipeline.py --seconds 60 --model DIR

The audio is varied English speech: espeak-ng reading the synthetic corpus's sentences in
several voices, with pauses, to the length asked for (`--audio FILE ...`: recordings instead,
joined and looped; one sentence repeated is not a fair test, since word recognition distrusts
repetitive text and hands it to the phone loop). Rows (each after a warm-up call, the fastest
of `--repeats` runs):
- pipeline: `Predictor.predict(audio)` with default controls, as `emotalk predict` runs it
  (word recognition and alignment over the cores, network, post-processing with articulation);
- phone track: `emotalk_core.phonetics.phone_track(audio, recognize_words=True)` alone;
- pipeline, phone loop: the pipeline with `Controls(recognize_words=False)` (the phone loop
  instead of word recognition; no target, it is the faster choice);
- network: `Predictor.predict(audio, phones=<decoded before>, controls=raw)`: the network in
  its windows, nothing else.
RTF = seconds of audio per second of wall clock. Targets: pipeline >= 30, network >= 200.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # training.synth's sentences, when run from anywhere
TARGET_PIPELINE_RTF = 30.0
TARGET_NETWORK_RTF = 200.0


def varied_speech(seconds: float) -> np.ndarray:
    """16 kHz espeak-ng speech of distinct sentences in four voices, 0.4 s pauses between
    them, at least `seconds` long (deterministic)."""
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize
    from training.synth.sentences import sentences

    voices = ("en-us+m3", "en-us+f2", "en-us+m1", "en-us+f4")
    pause = np.zeros(int(0.4 * 16000), np.float32)
    parts, total = [], 0
    for k, text in enumerate(sentences(7, 1000)):
        if total >= seconds * 16000:
            break
        speech = synthesize(text, VoiceSettings(voices[k % len(voices)])).audio
        parts += [speech, pause]
        total += speech.size + pause.size
    return np.concatenate(parts)


def fastest(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--audio", type=Path, nargs="+", help="recordings to use instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from emotalk_core.audio import load_audio
    from emotalk_core.controls import Controls
    from emotalk_core.inference import Predictor
    from emotalk_core.phonetics import phone_track

    clip = (np.concatenate([load_audio(a) for a in args.audio]) if args.audio
            else varied_speech(args.seconds))
    audio = np.tile(clip, int(np.ceil(args.seconds * 16000 / clip.size)))
    audio = audio[: int(args.seconds * 16000)]
    predictor = Predictor(args.model, device="cpu")
    phonetic = predictor.model.config.phone_input
    predictor.predict(audio[: 16000 * 70], sample_rate=16000)  # warm-up (and the worker pool)
    rows = {"pipeline": fastest(lambda: predictor.predict(audio, sample_rate=16000),
                                args.repeats)}
    track = phone_track(audio, recognize_words=True) if phonetic else None
    if phonetic:
        rows["phone track"] = fastest(lambda: phone_track(audio, recognize_words=True),
                                      args.repeats)
        looped = Controls(recognize_words=False)
        predictor.predict(audio[: 16000 * 70], sample_rate=16000, controls=looped)  # warm-up
        rows["pipeline, loop"] = fastest(
            lambda: predictor.predict(audio, sample_rate=16000, controls=looped), args.repeats)
    rows["network"] = fastest(lambda: predictor.predict(
        audio, sample_rate=16000, phones=track, controls=Controls(postprocess=None)),
        args.repeats)
    report = {"model": args.model, "audio_s": args.seconds, "cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(),
              "seconds": {k: round(v, 3) for k, v in rows.items()},
              "rtf": {k: round(args.seconds / v, 1) for k, v in rows.items()}}
    print(f"{args.seconds:g} s of speech, model {args.model}, {os.cpu_count()} cores")
    for name, seconds in rows.items():
        print(f"  {name:<15} {seconds:8.2f} s   RTF {args.seconds / seconds:7.1f}")
    checks = [("pipeline", TARGET_PIPELINE_RTF), ("network", TARGET_NETWORK_RTF)]
    for name, target in checks:
        rtf = args.seconds / rows[name]
        print(f"{'PASS' if rtf >= target else 'FAIL'}  {name} at least {target:g}x real time: "
              f"{rtf:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
