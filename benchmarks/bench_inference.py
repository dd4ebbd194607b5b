"""Speed (real-time factor) and peak memory of EmoTalk inference on the CPU, beside a baseline.

Run from the repository root:

    .venv/bin/python benchmarks/bench_inference.py            # full run (30-60 min on 2 cores)
    .venv/bin/python benchmarks/bench_inference.py --quick    # ~ a few minutes, to check it works
    .venv/bin/python benchmarks/bench_inference.py --cases a,d --json /tmp/bench.json

Cases (see benchmarks/README.md):
  a  full-size architecture (two wav2vec2-large encoders, XLSR-53 layout, random weights) through
     `Predictor.predict`, on 10 s and on 10 minutes of audio;
  b  the compact model (`compact_model_config(phonetic=False)`: the default model's network
     without its phone-track input; bench_pipeline.py measures phone decoding) on 10 s and 10
     minutes;
  c  the baseline: the same full-size model run the way the released code runs it (one pass over
     the whole clip, eager attention with every attention map kept, `nn.TransformerDecoder` with
     the full (4, T, T) biased mask and (T, T) cross mask), on the longest clip that fits
     comfortably in memory (and half of it, to extrapolate), plus our Predictor on that same clip;
  d  the encoders' own forward cost: both encoders alone over the same 10 minutes, in
     non-overlapping windows of 5000 frames.

Every measurement runs in its own fresh subprocess (`--worker SPEC`) so that the peak resident
memory (ru_maxrss) belongs to that case alone; workers print one JSON line, the parent prints
the table. RTF = seconds of audio per second of compute (> 1: faster than real time).
GB = 1e9 bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SAMPLE_RATE = 16000
FPS = 30
SEED = 0
THREADS = 2
GB = 1e9
RESULT_TAG = "RESULT "

# The XLSR-53 (wav2vec2-large) layout of both released encoders.
FULL_WAV2VEC2 = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "hidden_act": "gelu",
}
LAYERS = FULL_WAV2VEC2["num_hidden_layers"]
HEADS = FULL_WAV2VEC2["num_attention_heads"]
ONE_PASS_FRAMES = 5000  # the release's limit, and our Predictor's one-pass window
RELEASE_REFERENCE_SECONDS = 270.0  # 4.5 minutes: "the release needs about 100 GB there"

# Targets (printed as PASS/FAIL).
TARGET_FULL_PEAK_GB = 6.0
TARGET_FULL_OVER_ENCODERS = 1.3
TARGET_COMPACT_RTF = 200.0
SHARED_CORES = 0.25  # other processes using more than this during a run: the machine was shared


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def frames_for(seconds: float) -> int:
    return math.ceil(round(seconds * SAMPLE_RATE) / SAMPLE_RATE * FPS)


def attention_map_bytes(frames: int) -> int:
    """Bytes of the attention maps one wav2vec2-large encoder keeps over a forward of `frames`
    frames with output_attentions: 24 layers x 16 heads x T^2 float32."""
    return LAYERS * HEADS * frames * frames * 4


# -- synthetic audio ------------------------------------------------------------------------------
def synth_speech(seconds: float, seed: int = SEED):
    """Speech-like mono float32 audio at 16 kHz: a harmonic tone with a gliding pitch, syllable-rate
    amplitude envelope with phrase pauses, and a little noise. Deterministic for a seed."""
    import numpy as np

    n = int(round(seconds * SAMPLE_RATE))
    out = np.empty(n, dtype=np.float32)
    rng = np.random.default_rng(seed)
    block = 10 * SAMPLE_RATE
    two_pi = 2 * np.pi
    for start in range(0, n, block):
        t = np.arange(start, min(n, start + block), dtype=np.float64) / SAMPLE_RATE
        # f0(t) = 130 + 25 sin(2 pi 0.3 t) + 10 sin(2 pi 1.7 t); phase = 2 pi * integral.
        phase = two_pi * (130.0 * t - 25.0 / (two_pi * 0.3) * np.cos(two_pi * 0.3 * t)
                          - 10.0 / (two_pi * 1.7) * np.cos(two_pi * 1.7 * t))
        tone = np.zeros_like(t)
        for k in range(1, 13):  # harmonics with a moving formant-like tilt
            gain = (1.0 / k) * (1.0 + 0.6 * np.sin(two_pi * 0.5 * t + 0.7 * k))
            tone += gain * np.sin(k * phase)
        syllables = np.sin(two_pi * 4.0 * t + 1.5 * np.sin(two_pi * 0.23 * t)) ** 2
        phrases = np.clip(2.0 * np.sin(two_pi * 0.2 * t) + 1.4, 0.0, 1.0)
        envelope = 0.3 * syllables * phrases
        noise = 0.01 * rng.standard_normal(t.shape[0])
        out[start: start + t.shape[0]] = (envelope * tone + noise).astype(np.float32)
    return out


# -- worker ---------------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build_model(kind: str):
    import torch

    from emotalk_core.config import ModelConfig, Wav2Vec2EncoderConfig, compact_model_config
    from emotalk_core.model import EmoTalk

    if kind == "full":
        config = ModelConfig(
            content_encoder=Wav2Vec2EncoderConfig(wav2vec2=dict(FULL_WAV2VEC2)),
            emotion_encoder=Wav2Vec2EncoderConfig(wav2vec2=dict(FULL_WAV2VEC2)),
            name="bench-full-size",
        )
    elif kind == "compact":
        # The network alone (no phone-track input, so no phone decoding):
        # bench_pipeline.py measures the default model's whole pipeline.
        config = compact_model_config(name="bench-compact", phonetic=False)
    else:
        raise ValueError(kind)
    torch.manual_seed(SEED)
    model = EmoTalk(config)
    # The head is zero-initialised (all outputs 0); random values make the equivalence check of
    # the baseline against our Predictor meaningful. Speed and memory are unaffected.
    torch.nn.init.normal_(model.head.weight, std=0.02)
    return model.eval()


def make_predictor(model):
    from emotalk_core.checkpoint import LoadedModel
    from emotalk_core.inference import Predictor

    return Predictor(LoadedModel(model), device="cpu")


def run_predict(predictor, audio, verbose: bool):
    from emotalk_core.controls import Controls

    started = time.perf_counter()
    last = {"message": None}

    def progress(done: int, total: int, message: str) -> None:
        if verbose and message != last["message"]:
            last["message"] = message
            log(f"  {message} ({time.perf_counter() - started:.0f} s, "
                f"rss {rss_bytes() / GB:.2f} GB)")

    return predictor.predict(audio, sample_rate=SAMPLE_RATE, controls=Controls(postprocess=None),
                             progress=progress)


def run_encoders(model, audio, verbose: bool) -> None:
    """Both encoders alone, in non-overlapping windows of ONE_PASS_FRAMES frames."""
    import torch

    total = math.ceil(audio.shape[0] / SAMPLE_RATE * FPS)
    started = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, total, ONE_PASS_FRAMES):
            last = min(total, first + ONE_PASS_FRAMES)
            lo = math.ceil(first * SAMPLE_RATE / FPS)
            hi = math.ceil(last * SAMPLE_RATE / FPS)
            if verbose:
                log(f"  encoders on frames {first}-{last} of {total} "
                    f"({time.perf_counter() - started:.0f} s, rss {rss_bytes() / GB:.2f} GB)")
            x = torch.from_numpy(audio[lo:hi].copy())[None]
            lengths = torch.tensor([x.shape[1]])
            frames = torch.tensor([last - first])
            model.encode_content(x, lengths, frames)
            model.encode_emotion(x, lengths, frames)


class ReleaseStyle:
    """The full-size model run as the released `EmoTalk.predict` runs it (psyai-net/EmoTalk_release
    model.py / wav2vec.py): the whole clip in one pass; each wav2vec2 runs its convolutional front
    end over the whole clip, interpolates to the frame rate and runs eager attention with
    `output_attentions=True`, so every layer's (1, 16, T, T) map is kept. The content encoder's
    output (with its maps) is dropped as soon as `.last_hidden_state` is read; the emotion
    encoder's output (`output_emo1`, with its maps) lives until the end of `predict`. The decoder is
    `nn.TransformerDecoder` with the full (4, T, T) biased causal mask and the (T, T) cross mask.

    Same weights as the `EmoTalk` module it wraps (the decoder's state dict is copied into an
    `nn.TransformerDecoder`, whose parameter names ours follow)."""

    def __init__(self, model):
        import torch

        self.model = model
        cfg = model.config.decoder
        layer = torch.nn.TransformerDecoderLayer(
            d_model=cfg.feature_dim, nhead=cfg.heads, dim_feedforward=cfg.ffn_size,
            dropout=cfg.dropout, batch_first=True,
        )  # fmt: skip
        self.decoder = torch.nn.TransformerDecoder(layer, num_layers=cfg.layers)
        self.decoder.load_state_dict(model.decoder.state_dict(), strict=True)
        self.decoder.eval()
        self.period = cfg.period

    def set_attention(self, implementation: str) -> None:
        for encoder in (self.model.content_encoder, self.model.emotion_encoder):
            encoder.wav2vec2.config._attn_implementation = implementation

    @staticmethod
    def _wav2vec2(w2v, audio, frame_num, kept: list, say):
        """The release's modified Wav2Vec2Model.forward with output_attentions=True."""
        import torch.nn.functional as F

        handles = [layer.attention.register_forward_hook(lambda m, i, o: kept.append(o[1]))
                   for layer in w2v.encoder.layers]
        try:
            feats = w2v.feature_extractor(audio).transpose(1, 2)  # (1, T50, 512)
            n = frame_num if frame_num is not None else int(feats.shape[1] / 50.0 * 30)
            feats = F.interpolate(feats.transpose(1, 2), size=n, align_corners=True,
                                  mode="linear").transpose(1, 2)
            say(f"    conv front end done, {n} frames, rss {rss_bytes() / GB:.2f} GB")
            hidden = w2v.feature_projection(feats)[0]
            hidden = w2v.encoder(hidden).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        if any(m is None for m in kept):
            raise RuntimeError("attention maps were not returned: eager attention is not active")
        return hidden

    def predict(self, audio_np, verbose: bool = False):
        import torch
        import torch.nn.functional as F

        from emotalk_core.model import level_weights
        from emotalk_core.model.masks import periodic_causal_bias

        def say(message: str) -> None:
            if verbose:
                log(message)

        net = self.model
        self.set_attention("eager")
        try:
            with torch.inference_mode():
                audio = torch.from_numpy(audio_np)[None]
                t = math.ceil(audio.shape[1] / 16000 * 30)
                # Wav2Vec2Processor / FeatureExtractor normalisation.
                x = (audio - audio.mean()) / torch.sqrt(audio.var(unbiased=False) + 1e-7)
                say(f"    content encoder ({t} frames)")
                content_maps: list = []
                content = self._wav2vec2(net.content_encoder.wav2vec2, x, t, content_maps, say)
                say(f"    content encoder done, kept {len(content_maps)} maps, "
                    f"rss {rss_bytes() / GB:.2f} GB")
                del content_maps  # `.last_hidden_state`: the output object is dropped
                say("    emotion encoder")
                emotion_maps: list = []  # `output_emo1.attentions`: kept until predict returns
                native = self._wav2vec2(net.emotion_encoder.wav2vec2, x, None, emotion_maps, say)
                hidden = F.interpolate(native.transpose(1, 2), size=t, align_corners=True,
                                       mode="linear").transpose(1, 2)
                logits = net.emotion_encoder.classifier(hidden, torch.tensor([t]))
                say(f"    emotion encoder done, kept {len(emotion_maps)} maps, "
                    f"rss {rss_bytes() / GB:.2f} GB")
                level = level_weights(torch.tensor([1.0]))
                person = torch.zeros(1, net.config.num_persons)
                person[0, 0] = 1.0
                emo832 = net.emotion_proj(hidden)
                query = torch.cat([
                    net.content_proj(content),
                    F.relu(net.emotion_query(emo832)),
                    net.level_embed(level)[:, None].expand(-1, t, -1),
                    net.person_embed(person)[:, None].expand(-1, t, -1),
                ], dim=-1)
                slopes = net.decoder.layers[0].slopes
                tgt_mask = periodic_causal_bias(slopes, 0, t, t, self.period)  # (4, T, T)
                memory_mask = ~torch.eye(t, dtype=torch.bool)  # enc_dec_mask: diagonal only
                say(f"    decoder (masks built, rss {rss_bytes() / GB:.2f} GB)")
                out = self.decoder(query, emo832, tgt_mask=tgt_mask, memory_mask=memory_mask)
                values = net.head(out)[0].numpy().copy()
                logits = logits[0].numpy().copy()
                del emotion_maps, tgt_mask, memory_mask
        finally:
            self.set_attention("sdpa")
        return values, logits


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(fn, repeats: int, name: str):
    """Run `fn` `repeats` times. Returns the result, wall and CPU seconds of the fastest run, all
    wall times, and the cores other processes used on average during the fastest run."""
    best = None
    times = []
    for i in range(repeats):
        if repeats > 1:
            log(f"{name}: run {i + 1} of {repeats}")
        busy = machine_busy_seconds()
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        others = max(0.0, (machine_busy_seconds() - busy - cpu) / elapsed)
        times.append(elapsed)
        if best is None or elapsed < best[1]:
            best = (result, elapsed, cpu, others)
        del result
    result, elapsed, cpu, others = best
    return result, elapsed, cpu, times, others


def worker(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    name, mode, kind, seconds = spec["name"], spec["mode"], spec["model"], spec["seconds"]
    repeats = int(spec.get("repeats", 1))
    log(f"{name}: synthesising {seconds:g} s of audio")
    audio = synth_speech(seconds)
    warm = audio[:SAMPLE_RATE].copy()
    log(f"{name}: building the {kind} model (random weights)")
    t0 = time.perf_counter()
    model = build_model(kind)
    params = sum(p.numel() for p in model.parameters())
    log(f"{name}: built in {time.perf_counter() - t0:.1f} s, {params / 1e6:.1f} M parameters, "
        f"rss {rss_bytes() / GB:.2f} GB")
    extra: dict = {}

    if mode == "predict":
        predictor = make_predictor(model)
        log(f"{name}: warm-up (1 s)")
        run_predict(predictor, warm, verbose=False)
        static = rss_bytes()
        log(f"{name}: timed Predictor.predict on {seconds:g} s")
        prediction, elapsed, cpu, times, others = timed(
            lambda: run_predict(predictor, audio, verbose=seconds > 30), repeats, name)
        frames = prediction.frames
        extra["finite"] = bool(np.isfinite(prediction.values).all())
    elif mode == "encoders":
        log(f"{name}: warm-up (1 s)")
        run_encoders(model, warm, verbose=False)
        static = rss_bytes()
        log(f"{name}: timed encoders alone on {seconds:g} s in windows of {ONE_PASS_FRAMES}")
        _, elapsed, cpu, times, others = timed(lambda: run_encoders(model, audio, verbose=True),
                                       repeats, name)
        frames = math.ceil(audio.shape[0] / SAMPLE_RATE * FPS)
    elif mode == "release":
        release = ReleaseStyle(model)
        log(f"{name}: warm-up (1 s)")
        release.predict(warm)
        static = rss_bytes()
        frames = math.ceil(audio.shape[0] / SAMPLE_RATE * FPS)
        estimate = attention_map_bytes(frames)
        log(f"{name}: timed release-style predict on {seconds:g} s ({frames} frames; "
            f"estimated kept maps {estimate / GB:.2f} GB per encoder)")
        (values, logits), elapsed, cpu, times, others = timed(
            lambda: release.predict(audio, verbose=repeats == 1), repeats, name)
        extra["estimated_maps_gb"] = estimate / GB
        extra["finite"] = bool(np.isfinite(values).all())
        if spec.get("check"):
            log(f"{name}: equivalence check: our Predictor on the same clip")
            prediction = run_predict(make_predictor(model), audio, verbose=False)
            extra["max_abs_diff_vs_predictor"] = float(np.abs(prediction.values - values).max())
            ours = torch.softmax(torch.from_numpy(logits), -1).numpy()
            theirs = np.array(list(prediction.emotion_probabilities.values()))
            extra["max_prob_diff_vs_predictor"] = float(np.abs(ours - theirs).max())
            extra["output_std"] = float(values.std())
    else:
        raise ValueError(mode)

    peak = peak_rss_bytes()
    result = {
        "load_avg_1min_after": os.getloadavg()[0],
        **spec,
        "frames": frames,
        "time_s": elapsed,
        "cpu_s": cpu,
        "cpu_per_wall": cpu / elapsed,
        "times_s": times,
        "others_cores": others,
        "rtf_cpu": seconds / (cpu / THREADS),
        "rtf": seconds / elapsed,
        "peak_gb": peak / GB,
        "static_gb": static / GB,
        "params_m": params / 1e6,
        **extra,
    }
    log(f"{name}: {elapsed:.2f} s for {seconds:g} s of audio (RTF {seconds / elapsed:.2f}), "
        f"peak {peak / GB:.2f} GB")
    return result


# -- parent ---------------------------------------------------------------------------------------
def mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def baseline_seconds(cap_gb: float) -> tuple[int, float]:
    """Longest whole-second clip whose kept attention maps (one encoder, the release's peak)
    stay under `cap_gb`, reduced if this machine has less memory available now."""
    budget = cap_gb * GB
    # Model weights (~2.5 GB) and eager-attention temporaries (~3 maps of one layer) come on top.
    budget = min(budget, 0.7 * mem_available_bytes() - 4 * GB)
    seconds = int(math.sqrt(max(budget, 0) / (LAYERS * HEADS * 4)) // FPS)
    return max(seconds, 2), budget / GB


def plan(args) -> list[dict]:
    long_s = 60.0 if args.quick else 600.0
    cap = args.baseline_cap_gb if args.baseline_cap_gb else (1.5 if args.quick else 12.0)
    wanted = set(args.cases.split(","))
    unknown = wanted - set("abcd")
    if unknown:
        raise SystemExit(f"unknown cases: {', '.join(sorted(unknown))} (use a, b, c, d)")
    long_label = f"{long_s / 60:g} min"
    cases: list[dict] = []
    if "a" in wanted:
        cases += [
            {"name": "a-full-10s", "group": "a", "model": "full", "mode": "predict",
             "seconds": 10.0, "label": "full-size, ours (Predictor)", "repeats": 3},
            {"name": "a-full-long", "group": "a", "model": "full", "mode": "predict",
             "seconds": long_s, "label": "full-size, ours (Predictor)"},
        ]
    if "b" in wanted:
        cases += [
            {"name": "b-compact-10s", "group": "b", "model": "compact", "mode": "predict",
             "seconds": 10.0, "label": "compact, ours (Predictor)", "repeats": 3},
            {"name": "b-compact-long", "group": "b", "model": "compact", "mode": "predict",
             "seconds": long_s, "label": "compact, ours (Predictor)", "repeats": 3},
        ]
    if "c" in wanted:
        seconds, budget = baseline_seconds(cap)
        log(f"baseline length: {seconds} s ({frames_for(seconds)} frames, estimated kept maps "
            f"{attention_map_bytes(frames_for(seconds)) / GB:.2f} GB; cap {budget:.1f} GB)")
        half = max(1, seconds // 2)

        def need(secs: float) -> float:  # model, kept maps + one layer's temporaries, margin
            return 4.5 + 1.15 * attention_map_bytes(frames_for(secs)) / GB

        cases += [
            {"name": "c-release-10s", "group": "c", "model": "full", "mode": "release",
             "seconds": 10.0, "label": "BASELINE full-size, release-style", "repeats": 3},
            {"name": "c-release-half", "group": "c", "model": "full", "mode": "release",
             "seconds": float(half), "label": "BASELINE full-size, release-style",
             "check": True, "need_gb": need(half)},
            {"name": "c-release-max", "group": "c", "model": "full", "mode": "release",
             "seconds": float(seconds), "label": "BASELINE full-size, release-style",
             "need_gb": need(seconds)},
            {"name": "c-ours-max", "group": "c", "model": "full", "mode": "predict",
             "seconds": float(seconds), "label": "full-size, ours (Predictor)"},
        ]
    if "d" in wanted:
        cases.append({"name": "d-encoders-long", "group": "d", "model": "full",
                      "mode": "encoders", "seconds": long_s,
                      "label": f"full-size encoders alone ({ONE_PASS_FRAMES}-frame windows)"})
    # b and c first; a and d last and side by side, so that the two 10-minute runs compared by
    # the full-pipeline / encoders-alone ratio see the machine in about the same state.
    cases.sort(key=lambda c: "bcad".index(c["group"]))
    for case in cases:
        case["long"] = case["seconds"] == long_s
    log(f"{len(cases)} cases; long clip = {long_label}")
    return cases


def wait_for_quiet(max_wait: float) -> None:
    """Wait (at most `max_wait` seconds) until other processes use under 0.25 cores."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    noted = 0.0
    while True:
        busy, start = machine_busy_seconds(), time.monotonic()
        time.sleep(3.0)
        cores = (machine_busy_seconds() - busy) / (time.monotonic() - start)
        if cores < SHARED_CORES:
            return
        if time.monotonic() > deadline:
            log(f"machine still busy ({cores:.2f} cores used by others); going ahead")
            return
        if time.monotonic() - noted > 30:
            log(f"waiting for a quiet machine ({cores:.2f} cores used by others)")
            noted = time.monotonic()


def run_case(spec: dict) -> dict:
    need = spec.get("need_gb")
    if need and mem_available_bytes() / GB < need:
        reason = (f"skipped: needs about {need:.0f} GB, only "
                  f"{mem_available_bytes() / GB:.1f} GB available now")
        log(f"{spec['name']}: {reason}")
        return {**spec, "error": reason}
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
                "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    reason = f"worker exited with {proc.returncode}"
    if proc.returncode < 0 or proc.returncode == 137:
        reason += " (killed: out of memory?)"
    log(f"{spec['name']}: FAILED, {reason} after {time.perf_counter() - started:.0f} s")
    return {**spec, "error": reason}


def fmt_seconds(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 30 == 0 else f"{seconds:g} s"


def derive(results: list[dict], quick: bool) -> tuple[list[str], list[str], dict]:
    """Comparison lines, PASS/FAIL lines and the derived numbers."""
    by = {r["name"]: r for r in results if "error" not in r}
    lines: list[str] = []
    checks: list[str] = []
    derived: dict = {}
    suffix = " [--quick: 60 s stands in for 10 min]" if quick else ""

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    ours, base = by.get("c-ours-max"), by.get("c-release-max")
    if ours and base:
        speed = ours["rtf"] / base["rtf"]
        memory = base["peak_gb"] / ours["peak_gb"]
        derived.update(speedup_vs_release=speed, memory_ratio_vs_release=memory)
        cpu_speed = base["cpu_s"] / ours["cpu_s"]
        derived["speedup_vs_release_cpu"] = cpu_speed
        lines.append(f"same {fmt_seconds(ours['seconds'])} clip: ours is {speed:.2f}x the "
                     f"release-style speed ({cpu_speed:.2f}x in CPU seconds) and uses "
                     f"1/{memory:.1f} of its peak memory ({ours['peak_gb']:.2f} GB vs "
                     f"{base['peak_gb']:.2f} GB)")
    b10, bh = by.get("c-release-10s"), by.get("c-release-half")
    if b10 and by.get("a-full-10s"):
        a10 = by["a-full-10s"]
        lines.append(f"10 s clip: ours RTF {a10['rtf']:.2f} vs release-style {b10['rtf']:.2f} "
                     f"({a10['cpu_s']:.1f} vs {b10['cpu_s']:.1f} CPU seconds); peak "
                     f"{a10['peak_gb']:.2f} GB vs {b10['peak_gb']:.2f} GB")
    if bh and "max_abs_diff_vs_predictor" in bh:
        lines.append(f"equivalence on {fmt_seconds(bh['seconds'])}: max |release-style - "
                     f"Predictor| = {bh['max_abs_diff_vs_predictor']:.2e} (outputs' std "
                     f"{bh['output_std']:.3f}); emotion probabilities differ by at most "
                     f"{bh['max_prob_diff_vs_predictor']:.2e}")
    if base and bh and bh["frames"] < base["frames"]:
        # peak - static = l * T + q * T^2 through the two release-style points.
        t1, t2 = bh["frames"], base["frames"]
        y1, y2 = (bh["peak_gb"] - bh["static_gb"]), (base["peak_gb"] - base["static_gb"])
        q = (y2 / t2 - y1 / t1) / (t2 - t1)
        lin = y1 / t1 - q * t1
        if q <= 0:
            q, lin = y2 / (t2 * t2), 0.0
        static = base["static_gb"]
        for seconds in (RELEASE_REFERENCE_SECONDS, 600.0):
            t = frames_for(seconds)
            fit = static + lin * t + q * t * t
            maps = attention_map_bytes(t) / GB
            floor = static + maps
            fit = max(fit, floor)
            derived[f"release_extrapolated_peak_gb_{int(seconds)}s"] = fit
            lines.append(f"release-style extrapolated peak for {fmt_seconds(seconds)} ({t} frames):"
                         f" {fit:.0f} GB (quadratic fit through the two measured release-style "
                         f"peaks, at least the model plus one encoder's kept maps: "
                         f"{static:.1f} + {maps:.0f} GB)")
    elif base:
        t = frames_for(RELEASE_REFERENCE_SECONDS)
        q = (base["peak_gb"] - base["static_gb"]) / base["frames"] ** 2
        fit = base["static_gb"] + q * t * t
        derived["release_extrapolated_peak_gb_270s"] = fit
        lines.append(f"release-style extrapolated peak for 4.5 min ({t} frames): {fit:.0f} GB")

    full, enc = by.get("a-full-long"), by.get("d-encoders-long")
    if full and enc:
        ratio = full["time_s"] / enc["time_s"]
        cpu_ratio = full["cpu_s"] / enc["cpu_s"]
        derived["full_over_encoders"] = ratio
        derived["full_over_encoders_cpu"] = cpu_ratio
        lines.append(f"{fmt_seconds(full['seconds'])}: full pipeline {full['time_s']:.1f} s / "
                     f"encoders alone {enc['time_s']:.1f} s = {ratio:.3f} (in CPU seconds: "
                     f"{full['cpu_s']:.1f} / {enc['cpu_s']:.1f} = {cpu_ratio:.3f})")
        # On a shared machine the two long runs see different loads; CPU seconds compare the
        # work done more fairly than wall time then.
        shared = max(full["others_cores"], enc["others_cores"]) > SHARED_CORES
        judged = cpu_ratio if shared else ratio
        how = "CPU seconds: the machine was shared" if shared else "wall time"
        checks.append(f"{verdict(judged <= TARGET_FULL_OVER_ENCODERS)}  full-size "
                      f"{fmt_seconds(full['seconds'])} within {TARGET_FULL_OVER_ENCODERS}x of the "
                      f"encoders' own cost: {judged:.3f}x ({how}){suffix}")
    if full:
        checks.append(f"{verdict(full['peak_gb'] < TARGET_FULL_PEAK_GB)}  full-size "
                      f"{fmt_seconds(full['seconds'])} peak under {TARGET_FULL_PEAK_GB:g} GB: "
                      f"{full['peak_gb']:.2f} GB{suffix}")
    compact = by.get("b-compact-long")
    if compact:
        checks.append(f"{verdict(compact['rtf'] >= TARGET_COMPACT_RTF)}  compact model at least "
                      f"{TARGET_COMPACT_RTF:g}x faster than real time on "
                      f"{fmt_seconds(compact['seconds'])}: RTF {compact['rtf']:.0f}{suffix}")
    c10 = by.get("b-compact-10s")
    if c10:
        checks.append(f"{verdict(c10['rtf'] >= TARGET_COMPACT_RTF)}  (info) compact model on 10 s:"
                      f" RTF {c10['rtf']:.0f}")
    return lines, checks, derived


def table(results: list[dict]) -> str:
    head = (f"{'case':<17} {'what':<52} {'audio':>8} {'frames':>7} {'compute s':>10} "
            f"{'RTF':>8} {'peak GB':>8} {'model GB':>9} {'cpu/wall':>8} {'others':>6} {'runs':>4}")
    rows = [head, "-" * len(head)]
    for r in results:
        what = r["label"]
        if "error" in r:
            rows.append(f"{r['name']:<17} {what:<52} {fmt_seconds(r['seconds']):>8}  "
                        f"ERROR: {r['error']}")
            continue
        rtf = f"{r['rtf']:.1f}" if r["rtf"] >= 10 else f"{r['rtf']:.3f}"
        rows.append(f"{r['name']:<17} {what:<52} {fmt_seconds(r['seconds']):>8} "
                    f"{r['frames']:>7} {r['time_s']:>10.2f} {rtf:>8} {r['peak_gb']:>8.2f} "
                    f"{r['static_gb']:>9.2f} {r['cpu_per_wall']:>8.2f} {r['others_cores']:>6.2f} "
                    f"{len(r['times_s']):>4}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 s cases and a 60 s long case instead of 10 minutes; small "
                             "baseline (about a few minutes in all)")
    parser.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--json", metavar="OUT", help="also write every result to this file")
    parser.add_argument("--baseline-cap-gb", type=float, default=None,
                        help="cap on the baseline's estimated kept attention maps (default 12, "
                             "1.5 with --quick)")
    parser.add_argument("--max-wait-idle", type=float, default=600.0, metavar="SECONDS",
                        help="before each case, wait up to this long for other processes to "
                             "leave the CPU (default 600; 0: do not wait)")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(json.loads(args.worker))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    cases = plan(args)
    started = time.perf_counter()
    results = []
    for i, spec in enumerate(cases, 1):
        log(f"[{i}/{len(cases)}] {spec['name']}: {spec['label']}, {fmt_seconds(spec['seconds'])}"
            f" (load average {os.getloadavg()[0]:.2f})")
        wait_for_quiet(args.max_wait_idle)
        results.append(run_case(spec))
    lines, checks, derived = derive(results, args.quick)

    import torch

    machine = (f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or ''}"
               f" torch {torch.__version__}, {THREADS} threads").replace("  ", " ")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"EmoTalk inference benchmark, {when}, {machine}"
          f"{' (--quick)' if args.quick else ''}")
    print("RTF = seconds of audio per second of compute (>1 faster than real time); peak GB = "
          "peak resident memory of the case's own process; model GB = resident after building "
          "the model and a warm-up, before the timed run; cpu/wall = process CPU seconds per "
          "second of the timed run (2.00 = both cores busy; less: waiting, or the machine was "
          "shared); others = cores that other processes used on average meanwhile (0.00: the "
          "machine was ours); runs > 1: the fastest of that many timed runs. GB = 1e9 bytes.\n")
    print(table(results))
    print()
    for line in lines:
        print(line)
    print()
    for line in checks:
        print(line)
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    if args.json:
        payload = {"date": when, "machine": machine, "quick": args.quick, "results": results,
                   "derived": derived, "comparisons": lines, "checks": checks}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
