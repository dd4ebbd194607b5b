"""emotalk_core.protocol: framing, values encoding, error constructors, bounded line reading, and
the Client against small stand-in backends (no model, no torch in the child)."""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import struct
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from emotalk_core import protocol as p


# -- standard library only ------------------------------------------------------------------------
def test_protocol_module_imports_the_standard_library_only():
    source = Path(p.__file__).read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the add-on copies this file verbatim"
            modules.add(node.module.split(".")[0])
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


# -- framing --------------------------------------------------------------------------------------
def test_encode_message_is_one_compact_utf8_line():
    msg = p.request(7, "animate", {"audio": {"path": "C:\\clips\\é\nx.wav"}})
    line = p.encode_message(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b", " not in line
    assert "é".encode() in line
    assert p.decode_message(line.rstrip(b"\n")) == msg


def test_encode_message_refuses_nan():
    with pytest.raises(ValueError):
        p.encode_message(p.result(1, {"x": math.nan}))


def test_constructors_follow_json_rpc():
    assert p.request(1, "shutdown") == {"jsonrpc": "2.0", "id": 1, "method": "shutdown"}
    assert p.notification("exit") == {"jsonrpc": "2.0", "method": "exit"}
    assert p.result(3, None) == {"jsonrpc": "2.0", "id": 3, "result": None}
    assert p.error(None, p.PARSE_ERROR, "bad") == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "bad"}}
    assert p.error(4, p.AUDIO_ERROR, "no file", "check the path")["error"] == {
        "code": -32001, "message": "no file", "data": {"detail": "check the path"}}
    assert p.progress(5, 2, 7, "x")["params"] == {"id": 5, "done": 2, "total": 7, "message": "x"}
    assert p.cancel_request(5) == {"jsonrpc": "2.0", "method": "$/cancelRequest",
                                   "params": {"id": 5}}
    assert p.initialize_params(Path("m"), "cpu", "blender", "1.0") == {
        "protocolVersion": 1, "client": {"name": "blender", "version": "1.0"}, "model": "m",
        "device": "cpu"}
    assert p.animate_params("a.wav", 1, None, 24, {"level": 0.5}) == {
        "audio": {"path": "a.wav", "start": 1.0, "end": None}, "fps": 24.0,
        "controls": {"level": 0.5}}


def test_error_codes():
    assert (p.PARSE_ERROR, p.INVALID_REQUEST, p.METHOD_NOT_FOUND, p.INVALID_PARAMS,
            p.INTERNAL_ERROR) == (-32700, -32600, -32601, -32602, -32603)
    assert (p.AUDIO_ERROR, p.MODEL_ERROR, p.OUT_OF_MEMORY, p.REQUEST_CANCELLED) == (
        -32001, -32002, -32003, -32800)
    assert p.PROTOCOL_VERSION == 1 and p.MAX_MESSAGE_BYTES >= 1 << 20


@pytest.mark.parametrize("line, code, id", [
    (b"not json", p.PARSE_ERROR, None),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "x"', p.PARSE_ERROR, None),  # truncated
    (b"\xff\xfe{}", p.PARSE_ERROR, None),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":NaN}}', p.PARSE_ERROR, None),
    (b"[" * 100000, p.PARSE_ERROR, None),  # deep nesting: RecursionError
    (b"[]", p.INVALID_REQUEST, None),
    (b'[{"jsonrpc":"2.0","id":1,"method":"a"}]', p.INVALID_REQUEST, None),
    (b"42", p.INVALID_REQUEST, None),
    (b'"text"', p.INVALID_REQUEST, None),
    (b'{"id": 1, "method": "a"}', p.INVALID_REQUEST, 1),
    (b'{"jsonrpc": "1.0", "id": 2, "method": "a"}', p.INVALID_REQUEST, 2),
    (b'{"jsonrpc": "2.0", "id": 3, "method": 5}', p.INVALID_REQUEST, 3),
    (b'{"jsonrpc": "2.0", "id": true, "method": "a"}', p.INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "a"}', p.INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "a", "params": [1]}', p.INVALID_PARAMS, 4),
    (b'{"jsonrpc": "2.0", "id": 5}', p.INVALID_REQUEST, 5),
    (b'{"jsonrpc": "2.0", "id": 6, "result": 1, "error": {}}', p.INVALID_REQUEST, 6),
])
def test_decode_message_rejects(line, code, id):
    with pytest.raises(p.ProtocolError) as info:
        p.decode_message(line)
    assert info.value.code == code and info.value.id == id
    reply = info.value.to_error()
    assert reply["id"] == id and reply["error"]["code"] == code


def test_decode_message_accepts_requests_notifications_and_responses():
    for msg in (p.request("a", "animate", {}), p.notification("exit"), p.result(1, [1]),
                p.error(None, -32700, "x")):
        assert p.decode_message(p.encode_message(msg)) == msg
    assert p.is_request(p.request(1, "x")) and p.is_notification(p.notification("x"))
    assert p.is_response(p.result(1, 0))


def test_decode_message_refuses_oversized_lines():
    with pytest.raises(p.ProtocolError) as info:
        p.decode_message(b"{}" + b" " * 100, max_bytes=64)
    assert info.value.code == p.INVALID_REQUEST and "longer than 64" in info.value.message


def test_line_reader_discards_an_oversized_line_and_goes_on():
    huge = b'{"x": "' + b"a" * 1000 + b'"}\n'
    stream = io.BufferedReader(io.BytesIO(b"first\n" + huge + b"second\r\n" + b"last"),
                               buffer_size=16)
    reader = p.LineReader(stream, max_bytes=100)
    assert reader.read_line() == b"first"
    with pytest.raises(p.ProtocolError) as info:
        reader.read_line()
    assert info.value.code == p.INVALID_REQUEST
    assert reader.read_line() == b"second"
    assert reader.read_line() == b"last"
    assert reader.read_line() is None


def test_line_reader_accepts_a_line_of_exactly_the_limit():
    reader = p.LineReader(io.BytesIO(b"x" * 100 + b"\n" + b"y" * 101 + b"\nz\n"), max_bytes=100)
    assert reader.read_line() == b"x" * 100
    with pytest.raises(p.ProtocolError):
        reader.read_line()
    assert reader.read_line() == b"z"


# -- values ---------------------------------------------------------------------------------------
def test_values_round_trip_through_rows_bytes_and_numpy():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((37, 52)).astype(np.float32)
    values[0, :3] = [np.inf, -0.0, 1e-40]
    from_numpy = p.encode_values(values)
    from_rows = p.encode_values(values.tolist())
    from_bytes = p.encode_values(values.astype("<f4").tobytes())
    assert from_numpy == from_rows == from_bytes
    raw = base64.b64decode(from_numpy)
    assert raw[:4] == struct.pack("<f", np.inf)  # little-endian float32, row-major
    np.testing.assert_array_equal(
        np.frombuffer(p.values_bytes(from_numpy, 37, 52), "<f4").reshape(37, 52), values)
    rows = p.decode_values(from_rows, 37, 52)
    assert len(rows) == 37 and all(len(r) == 52 for r in rows)
    np.testing.assert_array_equal(np.array(rows, dtype=np.float32), values)


def test_values_of_an_empty_clip():
    assert p.encode_values([]) == ""
    assert p.decode_values("", 0, 52) == []


def test_values_shape_and_encoding_are_checked():
    encoded = p.encode_values([[1.0, 2.0], [3.0, 4.0]])
    assert p.decode_values(encoded, 2, 2) == [[1.0, 2.0], [3.0, 4.0]]
    for frames, channels in ((3, 2), (1, 2), (2, 3)):
        with pytest.raises(p.ProtocolError):
            p.decode_values(encoded, frames, channels)
    with pytest.raises(p.ProtocolError):
        p.decode_values("@@@not base64", 1, 1)
    with pytest.raises(p.ProtocolError):
        p.decode_values(encoded, -1, 2)
    with pytest.raises(ValueError):
        p.encode_values(b"abc")


# -- the client, against stand-in backends --------------------------------------------------------
FAKE_BACKEND = textwrap.dedent("""
    import json, sys, time
    sys.stderr.write("fake backend up\\n"); sys.stderr.flush()
    cancelled = set()
    def send(obj):
        sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        method, id = msg.get("method"), msg.get("id")
        if method == "$/cancelRequest":
            cancelled.add(msg["params"]["id"]); continue
        if method == "exit":
            sys.exit(0)
        if method == "echo":
            send({"jsonrpc": "2.0", "id": id, "result": msg.get("params")})
        elif method == "slow":
            for i in range(3):
                send({"jsonrpc": "2.0", "method": "$/progress",
                      "params": {"id": id, "done": i, "total": 3, "message": "step"}})
                time.sleep(0.05)
            send({"jsonrpc": "2.0", "id": id, "result": "slow done"})
        elif method == "hang":
            send({"jsonrpc": "2.0", "method": "note", "params": {"hello": 1}})
        elif method == "hang_then_cancel":
            sys.stdout.write("this is not a protocol line\\n"); sys.stdout.flush()
            for l2 in sys.stdin:
                m2 = json.loads(l2)
                if m2.get("method") == "$/cancelRequest" and m2["params"]["id"] == id:
                    send({"jsonrpc": "2.0", "id": id, "error": {"code": -32800,
                          "message": "cancelled", "data": {"detail": "as asked"}}})
                    break
        elif method == "die":
            sys.stderr.write("fatal: dying on purpose\\n"); sys.stderr.flush()
            sys.exit(3)
        elif method == "shutdown":
            send({"jsonrpc": "2.0", "id": id, "result": None})
        else:
            send({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "unknown"}})
""")


@pytest.fixture
def fake_client(tmp_path):
    script = tmp_path / "fake_backend.py"
    script.write_text(FAKE_BACKEND)
    notes = []
    client = p.Client([sys.executable, str(script)], log_path=tmp_path / "backend.log",
                      on_notification=notes.append)
    client.notes = notes
    yield client
    client.close(grace=2.0)


def test_client_call_returns_results_and_raises_backend_errors(fake_client):
    assert fake_client.call("echo", {"a": [1, 2]}, timeout=10) == {"a": [1, 2]}
    with pytest.raises(p.BackendError) as info:
        fake_client.call("nope", timeout=10)
    assert info.value.code == p.METHOD_NOT_FOUND and info.value.message == "unknown"


def test_client_reports_progress_on_the_calling_thread(fake_client):
    seen = []
    assert fake_client.call("slow", on_progress=seen.append, timeout=10) == "slow done"
    assert seen and all(isinstance(s, p.Progress) and s.total == 3 for s in seen)
    assert seen[-1].fraction <= 1.0


def test_client_poll_never_blocks_and_cancel_ends_the_call(fake_client):
    handle = fake_client.start_call("hang_then_cancel")
    t = time.monotonic()
    status = handle.poll()
    assert time.monotonic() - t < 0.05 and not status.finished
    handle.cancel()
    deadline = time.monotonic() + 10
    while not handle.poll().finished and time.monotonic() < deadline:
        time.sleep(0.01)
    status = handle.poll()
    assert status.finished and status.result is None
    assert status.error.code == p.REQUEST_CANCELLED and status.error.detail == "as asked"
    assert fake_client.call("echo", {"still": "alive"}, timeout=10) == {"still": "alive"}


def test_client_timeout_cancels_and_raises(fake_client):
    with pytest.raises(p.BackendError) as info:
        fake_client.call("hang_then_cancel", timeout=0.3)
    assert info.value.code == p.REQUEST_TIMEOUT


def test_client_passes_other_notifications_on(fake_client):
    handle = fake_client.start_call("hang")
    deadline = time.monotonic() + 10
    while not fake_client.notes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_client.notes[0]["method"] == "note"
    assert not handle.finished


def test_a_dead_backend_fails_every_pending_and_later_call(fake_client, tmp_path):
    pending = fake_client.start_call("hang")
    with pytest.raises(p.BackendError) as info:
        fake_client.call("die", timeout=20)
    err = info.value
    assert err.code == p.BACKEND_STOPPED and "exit status 3" in err.message
    assert str(tmp_path / "backend.log") in err.message
    assert "dying on purpose" in err.detail
    assert pending.poll().finished and pending.poll().error.code == p.BACKEND_STOPPED
    with pytest.raises(p.BackendError) as later:
        fake_client.call("echo", {}, timeout=5)
    assert later.value.code == p.BACKEND_STOPPED
    assert not fake_client.alive
    assert "dying on purpose" in (tmp_path / "backend.log").read_text()


def test_a_backend_that_cannot_start_fails_clearly(tmp_path):
    with pytest.raises(p.BackendError) as info:
        p.Client([str(tmp_path / "no-such-python")])
    assert info.value.code == p.BACKEND_STOPPED and "cannot start" in info.value.message


def test_an_unwritable_log_fails_clearly(tmp_path):
    with pytest.raises(p.BackendError) as info:
        p.Client([sys.executable, "-c", "pass"], log_path=tmp_path / "no" / "dir" / "x.log")
    assert "cannot write the backend log" in info.value.message


def test_a_backend_that_exits_at_once_fails_the_first_call():
    client = p.Client([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); "
                       "sys.exit(2)"])
    try:
        with pytest.raises(p.BackendError) as info:
            client.call("echo", {}, timeout=20)
        assert info.value.code == p.BACKEND_STOPPED and "exit status 2" in info.value.message
        assert "boom" in info.value.detail
    finally:
        assert client.close() == 2


def test_close_is_polite_then_firm(tmp_path):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "time.sleep(60)\n")
    client = p.Client([sys.executable, str(stubborn)])
    t = time.monotonic()
    status = client.close(grace=0.5)
    assert status is not None and status != 0 and time.monotonic() - t < 10
    assert client.close() == status  # idempotent


def test_close_of_a_well_behaved_backend_exits_zero(fake_client):
    assert fake_client.close(grace=5) == 0


def test_backend_error_from_a_malformed_error_object():
    err = p.BackendError.from_error({"code": "x", "data": "y"}, 3)
    assert err.code == p.INTERNAL_ERROR and err.message == "unknown error" and err.id == 3
    assert json.loads(p.encode_message(err.to_error()))["id"] == 3
