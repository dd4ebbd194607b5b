"""The stdio backend: JSON-RPC 2.0 over stdin/stdout (DESIGN.md section 5; docs/protocol.md).

Threads, and why:
- a reader thread reads stdin, so `$/cancelRequest` and `exit` arrive while work runs;
- the calling thread is the worker: requests run one at a time, in order (others queue);
- a heartbeat thread re-sends the latest progress every 0.5 s, so a client sees life at least
  once a second even while the model sits inside one long layer.

stdout carries protocol lines only: at start, file descriptor 1 is pointed at stderr and the
protocol goes to a private duplicate of the real stdout, so neither a stray `print` nor a native
library writing to fd 1 can corrupt the stream. Logs go to stderr. Likewise the reader thread
reads a private duplicate of stdin: at exit it may still be blocked in a read, and holding the
lock of `sys.stdin` there would make the interpreter's shutdown abort (SIGABRT).

Before `initialize`, every request except `shutdown` fails with -32002 (no model loaded; the
detail says to send `initialize` first), as in LSP's "server not initialized". End of stdin stops
reading; requests already received are still answered, then the process exits 0. `exit` cancels
the running request and exits 0 at once. If stdout breaks (the client is gone), or on SIGINT or
SIGTERM (a Ctrl-C in the terminal, a client stopping it), running work is cancelled, queued
requests are dropped and the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from . import __version__
from . import protocol as p
from .arkit import CHANNELS
from .controls import Controls
from .errors import (
    KIND_DEPENDENCY,
    KIND_INTERNAL,
    KIND_MEMORY,
    KIND_PROTOCOL,
    Cancelled,
    EmoTalkError,
)

log = logging.getLogger("emotalk.server")

HEARTBEAT_S = 0.5  # resend the latest progress this often while a request runs
PROGRESS_MIN_INTERVAL_S = 0.1  # at most this many fresh progress messages per second


# -- entry point ----------------------------------------------------------------------------------
def serve(stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    """Run the backend until `exit`, end of stdin, a broken stdout, SIGINT or SIGTERM; returns
    the exit status. With no streams given, uses the process's stdin and (protected) stdout."""
    _setup_logging()
    saved_stdout = sys.stdout
    out, restore = (stdout, None) if stdout is not None else _protected_stdout()
    sys.stdout = sys.stderr  # stray prints go to the log, never into the protocol
    try:
        server = Server(stdin if stdin is not None else _private_stdin(), out)
        with _stop_signals(server):
            return server.run()
    finally:
        sys.stdout = saved_stdout
        if restore is not None:
            restore()


def _private_stdin() -> IO[bytes]:
    """A stream of its own on fd 0, for the reader thread (see the module docstring)."""
    try:
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    except (AttributeError, OSError, ValueError):  # no real fd (embedded, captured)
        return sys.stdin.buffer


@contextlib.contextmanager
def _stop_signals(server: Server) -> Iterator[None]:
    """SIGINT and SIGTERM stop the server as `exit` does, so it exits 0 instead of dying with
    a KeyboardInterrupt in whichever thread. Only the main thread can set handlers; elsewhere
    (a server run inside a program) the program's own handling stays."""
    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, server.request_stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s emotalk %(levelname)s %(message)s")


def _protected_stdout() -> tuple[IO[bytes], Callable[[], None] | None]:
    """A private binary stream on the real stdout, with fd 1 pointed at stderr meanwhile."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # no real fd (embedded, captured): best effort
        return sys.stdout.buffer, None
    out = os.fdopen(saved, "wb")

    def restore() -> None:
        # The client may be gone: lines still buffered cannot be delivered, so a broken pipe
        # here is dropped with them instead of escaping as an exception at exit.
        with contextlib.suppress(OSError, ValueError):
            out.flush()
        with contextlib.suppress(OSError):
            os.dup2(saved, fd)
        with contextlib.suppress(OSError, ValueError):
            out.close()

    return out, restore


# -- plumbing -------------------------------------------------------------------------------------
class _Output:
    """Writes whole protocol lines under a lock; remembers when the client has gone away."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.lock = threading.Lock()
        self.broken = threading.Event()

    def send(self, msg: dict[str, Any]) -> bool:
        try:
            data = p.encode_message(msg)
        except (TypeError, ValueError) as exc:  # a bug: never send half a message
            log.exception("cannot encode a reply")
            data = p.encode_message(p.error(msg.get("id"), p.INTERNAL_ERROR,
                                            f"cannot encode the reply: {exc}", None,
                                            KIND_INTERNAL))
        with self.lock:
            if self.broken.is_set():
                return False
            try:
                self.stream.write(data)
                self.stream.flush()
                return True
            except (OSError, ValueError) as exc:
                log.warning("stdout is closed (%s); stopping", exc)
                self.broken.set()
                return False


@dataclass
class _Job:
    id: int | str
    method: str
    params: dict[str, Any] | None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()


class _Progress:
    """The running request's latest progress, sent when it changes (rate-limited) and re-sent
    by the heartbeat. Sending under `lock` keeps every progress message before the reply."""

    def __init__(self, output: _Output):
        self.output = output
        self.lock = threading.Lock()
        self.current: list[Any] | None = None  # [id, done, total, message]
        self.last_sent = 0.0

    def start(self, id: int | str, message: str) -> None:
        with self.lock:
            self.current = [id, 0, 1, message]
            self._send()

    def update(self, done: int, total: int, message: str) -> None:
        with self.lock:
            if self.current is None:
                return
            self.current[1:] = [done, total, message]
            if time.monotonic() - self.last_sent >= PROGRESS_MIN_INTERVAL_S or done >= total:
                self._send()

    def stop(self) -> None:
        with self.lock:
            self.current = None

    def beat(self) -> None:
        with self.lock:
            if self.current is not None and time.monotonic() - self.last_sent >= HEARTBEAT_S * 0.9:
                self._send()

    def _send(self) -> None:
        self.last_sent = time.monotonic()
        self.output.send(p.progress(*self.current))


def server_info() -> dict[str, Any]:
    """The `initialize` result's `server`: what a user quotes when asking for help (the add-on's
    Check backend shows it). torch is loaded by then: the model needs it."""
    import platform

    import torch

    from .phonetics import recognize

    return {"name": "emotalk", "version": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "recognition": recognize.status()}


# -- the server -----------------------------------------------------------------------------------
class Server:
    """One backend session: see the module docstring for its threads and lifecycle."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes]):
        self.reader = p.LineReader(stdin, p.MAX_MESSAGE_BYTES)
        self.output = _Output(stdout)
        self.progress = _Progress(self.output)
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.jobs: dict[int | str, _Job] = {}  # queued and running, by id
        self.jobs_lock = threading.Lock()
        self.stopping = threading.Event()  # the worker has finished: helper threads end
        self.exiting = threading.Event()  # exit now, without the queued requests
        self.predictor = None
        self.model_key: tuple[str, str] | None = None
        self.shut_down = False
        # Set by a signal handler. A plain attribute, not an Event: the handler runs on the
        # main thread between any two bytecodes, possibly while that thread holds a lock that
        # Event.set or `_exit_now` would take. The heartbeat thread acts on it.
        self.stop_requested = False

    def request_stop(self, signum: int = 0, frame: Any = None) -> None:
        """Signal handler: stop as `exit` does (see `stop_requested`)."""
        self.stop_requested = True

    def run(self) -> int:
        log.info("emotalk backend %s ready (protocol %d)", __version__, p.PROTOCOL_VERSION)
        reader = threading.Thread(target=self._read_loop, name="emotalk-reader", daemon=True)
        heartbeat = threading.Thread(target=self._heartbeat, name="emotalk-heartbeat",
                                     daemon=True)
        reader.start()
        heartbeat.start()
        try:
            self._work_loop()
        finally:
            self.stopping.set()
            heartbeat.join(2.0)
            reader.join(0.0 if self.exiting.is_set() else 0.5)  # blocked on stdin after `exit`
            self._release_model()
        log.info("emotalk backend exits")
        return 0

    def _release_model(self) -> None:
        """Free the model here, on the calling thread. Otherwise a daemon thread that drops the
        last reference to this server could free torch tensors during interpreter shutdown, and
        Python 3.11 ends such threads with pthread_exit: inside torch's C++ destructors that
        aborts the process ("terminate called without an active exception")."""
        self.predictor = None
        self.model_key = None

    # -- reader thread --------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while not self.exiting.is_set():
                try:
                    line = self.reader.read_line()
                except p.ProtocolError as exc:
                    self._reply_error(exc)
                    continue
                if line is None:
                    break
                if line.strip():
                    self._on_line(line)
        except (OSError, ValueError) as exc:
            log.warning("cannot read stdin (%s); stopping", exc)
        except Exception:  # a bug here must not leave the worker waiting forever
            log.exception("reader failed")
            self._exit_now()
        log.info("end of input")
        self.queue.put(None)  # after everything already received

    def _on_line(self, line: bytes) -> None:
        try:
            msg = p.decode_message(line, p.MAX_MESSAGE_BYTES)
        except p.ProtocolError as exc:
            self._reply_error(exc)
            return
        if p.is_request(msg):
            self._enqueue(msg)
        elif p.is_notification(msg):
            self._on_notification(msg["method"], msg.get("params") or {})
        else:
            log.warning("ignoring a response sent to the server (id %r)", msg.get("id"))

    def _enqueue(self, msg: dict[str, Any]) -> None:
        job = _Job(msg["id"], msg["method"], msg.get("params"))
        with self.jobs_lock:
            if job.id in self.jobs:
                self._reply_error(p.ProtocolError(
                    p.INVALID_REQUEST, f"request id {job.id!r} is already in use",
                    "use a new id for every request"))
                return
            self.jobs[job.id] = job
        self.queue.put(job)

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == p.METHOD_CANCEL:
            with self.jobs_lock:
                job = self.jobs.get(params.get("id")) if p.is_id(params.get("id")) else None
            if job is not None:
                log.info("cancelling request %r", job.id)
                job.cancelled.set()
        elif method == p.METHOD_EXIT:
            log.info("exit requested")
            self._exit_now()
        else:
            log.debug("ignoring notification %r", method)

    def _exit_now(self) -> None:
        """`exit`, or the client is gone: cancel the running request, drop the queued ones."""
        self.exiting.set()
        with self.jobs_lock:
            for job in self.jobs.values():
                job.cancelled.set()
        self.queue.put(None)

    def _heartbeat(self) -> None:
        while not self.stopping.wait(HEARTBEAT_S / 2):
            self.progress.beat()
            if self.stop_requested and not self.exiting.is_set():
                log.info("stopping on a signal")
                self._exit_now()
            if self.output.broken.is_set():
                self._exit_now()

    # -- worker (calling thread) ----------------------------------------------------------------
    def _work_loop(self) -> None:
        """Requests in order. End of input (None, queued after everything received) ends the
        loop; so does `exit` or a broken stdout, which drop the requests still queued."""
        while True:
            job = self.queue.get()
            if job is None or self.exiting.is_set():
                return
            self._run(job)

    def _run(self, job: _Job) -> None:
        self.progress.start(job.id, f"{job.method}: starting")
        try:
            job.check()
            reply = p.result(job.id, self._dispatch(job))
        except Exception as exc:  # every failure becomes one error reply; the server lives on
            reply = p.error(job.id, *_error_parts(exc, job))
        finally:
            self.progress.stop()
            with self.jobs_lock:
                self.jobs.pop(job.id, None)
        self.output.send(reply)

    def _reply_error(self, exc: p.ProtocolError) -> None:
        log.warning("bad message: %s", exc)
        self.output.send(p.error(exc.id, exc.code, exc.message, exc.detail,
                                 exc.kind or KIND_PROTOCOL))

    def _dispatch(self, job: _Job) -> Any:
        handlers = {p.METHOD_INITIALIZE: self.initialize, p.METHOD_ANIMATE: self.animate,
                    p.METHOD_SHUTDOWN: self.shutdown}
        handler = handlers.get(job.method)
        if handler is None:
            raise p.ProtocolError(p.METHOD_NOT_FOUND, f"unknown method {job.method!r}",
                                  f"methods: {', '.join(handlers)}")
        if self.shut_down:
            raise p.ProtocolError(p.INVALID_REQUEST, "the server is shutting down",
                                  "send exit, then start a new backend")
        if self.predictor is None and job.method not in (p.METHOD_INITIALIZE, p.METHOD_SHUTDOWN):
            raise p.ProtocolError(p.MODEL_ERROR, "no model is loaded: the server is not "
                                  "initialized", "send initialize (with the model) first")
        return handler(_params(job.params, job.method), job)

    # -- methods --------------------------------------------------------------------------------
    def initialize(self, params: dict[str, Any], job: _Job) -> dict[str, Any]:
        """Load the model (once; a different model or device reloads). A failed load keeps the
        model loaded before, if any."""
        version = params.get("protocolVersion")
        if not _is_int(version):
            raise _bad_params("initialize needs protocolVersion (an integer)")
        if version != p.PROTOCOL_VERSION:
            raise p.ProtocolError(
                p.INVALID_PARAMS, f"protocol version {version} is not supported; this backend "
                f"speaks {p.PROTOCOL_VERSION}", "install matching versions of the add-on and "
                "the emotalk backend")
        model = _optional(params, "model", str, "default")
        device = _optional(params, "device", str, "auto")
        _optional(params, "client", dict, {})
        if (model, device) != self.model_key:
            self._load(model, device, job)
        return {
            "protocolVersion": p.PROTOCOL_VERSION,
            "server": server_info(),
            "model": self.predictor.describe(),
            "channels": list(CHANNELS),
        }

    def _load(self, model: str, device: str, job: _Job) -> None:
        self.progress.update(0, 1, f"loading model {model}")
        from .inference import Predictor  # torch loads here, not at startup

        predictor = Predictor(model, device=device)
        job.check()
        self.predictor, self.model_key = predictor, (model, device)
        log.info("loaded model %s on %s", model, predictor.device)

    def animate(self, params: dict[str, Any], job: _Job) -> dict[str, Any]:
        audio = params.get("audio")
        if not isinstance(audio, dict):
            raise _bad_params('animate needs "audio": {"path", "start", "end"}')
        path = audio.get("path")
        if not isinstance(path, str) or not path:
            raise _bad_params('audio.path must be a non-empty string (a file path)')
        start = _optional(audio, "start", float, None)
        end = _optional(audio, "end", float, None)
        fps = _optional(params, "fps", float, 30.0)
        controls = Controls.from_dict(_optional(params, "controls", dict, {}))
        transcript = _optional(params, "transcript", str, None)
        out = self.predictor.predict(path, start=start, end=end, fps=fps, controls=controls,
                                     transcript=transcript, progress=self.progress.update,
                                     cancel=job.cancelled.is_set)
        for warning in out.warnings:
            log.info("request %r: %s", job.id, warning)
        return {
            "frames": out.frames,
            "fps": out.fps,
            "start": out.start,
            "channels": list(out.channels),
            "encoding": p.ENCODING_F32LE,
            "values": p.encode_values(out.values.astype("<f4", copy=False).tobytes()),
            "emotion": {"probabilities": out.emotion_probabilities},
            "phoneSource": out.phone_source,
            "warnings": [str(w) for w in out.warnings],
        }

    def shutdown(self, params: dict[str, Any], job: _Job) -> None:
        self.shut_down = True
        return None


# -- helpers --------------------------------------------------------------------------------------
def _params(params: dict[str, Any] | None, method: str) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _bad_params(f"{method} params must be a JSON object")
    return params


def _bad_params(message: str) -> p.ProtocolError:
    return p.ProtocolError(p.INVALID_PARAMS, message, "see docs/protocol.md for the parameters")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(params: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """params[key] checked against `kind` (float accepts integers); None or absent: default."""
    value = params.get(key)
    if value is None:
        return default
    if kind is float and (_is_int(value) or isinstance(value, float)):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    names = {float: "a number", str: "a string", dict: "a JSON object"}
    raise _bad_params(f"{key} must be {names.get(kind, kind.__name__)}, got {value!r:.80}")


def _error_parts(exc: BaseException, job: _Job) -> tuple[int, str, str | None, str]:
    """(code, message, detail, kind) for an error reply. Our exceptions carry their code and
    kind; a module missing from this Python is the install's fault, not ours; anything else is
    a bug: a short reply, the traceback in the log (stderr), never on stdout."""
    if isinstance(exc, Cancelled):  # the wording docs/protocol.md gives, whoever noticed it
        log.info("request %r (%s) cancelled", job.id, job.method)
        reply = Cancelled()
        return reply.code, reply.message, reply.detail, reply.kind
    if isinstance(exc, EmoTalkError):
        log.info("request %r (%s) failed: %s", job.id, job.method, exc.message)
        return exc.code, exc.message, exc.detail, exc.kind
    if isinstance(exc, p.ProtocolError):
        log.info("request %r (%s) failed: %s", job.id, job.method, exc.message)
        return exc.code, exc.message, exc.detail, exc.kind or KIND_PROTOCOL
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        log.warning("request %r (%s): out of memory", job.id, job.method)
        return p.OUT_OF_MEMORY, "out of memory", "close other programs, use a shorter clip or " \
            "the CPU", KIND_MEMORY
    if isinstance(exc, ImportError):
        log.warning("request %r (%s): cannot import %s", job.id, job.method, exc.name or "a module",
                    exc_info=True)
        return (p.INTERNAL_ERROR, _import_message(exc), "install emotalk with its dependencies "
                "into that Python (pip install -e <repo>), or run the backend with a Python that "
                "has them", KIND_DEPENDENCY)
    log.exception("request %r (%s) failed unexpectedly", job.id, job.method)
    return (p.INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {_first_line(exc)}"
            .rstrip(": "), "this is a bug in the backend; the backend log (stderr) has the "
            "details", KIND_INTERNAL)


def _import_message(exc: ImportError) -> str:
    """What is missing, and from which interpreter: the user chose it, and must change it."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"the backend's Python {sys.executable} has no module named {exc.name!r}"
    return f"the backend's Python {sys.executable} cannot import {exc.name or 'a module'}: " \
        f"{_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""
