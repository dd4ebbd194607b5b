"""Generated bad inputs (seeded, bounded in time): configs, safetensors headers and protocol
messages thrown at the model loader and the stdio server. Only the project's own errors may come
out: EmoTalkError subclasses from the loader, and error replies other than -32603 ("a bug in the
backend") from the server, which must keep serving and exit 0.

The seed is fixed so a failure reproduces; EMOTALK_FUZZ_SEED explores others."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from emotalk_core import checkpoint as ckpt
from emotalk_core import protocol as p
from emotalk_core.errors import EmoTalkError

from .conftest import speechlike

SEED = int(os.environ.get("EMOTALK_FUZZ_SEED", "11"))
BUDGET_S = 60.0  # each test's wall-clock bound; a hang or a slow path fails it
SPECIAL: list[Any] = [
    -1, 0, 1, 2, 3, 7, 2**31, 2**63, 10**30, -(10**30), 0.5, 600.5, -0.0, 1e308, -1e308,
    float("nan"), float("inf"), "", "1", "x" * 300, "default", True, False, None, [], [1],
    ["a", "a"], {}, {"a": 1}, [[[[[]]]]],
]  # fmt: skip


def random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    """Any JSON value, biased to the ones that break parsers: boundary numbers, wrong types,
    empty and repeated containers."""
    roll = rng.random()
    if roll < 0.55 or depth > 2:
        return copy.deepcopy(SPECIAL[rng.integers(len(SPECIAL))])
    if roll < 0.65:
        return int(rng.integers(-(2**40), 2**40))
    if roll < 0.75:
        return float(rng.normal() * 10 ** rng.integers(0, 12))
    if roll < 0.85:
        return [random_value(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    return {str(random_value(rng, 3))[:12]: random_value(rng, depth + 1)
            for _ in range(rng.integers(0, 4))}


def paths_in(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path (dict keys, list indices) inside a JSON value."""
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += paths_in(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += paths_in(value, (*prefix, index))
    return found


def mutate(obj: Any, rng: np.random.Generator) -> Any:
    """A copy with one to three changes: a value replaced, a key removed or added, or the whole
    thing wrapped in deep nesting."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.integers(1, 4)):
        paths = paths_in(obj)
        if not paths or rng.random() < 0.03:
            return [obj] if rng.random() < 0.5 else random_value(rng)
        path = paths[rng.integers(len(paths))]
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        action = rng.random()
        if action < 0.7:
            parent[path[-1]] = random_value(rng)
        elif action < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent["unknown_" + str(rng.integers(100))] = random_value(rng)
    return obj


def raises_only_our_errors(call) -> str:
    """'ok' or the name of our error class; anything else fails the test."""
    try:
        call()
    except EmoTalkError as exc:
        assert exc.message and "\n" not in exc.message, repr(exc.message)
        return type(exc).__name__
    return "ok"


@pytest.fixture
def scratch_model(tmp_path, tiny_model_dir) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


# -- configs --------------------------------------------------------------------------------------
def test_generated_configs_give_our_errors_only(scratch_model):
    rng = np.random.default_rng(SEED)
    original = json.loads((scratch_model / ckpt.CONFIG_FILE).read_text())
    outcomes: dict[str, int] = {}
    start = time.monotonic()
    for case in range(120):
        header = mutate(original, rng)
        text = json.dumps(header, allow_nan=True)
        if case % 20 == 19:  # damaged text, not only damaged values
            cut = int(rng.integers(0, len(text)))
            text = text[:cut] + ("[" * 5000 if case % 40 == 39 else "")
        (scratch_model / ckpt.CONFIG_FILE).write_text(text)
        name = raises_only_our_errors(lambda: ckpt.load_model(scratch_model))
        outcomes[name] = outcomes.get(name, 0) + 1
        assert time.monotonic() - start < BUDGET_S, f"case {case} made loading slow"
    assert outcomes.get("ModelError", 0) > 90, outcomes  # most damage is found


# -- safetensors headers --------------------------------------------------------------------------
def safetensors_parts(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (size,) = struct.unpack_from("<Q", raw)
    return json.loads(raw[8:8 + size]), raw[8 + size:]


HARMLESS = 3  # the damage kind that only changes __metadata__, which the loader ignores


def damaged_header(header: dict[str, Any], data: bytes, rng: np.random.Generator
                   ) -> tuple[int, bytes]:
    """(kind, bytes) of a safetensors file whose header was changed in one of the ways that
    matter: dtypes, shapes, offsets, the header's own length, or its JSON."""
    header = copy.deepcopy(header)
    names = [k for k in header if k != "__metadata__"]
    name = names[rng.integers(len(names))]
    entry = header[name]
    kind = int(rng.integers(9))
    if kind == 0:
        entry["dtype"] = ["I8", "BOOL", "C64", "U8", "I64", "F8_E4M3", "Q4", "", 5][
            rng.integers(9)]
    elif kind == 1:
        entry["shape"] = [[-1], [2**40, 2**40], [0], [], ["a"], [1.5], None, [2**63]][
            rng.integers(8)]
    elif kind == 2:
        lo, hi = entry["data_offsets"]
        entry["data_offsets"] = [[hi, lo], [lo, hi + 4], [0, 2**62], [-4, hi], [lo], "x"][
            rng.integers(6)]
    elif kind == 3:
        header["__metadata__"] = random_value(rng)
    elif kind == 4:
        header[name] = random_value(rng)
    elif kind == 5:  # a consistent file for another shape of the same size
        count = math.prod(entry["shape"])
        entry["shape"] = [count] if len(entry["shape"]) > 1 else [1, count]
    elif kind == 6:  # the same bytes read as half precision: twice the elements
        entry["dtype"], entry["shape"] = "F16", [2 * math.prod(entry["shape"])]
    text = json.dumps(header).encode()
    if kind == 7:
        text = text[: int(rng.integers(1, len(text)))]
    size = len(text)
    if kind == 8:
        size = [2**63, 2**40, len(text) + len(data) + 1, 0, 7][rng.integers(5)]
    return kind, struct.pack("<Q", size) + text + data


def retyped(raw: bytes, rng: np.random.Generator) -> bytes:
    """The same tensors, one of them stored as an integer, boolean or complex type."""
    import torch
    from safetensors.torch import load, save

    state = load(raw)
    name = sorted(state)[rng.integers(len(state))]
    dtype = [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool,
             torch.complex64][rng.integers(6)]
    state[name] = state[name].to(dtype)
    return save(state)


def test_generated_safetensors_headers_give_our_errors_only(scratch_model):
    rng = np.random.default_rng(SEED + 1)
    weights = scratch_model / ckpt.WEIGHTS_FILE
    presets = scratch_model / ckpt.PRESETS_FILE
    parts = {path: safetensors_parts(path) for path in (weights, presets)}
    originals = {path: path.read_bytes() for path in parts}
    outcomes: dict[str, int] = {}
    start = time.monotonic()
    for case in range(90):
        target = weights if case % 3 else presets
        for path, raw in originals.items():
            path.write_bytes(raw)
        if case % 5 == 4:  # a consistent file with one tensor of another type
            kind, damaged = 9, retyped(originals[target], rng)
        else:
            kind, damaged = damaged_header(*parts[target], rng)
        target.write_bytes(damaged)
        name = raises_only_our_errors(lambda: ckpt.load_model(scratch_model))
        assert name == "ModelError" or kind == HARMLESS, f"case {case}: damage {kind} loaded"
        outcomes[name] = outcomes.get(name, 0) + 1
        assert time.monotonic() - start < BUDGET_S, f"case {case} made loading slow"
    assert outcomes.get("ModelError", 0) > 75, outcomes


# -- protocol messages ----------------------------------------------------------------------------
def protocol_lines(rng: np.random.Generator, audio: Path, models: list[str]
                   ) -> tuple[list[bytes], int]:
    """Generated lines for the server, and how many replies they must get."""
    good_animate = p.animate_params(audio, fps=24, controls={"level": 0.5})
    good_initialize = {"protocolVersion": 1, "model": models[0], "device": "cpu"}
    lines, replies = [], 0
    for i in range(400):
        kind = i % 8
        if kind in (0, 1, 2):
            params = mutate(good_animate, rng)
            msg: Any = p.request(i, "animate", params if isinstance(params, dict) else None)
            if not isinstance(params, dict):
                msg["params"] = params
        elif kind == 3:
            params = dict(good_animate, audio={"path": [
                "", "\0", "x" * 5000, "/" + "a" * 300 + ".wav", str(audio.parent), "/dev/null",
                "/proc/self/mem", str(audio) + "\0x"][i // 8 % 8]})
            msg = p.request(i, "animate", params)
        elif kind == 4:
            params = mutate(good_initialize, rng)
            if rng.random() < 0.5:
                params = dict(good_initialize, model=models[int(rng.integers(len(models)))])
            msg = p.request(i, "initialize", params)
        elif kind == 5:
            msg = mutate(p.request(i, "animate", good_animate), rng)
        elif kind == 6:
            msg = p.notification([p.METHOD_CANCEL, "zz/unknown"][i // 8 % 2],
                                 random_value(rng) if rng.random() < 0.5 else {"id": i - 1})
        else:
            line = json.dumps(good_animate).encode()[: int(rng.integers(1, 40))]
            lines.append(line + b"\n")
            replies += 1
            continue
        text = json.dumps(msg, allow_nan=True).encode()
        lines.append(text + b"\n")
        replies += expects_reply(msg)
    return lines, replies


def expects_reply(msg: Any) -> bool:
    """Whether the server must answer: everything but a well-formed notification."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return True
    if "method" in msg and "id" not in msg and isinstance(msg["method"], str):
        return "params" in msg and not isinstance(msg["params"], dict | type(None))
    return True


def test_generated_protocol_messages_get_our_errors_only(tmp_path, tiny_model_dir):
    """In process (no torch import per case): one server, a real tiny model, and broken model
    folders for `initialize`. Every reply is a result or one of our error codes, never -32603,
    and the server answers the line after the garbage."""
    from emotalk_core.server import Server

    rng = np.random.default_rng(SEED + 2)
    audio = tmp_path / "clip.wav"
    sf.write(audio, speechlike(0.3), 16000)
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    header = json.loads((broken / ckpt.CONFIG_FILE).read_text())
    header["config"]["decoder"]["heads"] = 0
    (broken / ckpt.CONFIG_FILE).write_text(json.dumps(header))
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / ckpt.CONFIG_FILE)
    models = [str(tiny_model_dir), str(broken), str(tmp_path / "fifo"), str(tmp_path / "none"),
              "default", "x" * 5000]
    lines, expected = protocol_lines(rng, audio, models)
    lines.append(p.encode_message(p.request("last", "animate", p.animate_params(audio))))
    out = io.BytesIO()
    server = Server(io.BytesIO(b"".join(lines)), out)
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(server.run()), daemon=True)
    runner.start()
    runner.join(BUDGET_S * 2)
    assert status == [0], "the server hung or failed"
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    answers = [r for r in replies if "method" not in r]
    assert len(answers) == expected + 1
    codes = [r["error"]["code"] for r in answers if "error" in r]
    internal = [r["error"] for r in answers if "error" in r and r["error"]["code"] ==
                p.INTERNAL_ERROR]
    assert not internal, internal[:3]
    assert set(codes) <= {p.PARSE_ERROR, p.INVALID_REQUEST, p.METHOD_NOT_FOUND,
                          p.INVALID_PARAMS, p.AUDIO_ERROR, p.MODEL_ERROR, p.OUT_OF_MEMORY,
                          p.REQUEST_CANCELLED}, set(codes)
    assert {p.PARSE_ERROR, p.INVALID_PARAMS, p.AUDIO_ERROR, p.MODEL_ERROR} <= set(codes)
    assert "result" in answers[-1] and answers[-1]["id"] == "last"
