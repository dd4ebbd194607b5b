"""The stdio backend as a real process (`python -m emotalk_core serve`), spoken to through
`client.Client` and through raw pipes (for messages no well-behaved client would send)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emotalk_core import __version__
from emotalk_core import protocol as p
from emotalk_core.arkit import CHANNELS
from emotalk_core.client import Client

from .conftest import speechlike

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "emotalk_core", "serve"]
TIMEOUT = 120  # generous: two shared CPU cores; a hang still fails


def child_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def init_params(model) -> dict:
    return {"protocolVersion": 1, "client": {"name": "pytest", "version": "0"},
            "model": str(model), "device": "cpu"}


class RawServer:
    """The backend on raw pipes: every stdout line is checked to be a protocol message and
    queued; stderr goes to a file so it can never block the server."""

    def __init__(self, log_path: Path, command: list[str] = SERVE):
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=child_env(), cwd=ROOT)
        self.messages: queue.Queue[dict | None] = queue.Queue()
        self.stray: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.messages.put(p.decode_message(line, p.MAX_RESULT_BYTES))
            except p.ProtocolError:
                self.stray.append(line)
        self.messages.put(None)

    def send(self, obj_or_line) -> None:
        data = obj_or_line if isinstance(obj_or_line, bytes) else p.encode_message(obj_or_line)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def until(self, id, timeout: float = TIMEOUT) -> tuple[dict, list[dict]]:
        """The response to `id`, and every other message received before it."""
        before = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            assert msg is not None, f"server ended before answering {id!r}"
            if p.is_response(msg) and msg.get("id") == id:
                return msg, before
            before.append(msg)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        return self.proc.wait()


@pytest.fixture
def raw(tmp_path):
    server = RawServer(tmp_path / "raw.log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(tiny_model_dir, tmp_path_factory):
    """One initialized backend shared by the module's tests (each start costs a torch import)."""
    log = tmp_path_factory.mktemp("server") / "backend.log"
    c = Client(SERVE, log_path=log, env=child_env(), cwd=ROOT)
    c.initialize(tiny_model_dir, "cpu", client_name="pytest", timeout=TIMEOUT)
    yield c
    assert c.close(grace=20) == 0, c.log_tail()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    """10 minutes of audio: even on a quiet machine the tiny model needs several seconds (about
    0.8 s per 2 minutes here), so a cancel lands mid-request and progress has time to repeat."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, speechlike(600.0, seed=5), 16000, subtype="PCM_16")
    return path


# -- lifecycle ------------------------------------------------------------------------------------
def test_handshake(client, tiny_model_dir):
    info = client.server_info
    assert info["protocolVersion"] == 1
    import platform

    import torch

    from emotalk_core.phonetics import recognize

    assert info["server"] == {"name": "emotalk", "version": __version__,
                              "python": platform.python_version(), "torch": torch.__version__,
                              "recognition": recognize.status()}
    assert info["server"]["recognition"].startswith("Whisper in ")
    model = info["model"]
    assert {k: model[k] for k in ("name", "kind", "fps", "persons", "emotions", "presets")} == {
        "name": "tiny-compact", "kind": "compact", "fps": 30, "persons": 24,
        "emotions": ["neutral", "happy", "sad"], "presets": ["neutral", "happy"]}
    assert info["channels"] == list(CHANNELS) and len(info["channels"]) == 52


def test_requests_before_initialize_fail_except_shutdown(raw):
    raw.send(p.request(1, "animate", p.animate_params("x.wav")))
    reply, _ = raw.until(1)
    assert reply["error"]["code"] == p.MODEL_ERROR
    assert "initialize" in reply["error"]["data"]["detail"]
    assert reply["error"]["data"]["kind"] == "protocol"  # the client's mistake, not the model's
    raw.send(p.request(2, "no/such/method"))
    assert raw.until(2)[0]["error"]["code"] == p.METHOD_NOT_FOUND
    raw.send(p.request(3, "shutdown"))
    assert raw.until(3)[0] == p.result(3, None)
    raw.send(p.request(4, "initialize", {"protocolVersion": 1}))
    assert raw.until(4)[0]["error"]["code"] == p.INVALID_REQUEST  # shutting down
    raw.send(p.notification("exit"))
    assert raw.proc.wait(20) == 0


def test_end_of_input_exits_zero_quickly(raw):
    raw.send(p.notification("no/such/notification"))  # ignored, no reply
    t = time.monotonic()
    raw.proc.stdin.close()
    assert raw.proc.wait(20) == 0
    assert time.monotonic() - t < 5
    assert raw.messages.get(timeout=5) is None and not raw.stray


def test_stdout_carries_protocol_lines_only(tmp_path):
    """Stray prints and native writes to fd 1 during a request go to stderr."""
    script = textwrap.dedent("""
        import os, sys
        from emotalk_core import server
        def noisy(self, params, job):
            print("a stray print")
            os.write(1, b"a native write to fd 1\\n")
            return None
        server.Server.shutdown = noisy
        sys.exit(server.serve())
    """)
    raw = RawServer(tmp_path / "noisy.log", [sys.executable, "-c", script])
    raw.send(p.request(1, "shutdown"))
    assert raw.until(1)[0] == p.result(1, None)
    assert raw.close() == 0
    assert not raw.stray
    log = (tmp_path / "noisy.log").read_text()
    assert "a stray print" in log and "a native write to fd 1" in log


# -- animate --------------------------------------------------------------------------------------
CONTROL_SETS = [
    {},
    {"emotion": {"source": "preset", "preset": "happy", "strength": 0.7}, "level": 0.5,
     "person_weights": {"3": 0.5, "7": 0.5},
     "postprocess": {"smooth": True, "blinks": True, "seed": 4, "clamp": False,
                     "mouth_amplitude": 1.2}},
    {"person": 5, "postprocess": None},
]


def test_animate_matches_the_predictor(client, tiny_model_dir, speech_wav):
    from emotalk_core.controls import Controls
    from emotalk_core.inference import Predictor

    predictor = Predictor(tiny_model_dir, device="cpu")
    for controls in CONTROL_SETS:
        params = p.animate_params(speech_wav, start=0.25, end=1.75, fps=24, controls=controls)
        got = client.call("animate", params, timeout=TIMEOUT)
        want = predictor.predict(speech_wav, start=0.25, end=1.75, fps=24,
                                 controls=Controls.from_dict(controls))
        assert got["frames"] == want.frames == 36 and got["fps"] == 24
        assert got["encoding"] == "base64-f32le" and got["channels"] == list(CHANNELS)
        values = np.frombuffer(p.values_bytes(got["values"], got["frames"], 52), "<f4")
        np.testing.assert_allclose(values.reshape(-1, 52), want.values, atol=1e-6, rtol=0)
        probs = got["emotion"]["probabilities"]
        assert probs.keys() == want.emotion_probabilities.keys()
        np.testing.assert_allclose(list(probs.values()),
                                   list(want.emotion_probabilities.values()), atol=1e-6)
    assert not np.allclose(values, 0.4)  # the network's output, not its bias


def test_animate_reports_progress(client, speech_wav):
    seen = []
    client.call("animate", p.animate_params(speech_wav), on_progress=seen.append,
                timeout=TIMEOUT)
    assert seen, "no $/progress notification arrived"
    assert all(0 <= s.done <= s.total for s in seen)


def test_missing_audio_is_an_audio_error(client, tmp_path):
    with pytest.raises(p.BackendError) as info:
        client.call("animate", p.animate_params(tmp_path / "missing.wav"), timeout=TIMEOUT)
    assert info.value.code == p.AUDIO_ERROR
    assert "missing.wav" in info.value.message and info.value.detail
    assert info.value.kind == "audio"


def test_missing_model_is_a_model_error_and_keeps_the_loaded_one(client, tmp_path, speech_wav):
    with pytest.raises(p.BackendError) as info:
        client.call("initialize", init_params(tmp_path / "no-model"), timeout=TIMEOUT)
    assert info.value.code == p.MODEL_ERROR and info.value.detail
    assert info.value.kind == "model"
    # the command line's flags are its own: a client words the fix from the kind
    assert "--model" not in str(info.value)
    assert client.call("animate", p.animate_params(speech_wav), timeout=TIMEOUT)["frames"] == 60


@pytest.mark.parametrize("params, code", [
    ({"audio": "x.wav"}, p.INVALID_PARAMS),
    ({"audio": {"path": 5}}, p.INVALID_PARAMS),
    ({"audio": {"path": "x.wav", "start": "0"}}, p.INVALID_PARAMS),
    ({"audio": {"path": "x.wav"}, "fps": True}, p.INVALID_PARAMS),
    ({"audio": {"path": "x.wav"}, "controls": [1]}, p.INVALID_PARAMS),
    ({"audio": {"path": "x.wav"}, "controls": {"level": 2}}, p.INVALID_PARAMS),
    ({"audio": {"path": "SPEECH"}, "controls": {"emotion": {"source": "preset",
                                                            "preset": "nope"}}},
     p.INVALID_PARAMS),
    ({"audio": {"path": "x.wav"}, "controls": {"unknown_key": 1}}, p.INVALID_PARAMS),
])
def test_bad_animate_params(client, speech_wav, params, code):
    if params["audio"] == {"path": "SPEECH"}:
        params = dict(params, audio={"path": str(speech_wav)})
    with pytest.raises(p.BackendError) as info:
        client.call("animate", params, timeout=TIMEOUT)
    assert info.value.code == code and info.value.detail
    assert info.value.kind in ("protocol", "controls")


def test_transcript_reaches_the_model_and_its_warning_comes_back(client, speech_wav):
    """The tiny model has no phonetic input: a transcript must reach `Predictor.predict` to be
    reported as ignored; without one, the result says so with empty warnings."""
    plain = client.call("animate", p.animate_params(speech_wav), timeout=TIMEOUT)
    assert plain["warnings"] == [] and plain["phoneSource"] is None
    got = client.call("animate", p.animate_params(speech_wav, transcript="Author of the danger "
                                                  "trail."), timeout=TIMEOUT)
    assert got["phoneSource"] is None and got["frames"] == plain["frames"]
    assert len(got["warnings"]) == 1 and "transcript was ignored" in got["warnings"][0]
    assert got["values"] == plain["values"]  # ignored: the same curves
    null = client.call("animate", {**p.animate_params(speech_wav), "transcript": None},
                       timeout=TIMEOUT)
    assert null["warnings"] == []


@pytest.mark.parametrize("transcript", [5, ["words"], {"text": "words"}, True])
def test_a_transcript_that_is_not_text_is_invalid_params(client, speech_wav, transcript):
    params = {**p.animate_params(speech_wav), "transcript": transcript}
    with pytest.raises(p.BackendError) as info:
        client.call("animate", params, timeout=TIMEOUT)
    assert info.value.code == p.INVALID_PARAMS
    assert "transcript must be a string" in info.value.message and info.value.detail


class FakePredictor:
    """Records what `animate` passes on and answers like a model with a phonetic input."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def predict(self, audio, **kwargs):
        from emotalk_core.inference import Prediction

        self.calls.append({"audio": audio, **kwargs})
        return Prediction(values=np.zeros((3, 52), np.float32), fps=kwargs["fps"], start=0.0,
                          channels=CHANNELS, emotion_probabilities={"neutral": 1.0},
                          phone_source="alignment", warnings=["one note", "another note"])


def test_animate_passes_the_transcript_and_returns_source_and_warnings():
    """In process, with a fake model: the exact text arrives, the result carries both fields."""
    import io

    from emotalk_core.server import Server

    text = "Ça va? \"Quoted\"\nsecond line"
    lines = [p.request(1, "animate", p.animate_params("a.wav", fps=24, transcript=text)),
             p.request(2, "animate", p.animate_params("b.wav"))]
    out = io.BytesIO()
    server = Server(io.BytesIO(b"".join(map(p.encode_message, lines))), out)
    server.predictor = fake = FakePredictor()
    assert server.run() == 0
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    results = {r["id"]: r["result"] for r in replies if "id" in r and "result" in r}
    assert [c["transcript"] for c in fake.calls] == [text, None]
    assert results[1]["phoneSource"] == "alignment"
    assert results[1]["warnings"] == ["one note", "another note"]
    assert results[1]["fps"] == 24


def test_protocol_version_mismatch(client):
    with pytest.raises(p.BackendError) as info:
        client.call("initialize", {"protocolVersion": 2, "model": "default"}, timeout=TIMEOUT)
    assert info.value.code == p.INVALID_PARAMS and "version" in info.value.message
    assert info.value.kind == "protocol"


def test_an_unknown_or_absent_device_is_a_device_error(client, tiny_model_dir, speech_wav):
    devices = ["tpu"] if torch.cuda.is_available() else ["tpu", "cuda"]
    for device in devices:
        with pytest.raises(p.BackendError) as info:
            client.call("initialize", {**init_params(tiny_model_dir), "device": device},
                        timeout=TIMEOUT)
        assert (info.value.code, info.value.kind) == (p.INVALID_PARAMS, "device"), device
        assert "--device" not in str(info.value)
    assert client.call("animate", p.animate_params(speech_wav), timeout=TIMEOUT)["frames"] == 60


def test_a_missing_torch_is_a_dependency_error_naming_it_and_the_python(tmp_path,
                                                                         tiny_model_dir):
    server = RawServer(tmp_path / "raw.log", [sys.executable, str(ROOT / "tests" / "no_torch.py"),
                                               "-m", "emotalk_core", "serve"])
    try:
        server.send(p.request(1, "initialize", init_params(tiny_model_dir)))
        error = server.until(1)[0]["error"]
        assert error["data"]["kind"] == "dependency", error
        assert "'torch'" in error["message"] and sys.executable in error["message"], error
        assert "bug" not in json.dumps(error), error
        # the server lives on: the next request is answered, and it still has no model
        server.send(p.request(2, "animate", p.animate_params("x.wav")))
        assert server.until(2)[0]["error"]["data"]["kind"] == "protocol"
    finally:
        server.close()
    assert "Traceback" in (tmp_path / "raw.log").read_text()  # the log keeps the cause


def test_cancel_mid_request_and_the_server_stays_usable(client, long_wav, speech_wav):
    handle = client.start_call("animate", p.animate_params(long_wav, controls={
        "postprocess": None}))
    deadline = time.monotonic() + TIMEOUT
    while not (handle.progress and handle.progress.done >= 1) and not handle.finished:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    handle.cancel()  # the network is running: its first layer has started
    t = time.monotonic()
    with pytest.raises(p.BackendError) as info:
        handle.wait(timeout=TIMEOUT)
    assert info.value.code == p.REQUEST_CANCELLED, "finished before the cancel landed"
    assert time.monotonic() - t < 30
    assert client.call("animate", p.animate_params(speech_wav), timeout=TIMEOUT)["frames"] == 60


def test_cancel_of_a_queued_request(client, long_wav, speech_wav):
    running = client.start_call("animate", p.animate_params(long_wav))
    queued = client.start_call("animate", p.animate_params(speech_wav))
    queued.cancel()
    running.cancel()
    for handle in (queued, running):
        with pytest.raises(p.BackendError) as info:
            handle.wait(timeout=TIMEOUT)
        assert info.value.code == p.REQUEST_CANCELLED


@pytest.mark.slow
def test_progress_at_least_once_a_second_during_a_long_request(client, long_wav):
    times = []
    t0 = time.monotonic()
    client.call("animate", p.animate_params(long_wav),
                on_progress=lambda _: times.append(time.monotonic()), timeout=TIMEOUT)
    t1 = time.monotonic()
    gaps = np.diff([t0, *times, t1])
    assert t1 - t0 > 1.5 and len(times) >= 3
    assert gaps.max() < 1.0, f"longest silence {gaps.max():.2f} s"


# -- bad inputs get our own errors (issue 11) ------------------------------------------------
def test_a_10_megabyte_audio_path_is_an_audio_error(client):
    with pytest.raises(p.BackendError) as info:
        client.call("animate", p.animate_params("/tmp/" + "a" * 10_000_000 + ".wav"),
                    timeout=TIMEOUT)
    assert info.value.code == p.AUDIO_ERROR and "too long" in info.value.message
    assert len(info.value.message) < 400


def broken_models(root: Path, good: Path) -> dict[str, Path]:
    """Model folders damaged in the ways a loader must refuse, by name."""
    from safetensors.torch import load_file, save_file

    edits = {
        "heads 0": lambda h: h["config"]["decoder"].update(heads=0),
        "negative size": lambda h: h["config"]["content_encoder"].update(hidden_size=-1),
        "float window": lambda h: h["config"].update(window_frames=600.5),
        "huge persons": lambda h: h["config"].update(num_persons=10**12),
        "metadata list": lambda h: h.update(metadata=[1]),
        "version text": lambda h: h.update(format_version="1"),
    }
    out = {}
    for name, edit in edits.items():
        folder = Path(shutil.copytree(good, root / name.replace(" ", "-")))
        header = json.loads((folder / "config.json").read_text())
        edit(header)
        (folder / "config.json").write_text(json.dumps(header))
        out[name] = folder
    int8 = Path(shutil.copytree(good, root / "int8"))
    state = load_file(int8 / "model.safetensors")
    save_file({k: v.to(torch.int8) for k, v in state.items()}, int8 / "model.safetensors")
    out["int8 weights"] = int8
    nested = Path(shutil.copytree(good, root / "nested"))
    (nested / "config.json").write_text("[" * 100_000)
    out["nested json"] = nested
    loop = root / "loop"
    loop.symlink_to(loop)
    out["symlink loop"] = loop
    return out


def test_initialize_with_a_broken_model_is_a_model_error(client, tiny_model_dir, tmp_path,
                                                         speech_wav):
    for name, folder in broken_models(tmp_path, tiny_model_dir).items():
        with pytest.raises(p.BackendError) as info:
            client.call("initialize", init_params(folder), timeout=TIMEOUT)
        assert info.value.code == p.MODEL_ERROR, (name, info.value)
        assert "internal error" not in info.value.message, (name, info.value)
    assert client.call("animate", p.animate_params(speech_wav), timeout=TIMEOUT)["frames"] == 60


@pytest.mark.parametrize(("controls", "needle"), [
    ({"emotion": "happy"}, "controls.emotion must be an object"),
    ({"person_weights": [1, 2]}, "person_weights must be an object"),
    ({"person_weights": {"1": 1e300, "2": 1e300}}, "person weights must be numbers within"),
    ({"postprocess": {"smoth": False}}, "unknown key(s) 'smoth'"),
])  # fmt: skip
def test_bad_controls_are_invalid_params_naming_the_key(client, speech_wav, controls, needle):
    with pytest.raises(p.BackendError) as info:
        client.call("animate", p.animate_params(speech_wav, controls=controls), timeout=TIMEOUT)
    assert info.value.code == p.INVALID_PARAMS and needle in info.value.message


def test_the_cancel_reply_is_the_one_the_docs_show(client, long_wav):
    documented = next(
        json.loads(line)["error"] for line in (ROOT / "docs" / "protocol.md").read_text()
        .splitlines() if line.startswith('{"jsonrpc"') and '"code":-32800' in line)
    handle = client.start_call("animate", p.animate_params(long_wav))
    deadline = time.monotonic() + TIMEOUT
    while not (handle.progress and handle.progress.done >= 1) and not handle.finished:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    handle.cancel()
    with pytest.raises(p.BackendError) as info:
        handle.wait(timeout=TIMEOUT)
    assert (info.value.code, info.value.message, info.value.detail, info.value.kind) == (
        documented["code"], documented["message"], documented["data"]["detail"],
        documented["data"]["kind"])


# -- the server's exit when its client goes away or it is interrupted (issue 11) ----------------
def busy_server(tmp_path: Path, model: Path, audio: Path) -> subprocess.Popen:
    """A backend on raw pipes, initialized and running an animate request of `audio` (its
    first progress after the model started has arrived); stderr goes to tmp_path/log."""
    proc = subprocess.Popen(SERVE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "log", "wb"), env=child_env(), cwd=ROOT)  # noqa: SIM115
    for msg in (p.request(1, "initialize", init_params(model)),
                p.request(2, "animate", p.animate_params(audio, controls={"postprocess": None}))):
        proc.stdin.write(p.encode_message(msg))
    proc.stdin.flush()
    for line in proc.stdout:
        msg = json.loads(line)
        if "error" in msg:
            raise AssertionError(msg)
        params = msg.get("params") or {}
        if msg.get("method") == p.METHOD_PROGRESS and params.get("id") == 2 and \
                params.get("done", 0) >= 1:
            return proc
    raise AssertionError("the server ended before working on the request")


def assert_clean_exit(proc: subprocess.Popen, tmp_path: Path) -> None:
    status = proc.wait(60)
    log = (tmp_path / "log").read_text()
    assert status == 0, log[-2000:]
    assert "Fatal Python error" not in log and "Traceback" not in log, log[-2000:]


@pytest.mark.slow
def test_the_server_exits_0_when_its_client_closes_stdout_mid_request(tmp_path, tiny_model_dir,
                                                                      long_wav):
    proc = busy_server(tmp_path, tiny_model_dir, long_wav)
    proc.stdout.close()  # the client is gone: the next progress line breaks the pipe
    assert_clean_exit(proc, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_server_exits_0_on_a_signal_mid_request(tmp_path, tiny_model_dir, long_wav, signum):
    proc = busy_server(tmp_path, tiny_model_dir, long_wav)
    t = time.monotonic()
    proc.send_signal(signum)
    replies = [json.loads(line) for line in proc.stdout]
    assert_clean_exit(proc, tmp_path)
    assert time.monotonic() - t < 20
    answer = [r for r in replies if r.get("id") == 2]
    assert answer and answer[0]["error"]["code"] == p.REQUEST_CANCELLED


def test_the_server_exits_0_on_sigint_while_idle(raw):
    raw.send(p.request(1, "shutdown"))
    assert raw.until(1)[0] == p.result(1, None)
    raw.proc.send_signal(signal.SIGINT)
    assert raw.proc.wait(20) == 0


def test_the_backend_runs_in_its_own_process_group():
    """A Ctrl-C in the terminal goes to the foreground process group: the client's, not the
    backend's, so a batch decides what to stop."""
    c = Client(SERVE, env=child_env(), cwd=ROOT)
    try:
        assert os.getpgid(c.process.pid) != os.getpgid(0)
        assert os.getsid(c.process.pid) == c.process.pid
    finally:
        assert c.close(grace=20) == 0


# -- robustness -----------------------------------------------------------------------------------
def garbage_lines(rng: np.random.Generator) -> tuple[list[bytes], int]:
    """1000 bad lines and how many of them must get an error reply (blank lines and
    notifications get none)."""
    good = [p.encode_message(p.request(i, "animate", p.animate_params("/tmp/x.wav")))
            for i in range(10)]
    bad_params = [
        {"audio": 5}, {"audio": {"path": []}}, {"audio": {"path": "a", "start": "x"}},
        {"audio": {"path": "a"}, "fps": "24"}, {"audio": {"path": "a"}, "controls": [1]},
        {"audio": {"path": "a"}, "controls": {"level": "high"}},
        {"audio": {"path": "a"}, "controls": {"person_weights": "3:1"}},
        {"audio": {"path": "/nonexistent/clip.wav"}},
    ]
    lines, replies = [], 0
    for i in range(999):
        kind = i % 5
        if kind == 0:
            line = bytes(rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8))
            line = line.replace(b"\n", b"")
        elif kind == 1:
            full = good[i % 10]
            line = full[: rng.integers(1, len(full) - 1)]
        elif kind == 2:
            line = p.encode_message(p.request(10_000 + i, "animate", bad_params[i % 8]))[:-1]
        elif kind == 3:
            line = [b'{"jsonrpc":"2.0","id":1.5,"method":"animate"}', b"[]", b"null", b"1e400",
                    b'{"jsonrpc":"2.0","method":7}', b'{"id":true}', b'"str"',
                    p.encode_message(p.request(20_000 + i, "nope"))[:-1],
                    p.encode_message(p.request(20_000 + i, "initialize",
                                               {"protocolVersion": "1"}))[:-1],
                    p.encode_message(p.request(20_000 + i, "animate", None))[:-1]][i // 5 % 10]
        else:
            line = p.encode_message(p.notification(["zz/unknown", "$/cancelRequest"][i % 2],
                                                   {"id": [i]}))[:-1]
            lines.append(line + b"\n")
            continue
        lines.append(line + b"\n")
        replies += bool(line.strip())
    lines.append(b'{"jsonrpc":"2.0","id":7,"params":"' + b"a" * (p.MAX_MESSAGE_BYTES + 10)
                 + b'"}\n')
    return lines, replies + 1


@pytest.mark.slow
def test_garbage_never_kills_the_server(tmp_path, tiny_model_dir, speech_wav):
    raw = RawServer(tmp_path / "garbage.log")
    raw.send(p.request("init", "initialize", init_params(tiny_model_dir)))
    assert "result" in raw.until("init")[0]
    lines, expected = garbage_lines(np.random.default_rng(0))
    assert len(lines) == 1000
    writer = threading.Thread(target=lambda: [raw.send(line) for line in lines])
    writer.start()
    writer.join(TIMEOUT)
    raw.send(p.request("after", "animate", p.animate_params(speech_wav)))
    after, before = raw.until("after")
    errors = [m for m in before if p.is_response(m)]
    assert all("error" in m for m in errors)
    assert len(errors) == expected
    codes = {m["error"]["code"] for m in errors}
    assert codes <= {p.PARSE_ERROR, p.INVALID_REQUEST, p.METHOD_NOT_FOUND, p.INVALID_PARAMS,
                     p.AUDIO_ERROR}, codes
    assert {p.PARSE_ERROR, p.INVALID_REQUEST, p.INVALID_PARAMS} <= codes
    assert after["result"]["frames"] == 60 and not raw.stray
    t = time.monotonic()
    assert raw.close() == 0 and time.monotonic() - t < 10  # end of input, with torch loaded


@pytest.mark.slow
def test_shutdown_and_exit_with_a_model_loaded(tmp_path, tiny_model_dir):
    raw = RawServer(tmp_path / "exit.log")
    raw.send(p.request(1, "initialize", init_params(tiny_model_dir)))
    assert "result" in raw.until(1)[0]
    raw.send(p.request(2, "shutdown"))
    assert raw.until(2)[0] == p.result(2, None)
    raw.send(p.notification("exit"))
    assert raw.proc.wait(20) == 0
    raw.close()


def test_client_sees_a_killed_backend():
    """Calls to a killed backend fail at once, naming its exit status (no hang)."""
    c = Client(SERVE, env=child_env(), cwd=ROOT)
    try:
        handle = c.start_call("shutdown")
        handle.wait(timeout=TIMEOUT)
        c.process.kill()
        with pytest.raises(p.BackendError) as info:
            c.call("animate", p.animate_params("x.wav"), timeout=TIMEOUT)
        assert info.value.code == p.BACKEND_STOPPED and "exit status" in info.value.message
    finally:
        c.close()


def test_json_of_the_docs_examples_is_valid():
    """docs/protocol.md examples are single JSON lines a client could send or receive."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    examples = [line for line in text.splitlines() if line.startswith('{"jsonrpc"')]
    assert len(examples) >= 8
    for line in examples:
        p.decode_message(line.encode())
        json.loads(line)
