"""Speed of the add-on's two hot paths, for 10 minutes of animation (18,000 frames at 30 fps):

(a) writing 52 channels x 18,000 frames onto a mesh's shape keys with the add-on's bulk writer
    (`blender_addon/anim.py`: `keyframe_points.add` + `foreach_set`) against the per-key
    baseline (`key_block.keyframe_insert` per frame and channel, as a naive add-on does). The
    baseline is measured on a subset (52 x 500 and 52 x 1000 keys) and extrapolated linearly to
    18,000 frames, which underestimates it: Blender inserts each key into a growing array, so
    the cost per key grows with the curve's length. Hence a second measurement: one channel at
    its full 18,000 keys, times 52 (the curves are independent). Targets: bulk under 1 s, and at
    least 50x faster than the baseline (against the full-length estimate; the subset's lower
    bound is printed beside it).
(b) the backend round trip for the same 10 minutes EXCLUDING model compute: the real stdio
    server (`python -m emotalk_core serve` code) runs in a subprocess with `Predictor` replaced
    by a stub that returns a precomputed 18,000 x 52 float32 array (resampled to the requested
    rate), so what is timed is the
    request, float32 -> base64 -> JSON encoding, the pipe, JSON decoding, base64 -> numpy
    decoding and channel reordering (`backend.decode_result`), and the server's resampling to
    the scene's rate (as `Predictor` does). Measured through `client.Client` and through the
    add-on's own `BakeJob` (which polls every 50 ms, as Blender's timer does), with an
    in-process breakdown of the steps.

Run from the repository root with the bpy module installed (PyPI bpy 5.0.1 in .venv):

    .venv/bin/python benchmarks/bench_addon.py
    .venv/bin/python benchmarks/bench_addon.py --frames 3000 --baseline-frames 200   # quick

Results go to stdout; `--stub-server` is internal (the subprocess's entry point).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotalk_core import protocol  # noqa: E402
from emotalk_core.arkit import CHANNELS  # noqa: E402
from emotalk_core.client import Client  # noqa: E402

FPS = 30
SEED = 0
BULK_TARGET_S = 1.0
SPEEDUP_TARGET = 50.0


def reference_values(frames: int) -> np.ndarray:
    """The curves the stub returns (seeded, so the client can check what it decoded)."""
    return np.random.default_rng(SEED).random((frames, len(CHANNELS)), dtype=np.float32)


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of this process in that run, last result)."""
    best, best_cpu, result = float("inf"), 0.0, None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(label: str, seconds: float, extra: str = "", unit: str = "s") -> None:
    value = f"{seconds * 1e3:9.1f} ms" if unit == "ms" else f"{seconds:9.3f} s "
    print((f"    {label:<54}{value}" + (f"  ({extra})" if extra else "")).rstrip())


# -- (a) keyframe writing -------------------------------------------------------------------------
def import_bpy():
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="emotalk-bench-"))
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy


def new_face(bpy, name: str):
    """A one-triangle mesh with Basis + the 52 ARKit shape keys; returns its Key datablock."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    for channel in CHANNELS:
        obj.shape_key_add(name=channel)
    return mesh.shape_keys


def clear_animation(bpy, key) -> None:
    anim = key.animation_data
    if anim is not None and anim.action is not None:
        action = anim.action
        key.animation_data_clear()
        bpy.data.actions.remove(action)


def bulk_write(bpy, anim, key, values: np.ndarray) -> int:
    by_key = {name: i for i, name in enumerate(CHANNELS)}
    return anim.write_shape_key_curves(key, by_key, [(1, values)])


def per_key_insert(key, values: np.ndarray) -> int:
    """The baseline: set the value, keyframe_insert, for every frame of every channel."""
    for channel, name in enumerate(CHANNELS):
        block = key.key_blocks[name]
        for i in range(values.shape[0]):
            block.value = float(values[i, channel])
            block.keyframe_insert("value", frame=i + 1)
    return values.size


def fcurve_values(bpy, key, name: str) -> np.ndarray:
    anim = key.animation_data
    path = f'key_blocks["{name}"].value'
    if hasattr(anim, "action_slot"):
        from bpy_extras.anim_utils import action_get_channelbag_for_slot

        curve = action_get_channelbag_for_slot(anim.action, anim.action_slot).fcurves.find(path)
    else:
        curve = anim.action.fcurves.find(path)
    co = np.zeros(len(curve.keyframe_points) * 2, dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)


def bench_keyframes(frames: int, baseline_frames: int, repeats: int,
                    full_channel: bool) -> dict[str, float]:
    bpy = import_bpy()
    from blender_addon import anim  # the add-on's writer, from the source tree

    values = reference_values(frames)
    key = new_face(bpy, "Bulk")

    def fresh_bulk() -> int:
        clear_animation(bpy, key)
        return bulk_write(bpy, anim, key, values)

    bulk_s, bulk_cpu, written = timed(fresh_bulk, repeats)
    got = fcurve_values(bpy, key, "jawOpen")
    assert written == values.size and got.shape[0] == frames
    np.testing.assert_allclose(got[:, 1], values[:, CHANNELS.index("jawOpen")], rtol=1e-6)
    rebake_s, _, _ = timed(lambda: bulk_write(bpy, anim, key, values[::-1].copy()), repeats)
    n = len(CHANNELS)
    print(f"(a) shape-key keyframes: {n} channels x {frames} frames = {n * frames:,} keys "
          f"(bpy {bpy.app.version_string})")
    row("bulk writer (anim.write_shape_key_curves), new curves", bulk_s,
        f"cpu {bulk_cpu:.3f} s, best of {repeats}; {verdict(bulk_s < BULK_TARGET_S)} target "
        f"< {BULK_TARGET_S:g} s")
    row("bulk writer, re-bake over the existing keys", rebake_s)
    subset = baseline_subset(bpy, values, baseline_frames)
    full = baseline_full_channel(bpy, values) if full_channel else None
    baseline = full if full is not None else subset
    speedup = baseline / bulk_s
    print(f"    speed-up of the bulk writer over keyframe_insert: {speedup:,.0f}x  "
          f"{verdict(speedup >= SPEEDUP_TARGET)} target >= {SPEEDUP_TARGET:g}x (against the "
          f"{'full-length' if full is not None else 'subset'} estimate; the subset's linear "
          f"extrapolation alone gives {subset / bulk_s:,.0f}x, a lower bound)")
    return {"bulk_s": bulk_s, "rebake_s": rebake_s, "baseline_subset_extrapolated_s": subset,
            "baseline_full_channel_extrapolated_s": full or 0.0, "speedup": speedup}


def baseline_subset(bpy, values: np.ndarray, count: int) -> float:
    """keyframe_insert on 52 x `count` keys (and half that), extrapolated LINEARLY to all
    frames; returns the estimate in seconds."""
    n, frames = len(CHANNELS), values.shape[0]
    for size in (max(1, count // 2), count):
        key = new_face(bpy, f"Base{size}")
        wall, _, _ = timed(lambda key=key, size=size: per_key_insert(key, values[:size]))
        row(f"keyframe_insert per key, {n} x {size} keys", wall,
            f"{wall / (n * size) * 1e6:.1f} us/key")
    estimate = wall / (n * count) * n * frames
    row(f"  extrapolated LINEARLY to {n} x {frames} keys", estimate,
        "from the subset above; a lower bound: the cost per key grows with the curve's length")
    return estimate


def baseline_full_channel(bpy, values: np.ndarray) -> float:
    """keyframe_insert on ONE channel over all frames, times 52 (channels are separate curves,
    so this is linear): includes the growth of the cost with the curve's length."""
    n, frames = len(CHANNELS), values.shape[0]
    key = new_face(bpy, "Full")
    wall, _, _ = timed(lambda: per_key_insert_channel(key, values[:, 0], CHANNELS[0]))
    row(f"keyframe_insert per key, 1 channel x {frames} keys", wall,
        f"{wall / frames * 1e6:.1f} us/key at full length")
    row(f"  times {n} channels (full-length estimate)", wall * n)
    return wall * n


def per_key_insert_channel(key, column: np.ndarray, name: str) -> None:
    block = key.key_blocks[name]
    for i, value in enumerate(column.tolist()):
        block.value = value
        block.keyframe_insert("value", frame=i + 1)


# -- (b) backend round trip -----------------------------------------------------------------------
def stub_server() -> int:
    """The real server loop with `Predictor` replaced: no model, no audio, no compute."""
    from emotalk_core import inference
    from emotalk_core.postprocess import resample
    from emotalk_core.server import serve

    class StubPredictor:
        def __init__(self, model: str, device: str = "auto"):
            self.values = reference_values(int(str(model).split(":")[1]))
            self.device = "cpu"

        def describe(self) -> dict:
            return {"name": "stub", "kind": "stub", "fps": FPS, "persons": 24,
                    "emotions": ["neutral"], "presets": [], "path": None, "parameters": 0,
                    "device": "cpu"}

        def predict(self, audio, *, start=None, end=None, fps=FPS, controls=None,
                    transcript=None, progress=None, cancel=None) -> inference.Prediction:
            values = self.values
            if fps != FPS:  # as Predictor does
                values = resample(values, FPS, fps, round(values.shape[0] * fps / FPS))
            return inference.Prediction(values, float(fps), 0.0, CHANNELS, {"neutral": 1.0})

    inference.Predictor = StubPredictor
    return serve()


def stub_command() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--stub-server"]


def stub_python(folder: Path) -> str:
    """An executable the add-on accepts as its backend "python": it runs the stub server
    whatever arguments it gets (the add-on passes `-m emotalk_core serve`)."""
    script = folder / "stub-python"
    script.write_text(f'#!/bin/sh\nexec {shlex.join(stub_command())}\n')
    script.chmod(0o755)
    return str(script)


def breakdown(values: np.ndarray) -> dict[str, float]:
    """The round trip's steps in this process, without a pipe (best of 5 each)."""
    from blender_addon.backend import decode_result
    from emotalk_core.postprocess import resample

    def encode() -> dict:
        return {"frames": values.shape[0], "fps": FPS, "channels": list(CHANNELS),
                "encoding": protocol.ENCODING_F32LE,
                "values": protocol.encode_values(values.astype("<f4", copy=False).tobytes())}

    result = encode()
    line = protocol.encode_message(protocol.result(1, result))
    steps = {
        "float32 -> base64": timed(encode, 5)[0],
        "JSON encode (server)": timed(lambda: protocol.encode_message(
            protocol.result(1, result)), 5)[0],
        "JSON decode (client)": timed(lambda: protocol.decode_message(
            line, protocol.MAX_RESULT_BYTES), 5)[0],
        "base64 -> numpy, reorder": timed(lambda: decode_result(result), 5)[0],
        "resample 30 -> 24 fps (server)": timed(lambda: resample(values, FPS, 24.0,
                                                        values.shape[0] * 4 // 5), 5)[0],
        "raw float32 MB": values.nbytes / 1e6,
        "message MB": len(line) / 1e6,
    }
    assert base64.b64decode(result["values"]) == values.tobytes()
    return steps


def client_round_trip(frames: int, repeats: int) -> list[float]:
    from blender_addon.backend import decode_result

    want = reference_values(frames)
    walls = []
    with Client(stub_command(), env=dict(os.environ, PYTHONUNBUFFERED="1")) as client:
        client.initialize(f"stub:{frames}", "cpu", timeout=120)
        for _ in range(repeats):
            start = time.perf_counter()
            result = client.call(protocol.METHOD_ANIMATE,
                                 protocol.animate_params("/dev/null", 0.0, None, FPS, {}))
            values = decode_result(result)
            walls.append(time.perf_counter() - start)
            np.testing.assert_array_equal(values, want)
    return walls


def addon_round_trip(frames: int, repeats: int, folder: Path) -> list[float]:
    """The add-on's own path: Backend + BakeJob.run (polling) of a 24 fps scene, decode."""
    from blender_addon import backend

    settings = backend.BackendSettings(stub_python(folder), f"stub:{frames}", "cpu")
    session = backend.Backend(settings, folder / "backend.log")
    scene_frames = frames * 4 // 5
    request = backend.AnimateRequest("bench", "/dev/null", 0.0, None, scene_frames, 24.0)
    walls = []
    try:
        backend.BakeJob(session, [request], {}).run()  # initialize (not timed)
        for _ in range(repeats):
            start = time.perf_counter()
            curves = backend.BakeJob(session, [request], {}).run()
            walls.append(time.perf_counter() - start)
            assert curves[0].values.shape == (scene_frames, len(CHANNELS))
    finally:
        session.close()
    return walls


def bench_round_trip(frames: int, repeats: int) -> dict[str, float]:
    values = reference_values(frames)
    steps = breakdown(values)
    client = client_round_trip(frames, repeats)
    with tempfile.TemporaryDirectory(prefix="emotalk-bench-") as tmp:
        addon = addon_round_trip(frames, repeats, Path(tmp))
    seconds = frames / FPS
    print(f"(b) backend round trip EXCLUDING model compute: {frames} x {len(CHANNELS)} float32 "
          f"({seconds / 60:.1f} min at {FPS} fps); stub Predictor returns a precomputed array")
    print(f"    payload: {steps['raw float32 MB']:.2f} MB float32 -> {steps['message MB']:.2f} MB "
          "JSON line (base64)")
    for name in ("float32 -> base64", "JSON encode (server)", "JSON decode (client)",
                 "base64 -> numpy, reorder", "resample 30 -> 24 fps (server)"):
        row(f"in-process step: {name}", steps[name], unit="ms")
    row("round trip: client.Client animate + decode_result", min(client), unit="ms",
        extra=f"best of {repeats}; median {statistics.median(client) * 1e3:.1f} ms")
    row("round trip: add-on BakeJob.run at 24 fps", min(addon), unit="ms",
        extra=f"best of {repeats}; median {statistics.median(addon) * 1e3:.1f} ms; polls "
        "every 50 ms")
    return {"client_best_ms": min(client) * 1e3, "addon_best_ms": min(addon) * 1e3,
            **{k: v for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=18000, help="frames (default 18000: "
                        "10 minutes at 30 fps)")
    parser.add_argument("--baseline-frames", type=int, default=1000,
                        help="frames per channel for the keyframe_insert baseline (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (best is reported)")
    parser.add_argument("--no-full-channel", action="store_true",
                        help="skip the full-length keyframe_insert channel (about 15 s)")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--stub-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub_server:
        return stub_server()
    print(f"bench_addon: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    numbers = {"keyframes": bench_keyframes(args.frames, args.baseline_frames, args.repeats,
                                            not args.no_full_channel),
               "round_trip": bench_round_trip(args.frames, args.repeats)}
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
