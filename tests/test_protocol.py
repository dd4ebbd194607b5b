"""emotalk_core.protocol: framing, values encoding, error constructors and bounded line
reading (the client's tests are in test_client.py)."""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import struct
import sys
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


def test_backend_error_from_a_malformed_error_object():
    err = p.BackendError.from_error({"code": "x", "data": "y"}, 3)
    assert err.code == p.INTERNAL_ERROR and err.message == "unknown error" and err.id == 3
    assert json.loads(p.encode_message(err.to_error()))["id"] == 3
