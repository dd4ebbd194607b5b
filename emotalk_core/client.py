"""A Python client of the EmoTalk backend protocol (`protocol.py`).

`Client` runs the backend as a subprocess for any Python program (the add-on, scripts), in its
own process group so that a terminal's Ctrl-C does not reach it; it never hangs on a dead
backend, and `Client.start_call` + `Call.poll` serve non-blocking callers such as Blender's modal
timer.

STANDARD LIBRARY ONLY, plus `protocol.py` beside it: the Blender add-on carries verbatim copies
of both.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .protocol import (
    BACKEND_STOPPED,
    MAX_RESULT_BYTES,
    METHOD_CANCEL,
    METHOD_EXIT,
    METHOD_INITIALIZE,
    METHOD_PROGRESS,
    METHOD_SHUTDOWN,
    REQUEST_TIMEOUT,
    BackendError,
    LineReader,
    ProtocolError,
    decode_message,
    encode_message,
    initialize_params,
    is_count,
    is_id,
    is_response,
    notification,
    request,
)

log = logging.getLogger("emotalk.client")


# -- calls ----------------------------------------------------------------------------------------
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
        self._close_stdin()  # a backend that exited by itself left it open
        self._reader_thread.join(grace)
        self._stderr_thread.join(grace)
        for stream, reader in ((self.process.stdout, self._reader_thread),
                               (self.process.stderr, self._stderr_thread)):
            if stream is not None and not reader.is_alive():  # else its thread still reads
                with contextlib.suppress(OSError):
                    stream.close()
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

