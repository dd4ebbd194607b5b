"""The EmoTalk backend protocol: message framing, message types and a Python client.

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
- Errors carry ``{"code", "message", "data": {"detail"}}``; ``detail`` says what a user can do.
  A malformed message gets an error reply (id null when the id cannot be read) and the server
  keeps serving.

`Client` runs the backend as a subprocess for any Python program (the add-on, scripts), in its
own process group so that a terminal's Ctrl-C does not reach it; it never hangs on a dead
backend, and `Client.start_call` + `Call.poll` serve non-blocking callers such as Blender's modal
timer.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    else None.
    """

    def __init__(self, code: int, message: str, detail: str | None = None, id: Any = None):
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.detail = detail or message
        self.id = id

    def __str__(self) -> str:
        if self.detail and self.detail != self.message:
            return f"{self.message} ({self.detail})"
        return self.message

    def to_error(self, id: Any = None) -> dict[str, Any]:
        """This error as a JSON-RPC error response."""
        return error(self.id if id is None else id, self.code, self.message, self.detail)


class BackendError(ProtocolError):
    """The backend answered a request with an error, stopped, or did not answer in time."""

    @classmethod
    def from_error(cls, obj: dict[str, Any], id: Any = None) -> BackendError:
        """From the `error` member of a response (tolerant of malformed ones)."""
        obj = obj if isinstance(obj, dict) else {}
        data = obj.get("data")
        detail = data.get("detail") if isinstance(data, dict) else None
        code = obj.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR
        return cls(code, str(obj.get("message") or "unknown error"),
                   detail if isinstance(detail, str) else None, id)


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


def error(id: int | str | None, code: int, message: str, detail: str | None = None
          ) -> dict[str, Any]:
    """An error response; `detail` (what a user can do) goes to `error.data.detail`."""
    body: dict[str, Any] = {"code": int(code), "message": str(message)}
    if detail is not None:
        body["data"] = {"detail": str(detail)}
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


# -- client ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    message: str

    @property
    def fraction(self) -> float:
        return min(1.0, max(0.0, self.done / self.total)) if self.total > 0 else 0.0


@dataclass(frozen=True)
class CallStatus:
    """What `Call.poll` returns: `finished` with `result` or `error`, or the latest progress."""

    finished: bool
    progress: Progress | None
    result: Any = None
    error: BackendError | None = None


class Call:
    """One request in flight. Poll it from a timer (`poll`) or block on it (`wait`)."""

    def __init__(self, client: Client, id: int, method: str):
        self.client = client
        self.id = id
        self.method = method
        self._cond = threading.Condition()
        self._finished = False
        self._result: Any = None
        self._error: BackendError | None = None
        self._progress: Progress | None = None
        self._version = 0  # bumps on every progress or completion, for waiters

    # -- reader side ----------------------------------------------------------------------------
    def _set_progress(self, value: Progress) -> None:
        with self._cond:
            if not self._finished:
                self._progress = value
                self._version += 1
                self._cond.notify_all()

    def _finish(self, value: Any = None, err: BackendError | None = None) -> None:
        with self._cond:
            if self._finished:
                return
            self._finished, self._result, self._error = True, value, err
            self._version += 1
            self._cond.notify_all()

    # -- caller side ----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def progress(self) -> Progress | None:
        return self._progress

    def poll(self) -> CallStatus:
        """Never blocks."""
        with self._cond:
            return CallStatus(self._finished, self._progress, self._result, self._error)

    def cancel(self) -> None:
        """Ask the backend to stop this request; it then finishes with -32800."""
        if not self._finished:
            self.client.cancel(self.id)

    def wait(self, timeout: float | None = None,
             on_progress: Callable[[Progress], None] | None = None) -> Any:
        """Block until finished; return the result or raise BackendError. `on_progress` runs on
        the calling thread. On timeout the request is cancelled and REQUEST_TIMEOUT raised.
        Never hangs on a dead backend: the client finishes every pending call when it stops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            with self._cond:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                changed = self._cond.wait_for(lambda seen=seen: self._version != seen, left)
                seen, status = self._version, self.poll()
            if status.finished:
                if status.error is not None:
                    raise status.error
                return status.result
            if not changed:
                break
            if on_progress is not None and status.progress is not None:
                on_progress(status.progress)
        self.cancel()
        raise BackendError(REQUEST_TIMEOUT, f"{self.method} took longer than {timeout:g} s",
                           "the request was cancelled; try a shorter clip or a longer timeout",
                           self.id)


class Client:
    """Runs the backend (``<python> -m emotalk_core serve``) and talks to it.

    - `initialize(model, device)` then `call("animate", animate_params(...))`, or non-blocking:
      `handle = start_call(...)`, then `handle.poll()` from a timer, `handle.cancel()` to stop.
    - The backend's stderr is drained by a thread into `log_path` (when given) and kept as the
      last lines in memory, so it can never fill its pipe, and errors can quote it.
    - If the backend exits, every pending and later call fails with BACKEND_STOPPED and a
      message naming the exit status and the log; nothing waits forever.
    - `close()` sends shutdown and exit, then terminates and finally kills after a grace period.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        python: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        on_notification: Callable[[dict[str, Any]], None] | None = None,
        max_result_bytes: int = MAX_RESULT_BYTES,
    ):
        self.command = list(command or [python or sys.executable, "-m", "emotalk_core", "serve"])
        self.log_path = os.fspath(log_path) if log_path is not None else None
        self.on_notification = on_notification
        self.max_result_bytes = max_result_bytes
        self.server_info: dict[str, Any] | None = None
        self._pending: dict[int, Call] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopped: BackendError | None = None
        self._closing = False
        self._log_tail: collections.deque[str] = collections.deque(maxlen=40)
        try:
            self._log_file = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        except OSError as exc:
            raise BackendError(BACKEND_STOPPED, f"cannot write the backend log: {exc}",
                               "choose a log file in a writable folder") from exc
        try:
            # Its own process group (session), so a Ctrl-C in the terminal of a batch or of
            # Blender reaches the client, which decides what to stop, and not the backend.
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=os.name == "posix",
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0)
                | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        except OSError as exc:
            self._close_log()
            raise BackendError(BACKEND_STOPPED, f"cannot start the backend: {exc}",
                               f"check the Python path: {self.command[0]}") from exc
        self._stderr_thread = self._thread(self._drain_stderr, "emotalk-stderr")
        self._reader_thread = self._thread(self._read_stdout, "emotalk-reader")

    @staticmethod
    def _thread(target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    # -- public API -----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._stopped is None and self.process.poll() is None

    def start_call(self, method: str, params: dict[str, Any] | None = None) -> Call:
        """Send a request; returns at once with a `Call` handle (never blocks on the backend)."""
        call = Call(self, next(self._ids), method)
        with self._lock:
            if self._stopped is not None:
                call._finish(err=self._stopped)
                return call
            self._pending[call.id] = call
        try:
            self._send(request(call.id, method, params))
        except BackendError as exc:
            self._forget(call.id)
            call._finish(err=exc)
        return call

    def call(self, method: str, params: dict[str, Any] | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             timeout: float | None = None) -> Any:
        """Send a request and wait: returns its result or raises BackendError."""
        return self.start_call(method, params).wait(timeout, on_progress)

    def initialize(self, model: str | os.PathLike[str] = "default", device: str = "auto",
                   client_name: str = "python", client_version: str = "",
                   timeout: float | None = None,
                   on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        """Load the model in the backend; returns (and keeps in `server_info`) its description."""
        params = initialize_params(model, device, client_name, client_version)
        self.server_info = self.call(METHOD_INITIALIZE, params, on_progress, timeout)
        return self.server_info

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self._send(notification(method, params))

    def cancel(self, id: int | str) -> None:
        """Ask the backend to cancel request `id` (quietly does nothing if it has stopped)."""
        with contextlib.suppress(BackendError):
            self.notify(METHOD_CANCEL, {"id": id})

    def log_tail(self) -> str:
        """The backend's last stderr lines."""
        return "\n".join(self._log_tail)

    def close(self, grace: float = 3.0) -> int | None:
        """Stop the backend politely, then firmly. Returns its exit status. Idempotent."""
        self._closing = True
        if self.process.poll() is None:
            for call in self._pending_calls():
                call.cancel()
            try:
                self.start_call(METHOD_SHUTDOWN).wait(grace)
                self.notify(METHOD_EXIT)
            except BackendError:
                pass
            self._close_stdin()
            self._wait_or_stop(grace)
        self._reader_thread.join(grace)
        self._stderr_thread.join(grace)
        self._close_log()
        return self.process.returncode

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------
    def _send(self, msg: dict[str, Any]) -> None:
        data = encode_message(msg)
        with self._write_lock:
            if self._stopped is not None:
                raise self._stopped
            try:
                self.process.stdin.write(data)
                self.process.stdin.flush()
            except (OSError, ValueError) as exc:  # broken pipe, or stdin already closed
                raise self._stopped_error(wait=1.0) from exc

    def _close_stdin(self) -> None:
        with self._write_lock, contextlib.suppress(OSError):
            self.process.stdin.close()

    def _wait_or_stop(self, grace: float) -> None:
        for stop in (None, self.process.terminate, self.process.kill):
            if stop is not None:
                with contextlib.suppress(OSError):
                    stop()
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    # -- reading --------------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        reader = LineReader(self.process.stdout, self.max_result_bytes)
        try:
            while True:
                try:
                    line = reader.read_line()
                except ProtocolError as exc:
                    log.warning("backend sent an unreadable message: %s", exc)
                    continue
                if line is None:
                    break
                if line.strip():
                    self._dispatch(line)
        except (OSError, ValueError) as exc:
            log.warning("lost the backend's output: %s", exc)
        finally:
            self._fail_all(self._stopped_error(wait=5.0))

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = decode_message(line, self.max_result_bytes)
        except ProtocolError as exc:
            self._log_tail.append(f"[protocol] unreadable line from backend: {exc}")
            return
        if is_response(msg):
            self._on_response(msg)
        elif msg["method"] == METHOD_PROGRESS:
            self._on_progress(msg.get("params") or {})
        elif self.on_notification is not None:
            try:
                self.on_notification(msg)
            except Exception:  # a faulty callback must not stop the reader
                log.exception("on_notification failed")

    def _on_response(self, msg: dict[str, Any]) -> None:
        call = self._forget(msg.get("id"))
        if call is None:
            if "error" in msg:  # id null: the backend could not read something we sent
                log.warning("backend error for no request: %s", BackendError.from_error(
                    msg["error"]))
            return
        if "error" in msg:
            call._finish(err=BackendError.from_error(msg["error"], call.id))
        else:
            call._finish(msg.get("result"))

    def _on_progress(self, params: dict[str, Any]) -> None:
        with self._lock:
            call = self._pending.get(params.get("id"))
        done, total = params.get("done"), params.get("total")
        if call is not None and is_count(done) and is_count(total):
            call._set_progress(Progress(done, total, str(params.get("message") or "")))

    def _forget(self, id: Any) -> Call | None:
        with self._lock:
            return self._pending.pop(id, None) if is_id(id) else None

    def _pending_calls(self) -> list[Call]:
        with self._lock:
            return list(self._pending.values())

    def _fail_all(self, err: BackendError) -> None:
        with self._lock:
            if self._stopped is None:
                self._stopped = err
            calls, self._pending = list(self._pending.values()), {}
        for call in calls:
            call._finish(err=self._stopped)

    def _stopped_error(self, wait: float) -> BackendError:
        if self._stopped is not None:
            return self._stopped
        try:
            status = self.process.wait(wait)
        except subprocess.TimeoutExpired:
            status = None
        self._stderr_thread.join(1.0)  # let the last log lines arrive
        what = ("backend stopped" if status is None else f"backend stopped (exit status {status})")
        if self._closing:
            what += " after close()"
        where = f"see the log {self.log_path}" if self.log_path else "see the backend log"
        tail = self.log_tail().strip()
        detail = f"{where}; last lines:\n{tail}" if tail else where
        return BackendError(BACKEND_STOPPED, f"{what}; {where}", detail)

    def _drain_stderr(self) -> None:
        stream = self.process.stderr
        try:
            for line in iter(lambda: stream.readline(65536), b""):
                if self._log_file is not None:
                    try:
                        self._log_file.write(line)
                        self._log_file.flush()
                    except (OSError, ValueError):
                        pass
                self._log_tail.append(line.decode("utf-8", "replace").rstrip()[:1000])
        except (OSError, ValueError):
            pass

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()

