"""The EmoTalk backend protocol: message framing, message types, error codes and the curves'
encoding (the client that runs a backend is `client.py`).

STANDARD LIBRARY ONLY. The Blender add-on carries a verbatim copy of this file, so it must not
import anything from `emotalk_core`, third-party packages or relative modules.

The protocol in brief (DESIGN.md section 5 is normative; docs/protocol.md has full examples):

- The client starts ``<python> -m emotalk_core serve``. Messages are JSON-RPC 2.0: one compact
  UTF-8 JSON object per line, client to server on stdin, server to client on stdout. stdout
  carries nothing but protocol messages; logs go to stderr. End of stdin means exit (status 0).
- Requests: ``initialize`` (loads the model; must come first), ``animate`` (audio window +
  controls + optional transcript -> N x 52 curves, "base64-f32le" encoded, with the phone
  source and warnings for the user), ``shutdown`` (returns null).
- Notifications: ``$/progress`` (server -> client, ``{"id", "done", "total", "message"}``, at
  least once a second while a request runs), ``$/cancelRequest`` (client -> server, ``{"id"}``;
  the request then fails with -32800), ``exit`` (client -> server; the process exits 0).
- Errors carry ``{"code", "message", "data": {"detail", "kind"}}``; ``detail`` says what a user
  can do, ``kind`` (optional: older servers omit it) what the error is about, so that each front
  end can word its own advice (the values: ``errors.KINDS``).
  A malformed message gets an error reply (id null when the id cannot be read) and the server
  keeps serving.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import sys
from array import array
from typing import IO, Any

PROTOCOL_VERSION = 1
JSONRPC_VERSION = "2.0"
ENCODING_F32LE = "base64-f32le"

# JSON-RPC 2.0 codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# EmoTalk codes (on the wire)
AUDIO_ERROR = -32001  # audio unreadable or empty
MODEL_ERROR = -32002  # model missing or invalid; also "not initialized" (no model loaded yet)
OUT_OF_MEMORY = -32003
REQUEST_CANCELLED = -32800
# Client-side codes: raised by `Client`, never sent on the wire
BACKEND_STOPPED = -32099  # the backend process exited or could not be started
REQUEST_TIMEOUT = -32098  # `call(timeout=...)` ran out; the request was cancelled

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # longest line the server accepts (client -> server)
MAX_RESULT_BYTES = 1024 * 1024 * 1024  # longest line a client accepts (results can be large)

DEVICES = ("auto", "cpu", "cuda")  # what `initialize` takes as its device

METHOD_INITIALIZE = "initialize"
METHOD_ANIMATE = "animate"
METHOD_SHUTDOWN = "shutdown"
METHOD_EXIT = "exit"
METHOD_PROGRESS = "$/progress"
METHOD_CANCEL = "$/cancelRequest"

_F32 = "f"
if array(_F32).itemsize != 4:  # pragma: no cover - every supported platform has 4-byte floats
    raise ImportError("array('f') is not 4 bytes on this platform")

log = logging.getLogger("emotalk.protocol")


# -- errors ---------------------------------------------------------------------------------------
class ProtocolError(Exception):
    """A JSON-RPC error: a message that cannot be read, or an error reply.

    `id` is the request id when it could be read (so the server can answer the right request),
    else None. `kind` is the reply's `data.kind` (None when the server sent none).
    """

    def __init__(self, code: int, message: str, detail: str | None = None, id: Any = None,
                 kind: str | None = None):
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.detail = detail or message
        self.id = id
        self.kind = kind

    def __str__(self) -> str:
        if self.detail and self.detail != self.message:
            return f"{self.message} ({self.detail})"
        return self.message

    def to_error(self, id: Any = None) -> dict[str, Any]:
        """This error as a JSON-RPC error response."""
        return error(self.id if id is None else id, self.code, self.message, self.detail,
                     self.kind)


class BackendError(ProtocolError):
    """The backend answered a request with an error, stopped, or did not answer in time."""

    @classmethod
    def from_error(cls, obj: dict[str, Any], id: Any = None) -> BackendError:
        """From the `error` member of a response (tolerant of malformed ones)."""
        obj = obj if isinstance(obj, dict) else {}
        data = obj.get("data")
        detail = data.get("detail") if isinstance(data, dict) else None
        kind = data.get("kind") if isinstance(data, dict) else None
        code = obj.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR
        return cls(code, str(obj.get("message") or "unknown error"),
                   detail if isinstance(detail, str) else None, id,
                   kind if isinstance(kind, str) else None)


# -- message constructors -------------------------------------------------------------------------
def request(id: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def result(id: int | str | None, value: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC_VERSION, "id": id, "result": value}


def error(id: int | str | None, code: int, message: str, detail: str | None = None,
          kind: str | None = None) -> dict[str, Any]:
    """An error response; `detail` (what a user can do) goes to `error.data.detail`, `kind`
    (what the error is about) to `error.data.kind`."""
    body: dict[str, Any] = {"code": int(code), "message": str(message)}
    data = {k: str(v) for k, v in (("detail", detail), ("kind", kind)) if v is not None}
    if data:
        body["data"] = data
    return {"jsonrpc": JSONRPC_VERSION, "id": id, "error": body}


def progress(id: int | str, done: int, total: int, message: str = "") -> dict[str, Any]:
    return notification(METHOD_PROGRESS, {"id": id, "done": int(done), "total": int(total),
                                          "message": str(message)})


def cancel_request(id: int | str) -> dict[str, Any]:
    return notification(METHOD_CANCEL, {"id": id})


def initialize_params(model: str | os.PathLike[str] = "default", device: str = "auto",
                      client_name: str = "python", client_version: str = "") -> dict[str, Any]:
    """`initialize` params; `model` is a model folder or "default"."""
    return {"protocolVersion": PROTOCOL_VERSION,
            "client": {"name": client_name, "version": client_version},
            "model": os.fspath(model), "device": device}


def animate_params(path: str | os.PathLike[str], start: float = 0.0, end: float | None = None,
                   fps: float = 30.0, controls: dict[str, Any] | None = None,
                   transcript: str | None = None) -> dict[str, Any]:
    """`animate` params; `controls` is the JSON form of the controls (docs/protocol.md);
    `transcript` is the text spoken in the window, if known (sent only when given)."""
    params: dict[str, Any] = {"audio": {"path": os.fspath(path), "start": float(start),
                                        "end": None if end is None else float(end)},
                              "fps": float(fps), "controls": controls or {}}
    if transcript is not None:
        params["transcript"] = transcript
    return params


# -- framing --------------------------------------------------------------------------------------
def encode_message(obj: dict[str, Any]) -> bytes:
    """One compact UTF-8 JSON line. JSON escapes control characters inside strings, so the only
    newline is the terminator. NaN and infinities are refused: they are not JSON."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def is_id(value: Any) -> bool:
    """A usable request id: a string or an integer (JSON-RPC also allows null and fractions;
    neither can name a request reliably)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def decode_message(line: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse and check one line. Raises ProtocolError: -32700 for bytes that are not JSON,
    -32600 for JSON that is not a single JSON-RPC 2.0 message (arrays/batches, wrong types,
    oversized lines). The error's `id` is set when the message's id could be read."""
    if len(line) > max_bytes:
        raise ProtocolError(INVALID_REQUEST, f"message longer than {max_bytes} bytes",
                            "send smaller messages (audio goes by file path, not inline)")
    try:
        msg = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ProtocolError(PARSE_ERROR, f"message is not UTF-8: {exc.reason}") from exc
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(PARSE_ERROR, f"message is not JSON: {_short(exc)}",
                            "send one JSON object per line") from exc
    if isinstance(msg, list):
        raise ProtocolError(INVALID_REQUEST, "batches (JSON arrays) are not supported",
                            "send one JSON object per line")
    if not isinstance(msg, dict):
        raise ProtocolError(INVALID_REQUEST, "message is not a JSON object")
    _check_fields(msg)
    return msg


def _check_fields(msg: dict[str, Any]) -> None:
    has_id = "id" in msg
    id = msg.get("id") if has_id and is_id(msg.get("id")) else None
    if msg.get("jsonrpc") != JSONRPC_VERSION:
        raise ProtocolError(INVALID_REQUEST, 'message lacks "jsonrpc": "2.0"', id=id)
    if "method" in msg:
        if not isinstance(msg["method"], str):
            raise ProtocolError(INVALID_REQUEST, "method is not a string", id=id)
        if has_id and not is_id(msg["id"]):
            raise ProtocolError(INVALID_REQUEST, "request id must be a string or an integer")
        if "params" in msg and not isinstance(msg["params"], dict | type(None)):
            raise ProtocolError(INVALID_PARAMS if has_id else INVALID_REQUEST,
                                "params must be a JSON object (named parameters)", id=id)
        return
    if not has_id or ("result" in msg) == ("error" in msg):
        raise ProtocolError(INVALID_REQUEST, "message is neither a request, a notification nor "
                            "a response", id=id)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_request(msg: dict[str, Any]) -> bool:
    return "method" in msg and "id" in msg


def is_notification(msg: dict[str, Any]) -> bool:
    return "method" in msg and "id" not in msg


def is_response(msg: dict[str, Any]) -> bool:
    return "method" not in msg


class LineReader:
    """Reads newline-terminated messages from a binary stream with bounded memory.

    A line longer than `max_bytes` is read and discarded in `max_bytes` pieces, then reported as
    a ProtocolError, so one oversized message neither exhausts memory nor desynchronises the
    stream.
    """

    def __init__(self, stream: IO[bytes], max_bytes: int = MAX_MESSAGE_BYTES):
        self.stream = stream
        self.max_bytes = max_bytes

    def read_line(self) -> bytes | None:
        """The next line without its terminator; None at end of stream."""
        line = self.stream.readline(self.max_bytes + 1)
        if not line:
            return None
        if len(line) > self.max_bytes and not line.endswith(b"\n"):
            self._discard_rest()
            raise ProtocolError(INVALID_REQUEST, f"message longer than {self.max_bytes} bytes",
                                "send smaller messages (audio goes by file path, not inline)")
        return line.rstrip(b"\r\n")

    def _discard_rest(self) -> None:
        while True:
            piece = self.stream.readline(self.max_bytes)
            if not piece or piece.endswith(b"\n"):
                return


# -- curve values ---------------------------------------------------------------------------------
def encode_values(values: Any) -> str:
    """N x C float32 values, row-major little-endian, base64 ("base64-f32le").

    `values` is bytes (already little-endian float32), an object with `astype`/`tobytes` (a
    numpy array: the fast path) or rows of floats (the standard-library path)."""
    if isinstance(values, bytes | bytearray | memoryview):
        raw = bytes(values)
    elif hasattr(values, "astype") and hasattr(values, "tobytes"):
        raw = values.astype("<f4").tobytes(order="C")
    else:
        flat = array(_F32, itertools.chain.from_iterable(values))
        if sys.byteorder == "big":
            flat.byteswap()
        raw = flat.tobytes()
    if len(raw) % 4:
        raise ValueError("float32 bytes must be a multiple of 4 long")
    return base64.b64encode(raw).decode("ascii")


def values_bytes(encoded: str, frames: int, channels: int) -> bytes:
    """The raw little-endian float32 bytes of an encoded N x C block, checked against its shape.
    With numpy: ``np.frombuffer(values_bytes(...), "<f4").reshape(frames, channels)``."""
    if not (is_count(frames) and is_count(channels)):
        raise ProtocolError(INVALID_PARAMS, f"bad values shape {frames!r} x {channels!r}")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(PARSE_ERROR, f"values are not base64: {_short(exc)}") from exc
    if len(raw) != frames * channels * 4:
        raise ProtocolError(PARSE_ERROR, f"values hold {len(raw)} bytes; {frames} x {channels} "
                            f"float32 need {frames * channels * 4}")
    return raw


def decode_values(encoded: str, frames: int, channels: int) -> list[list[float]]:
    """Rows of floats from "base64-f32le" (standard library only; numpy users: values_bytes)."""
    flat = array(_F32)
    flat.frombytes(values_bytes(encoded, frames, channels))
    if sys.byteorder == "big":
        flat.byteswap()
    return [flat[i * channels:(i + 1) * channels].tolist() for i in range(frames)]


def is_count(n: Any) -> bool:
    """A non-negative integer (booleans are ints in Python but not counts)."""
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0
