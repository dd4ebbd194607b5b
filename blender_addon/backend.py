"""The add-on's side of the backend: which Python and model to run, one backend per Blender
session, and a bake job that turns audio windows into curves at the scene's frame rate.

bpy-free (numpy and the standard library only) so it is tested without Blender, against a real
server. It talks to the backend through `client.Client`; `client.py`, `protocol.py` and
`controls.py` are verbatim copies of emotalk_core's that `build_addon.py` places next to this file.
The backend computes the curves at the scene's frame rate; this side only fits them to the
strip's frames.

One state machine (`BakeJob.poll`) serves both callers: Blender's modal timer polls it, and the
synchronous path (`bpy.app.background`, scripts) loops over the same `poll`, so both behave the
same way. A job collects every strip's curves before it reports success; a failure or a cancel
leaves nothing half-done for the caller to write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:  # the installed extension carries verbatim copies of these modules
    from . import arkit, client, errors, pids, protocol
except ImportError:  # running from the source tree: the originals
    from emotalk_core import arkit, client, errors, pids, protocol

from . import discovery

ENV_PYTHON = "EMOTALK_PYTHON"
ENV_MODEL = "EMOTALK_MODEL"
CLIENT_NAME = "emotalk-blender"
BUILD_INFO = "build_info.json"  # written into the zip by build_addon.py


class BakeError(Exception):
    """A problem the animator must see, phrased for them; raised once, reported once."""


class BakeCancelled(BakeError):
    """The animator cancelled; nothing was written."""


# -- what to run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendSettings:
    """Resolved interpreter, model and device: a backend is reused only for equal settings."""

    python: str
    model: str
    device: str = "auto"


def addon_version() -> str:
    """The version build_addon.py recorded (emotalk_core.__version__ at build time)."""
    return str(_build_info().get("version", "dev"))


def _build_info() -> dict[str, Any]:
    path = Path(__file__).with_name(BUILD_INFO)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def venv_python(repo: Path) -> Path:
    """The interpreter of `repo`/.venv on this platform."""
    return discovery.env_python(repo / ".venv", discovery.current_platform())


def repo_candidates() -> list[Path]:
    """Repositories whose .venv may hold emotalk_core: the source tree the add-on runs from,
    then the one it was built from (recorded in the zip; absent on other machines)."""
    here = Path(__file__).resolve().parent
    found = [here.parent]
    built_from = _build_info().get("source_repo")
    if built_from:
        found.append(Path(built_from))
    return found


def discover_python(preference: str = "",
                    backend_folder: Path | None = None) -> discovery.Found:
    """The interpreter to run and where it was found (discovery.discover's order): EMOTALK_PYTHON,
    the preference, the private environment in `backend_folder` (Set up backend's), `emotalk`
    on PATH, a repository's .venv, else sys.executable.

    sys.executable is last because inside real Blender it is Blender's own Python, which has
    no torch; it is right only for the bpy module installed into emotalk_core's environment.
    """
    return discovery.discover(env=os.environ, preference=preference,
                              backend_folder=backend_folder, repos=repo_candidates(),
                              platform=discovery.current_platform(), fallback=sys.executable)


def resolve_python(preference: str = "", backend_folder: Path | None = None) -> str:
    return discover_python(preference, backend_folder).python


def resolve_model(preference: str = "") -> str:
    """EMOTALK_MODEL, else the preference, else the packaged default model."""
    chosen = os.environ.get(ENV_MODEL, "").strip() or (preference or "").strip()
    return os.path.expanduser(chosen) if chosen else "default"


def resolve_settings(python: str = "", model: str = "", device: str = "auto",
                     backend_folder: Path | None = None) -> BackendSettings:
    return BackendSettings(resolve_python(python, backend_folder), resolve_model(model),
                           device if device in protocol.DEVICES else "auto")


LOG_NAME = re.compile(r"^backend-(\d+)\.log$")


def default_log_path() -> Path:
    """Where the backend's stderr goes: quoted in error messages so a user can send it, so it
    outlives its session; the logs of sessions whose Blender has exited are removed here, when
    the next session starts its backend."""
    folder = Path(tempfile.gettempdir()) / "emotalk"
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_logs(folder)
    return folder / f"backend-{os.getpid()}.log"


def remove_stale_logs(folder: Path) -> list[Path]:
    """Delete `backend-<pid>.log` files in `folder` whose process no longer runs."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            found = LOG_NAME.match(entry.name)
            if found and not pids.alive(int(found[1])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


# -- one backend process --------------------------------------------------------------------------
class Backend:
    """A running `python -m emotalk_core serve` and what it reported at `initialize`."""

    def __init__(self, settings: BackendSettings, log_path: str | os.PathLike | None = None):
        self.settings = settings
        self.log_path = Path(log_path) if log_path else default_log_path()
        _check_interpreter(settings.python)
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.pop("PYTHONHOME", None)  # Blender's, if set, would break another interpreter
        try:
            self.client = client.Client(python=settings.python, log_path=self.log_path,
                                          env=env)
        except protocol.BackendError as exc:  # the interpreter exists but cannot run
            raise BakeError(f"cannot start the backend with {settings.python}: {exc}") from exc
        self.info: dict[str, Any] | None = None

    @property
    def alive(self) -> bool:
        return self.client.alive

    def initialize_params(self) -> dict[str, Any]:
        return {"protocolVersion": protocol.PROTOCOL_VERSION,
                "client": {"name": CLIENT_NAME, "version": addon_version()},
                "model": self.settings.model, "device": self.settings.device}

    def initialize(self, timeout: float | None = None) -> dict[str, Any]:
        """Blocking initialize (the preferences' "Check backend")."""
        call = self.client.start_call(protocol.METHOD_INITIALIZE, self.initialize_params())
        try:
            self.info = call.wait(timeout)
        except protocol.BackendError as exc:
            raise BakeError(describe_error(exc, self)) from exc
        return self.info

    def close(self) -> None:
        self.client.close(grace=2.0)


def _check_interpreter(python: str) -> None:
    try:  # Path.is_file() raises for some errors (a name too long, permission denied)
        usable = Path(python).is_file() and os.access(python, os.X_OK)
    except (OSError, ValueError) as exc:
        raise BakeError(f"cannot look at the backend Python {python[:200]}: "
                        f"{getattr(exc, 'strerror', None) or exc}. "
                        f"{_change(PYTHON_PREFERENCE, ENV_PYTHON, 'to a Python interpreter')}"
                        ) from exc
    if not usable:
        raise BakeError(f"backend Python not found or not executable: {python}. "
                        f"{_change(PYTHON_PREFERENCE, ENV_PYTHON, 'to a Python interpreter')}")


# -- errors in the animator's words ---------------------------------------------------------------
# Where the add-on's settings are (preferences.py's labels): each message names the one to change.
PREFERENCES = "Edit > Preferences > Add-ons > EmoTalk"
PYTHON_PREFERENCE = "Backend Python"
MODEL_PREFERENCE = "Model"
DEVICE_PREFERENCE = "Device"
PANEL = "the EmoTalk tab of the 3D Viewport's sidebar"
MISSING_MODULE = re.compile(r"No module named '?([\w.]+)'?")
WITH_EMOTALK = "to a Python with emotalk installed (or make one: Set up Backend, below it; " \
    "the README's 'Install')"
MODEL_FOLDER = "to a model folder (config.json and model.safetensors) or to 'default'"


def describe_error(exc: protocol.ProtocolError, backend: Backend | None, label: str = "") -> str:
    """One message for the animator: what is wrong, which setting of the add-on to change, and
    where the log is when only the log can tell more. Worded from the error's `kind`; an older
    backend's errors, which have none, keep the backend's own words."""
    where = f"{label}: " if label else ""
    if exc.code == protocol.BACKEND_STOPPED and backend is not None:
        return where + _describe_stopped(backend)
    kind = exc.kind or (errors.KIND_INTERNAL if exc.code == protocol.INTERNAL_ERROR else None)
    advise = _ADVICE.get(kind or "")
    return where + (advise(exc, backend) if advise is not None else _as_sent(exc))


def _as_sent(exc: protocol.ProtocolError) -> str:
    detail = f" ({exc.detail})" if exc.detail and exc.detail != exc.message else ""
    return f"{exc.message}{detail}"


def _change(preference: str, env: str | None, value: str) -> str:
    """Which setting to change: the preference, unless an environment variable overrides it
    (then the preference would change nothing)."""
    if env and os.environ.get(env, "").strip():
        return f"{env} is set and overrides the add-on's preferences: point it {value}, or unset it"
    return f"Set {preference} in {PREFERENCES} {value}"


def _log(backend: Backend | None) -> str:
    return f" Log: {backend.log_path}" if backend is not None else ""


def _describe_stopped(backend: Backend) -> str:
    """A backend that died: the cause its log names (most often a Python without emotalk_core
    or one of its dependencies), else the log's last line."""
    tail = backend.client.log_tail()
    missing = MISSING_MODULE.findall(tail)
    python = backend.settings.python
    if missing:
        return (f"the backend Python {python} has no {missing[-1]}. "
                f"{_change(PYTHON_PREFERENCE, ENV_PYTHON, WITH_EMOTALK)}, or install emotalk "
                f"into that one (pip install -e <repo>).{_log(backend)}")
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    hint = f" Last log line: {last}" if last else ""
    return (f"the EmoTalk backend stopped; nothing was written, and the next run starts a "
            f"fresh backend. Log: {backend.log_path}.{hint}")


def _model_advice(exc: protocol.ProtocolError, backend: Backend | None) -> str:
    return f"{exc.message}. {_change(MODEL_PREFERENCE, ENV_MODEL, MODEL_FOLDER)}"


def _device_advice(exc: protocol.ProtocolError, backend: Backend | None) -> str:
    return f"{exc.message}. Choose {DEVICE_PREFERENCE}: CPU (or Auto) in {PREFERENCES}"


def _memory_advice(exc: protocol.ProtocolError, backend: Backend | None) -> str:
    on_gpu = backend is None or backend.settings.device != "cpu"
    cpu = f", or choose {DEVICE_PREFERENCE}: CPU in {PREFERENCES}" if on_gpu else ""
    return (f"{exc.message}. Animate shorter or fewer strips at a time, close other "
            f"programs{cpu}")


def _controls_advice(exc: protocol.ProtocolError, backend: Backend | None) -> str:
    return f"{exc.message}. Check the settings in {PANEL}"


def _dependency_advice(exc: protocol.ProtocolError, backend: Backend | None) -> str:
    return (f"{exc.message}. {_change(PYTHON_PREFERENCE, ENV_PYTHON, WITH_EMOTALK)}."
            f"{_log(backend)}")


def _internal_advice(exc: protocol.ProtocolError, backend: Backend | None) -> str:
    where = f"the log: {backend.log_path}" if backend is not None else "the backend's log"
    return f"{exc.message}. This is a bug in the EmoTalk backend; please report it with {where}"


_ADVICE: dict[str, Callable[[protocol.ProtocolError, Backend | None], str]] = {
    errors.KIND_MODEL: _model_advice,
    errors.KIND_DEVICE: _device_advice,
    errors.KIND_MEMORY: _memory_advice,
    errors.KIND_CONTROLS: _controls_advice,
    errors.KIND_DEPENDENCY: _dependency_advice,
    errors.KIND_INTERNAL: _internal_advice,
}


class Session:
    """Keeps one backend per Blender session: started on first use, reused while its settings
    stay the same and it is alive, replaced by a fresh one after a crash or a settings change."""

    def __init__(self) -> None:
        self.backend: Backend | None = None

    def ensure(self, settings: BackendSettings, log_path: str | None = None) -> Backend:
        current = self.backend
        if current is not None and current.settings == settings and current.alive:
            return current
        self.close()
        self.backend = Backend(settings, log_path)
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()


SESSION = Session()


# -- a bake job -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnimateRequest:
    """One strip's window: seconds of `path`, the scene frames its keys fill, the words
    spoken in it when known, and its own controls (JSON form) when it does not take the job's."""

    label: str
    path: str
    start: float
    end: float | None
    frame_count: int
    scene_fps: float
    transcript: str | None = None
    controls: dict[str, Any] | None = None  # None: the job's controls


@dataclass
class Curves:
    """One strip's result: (frame_count, 52) values at the scene's rate, in arkit.CHANNELS order,
    with the backend's notes for the animator."""

    request: AnimateRequest
    values: np.ndarray
    emotion: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    phone_source: str | None = None


@dataclass(frozen=True)
class JobStatus:
    finished: bool
    fraction: float
    message: str


class BakeJob:
    """Initialize (if needed), then one `animate` per request, in order, each with its own
    controls or else the job's. Poll it; when finished, `results` holds every request's curves,
    or `error` says why there are none."""

    def __init__(self, backend: Backend, requests: Sequence[AnimateRequest],
                 controls: dict[str, Any]):
        if not requests:
            raise BakeError("no audio to animate")
        self.backend = backend
        self.requests = list(requests)
        self.controls = controls
        self.results: list[Curves] = []
        self.error: BakeError | None = None
        self.finished = False
        self._call: client.Call | None = None
        self._initializing = False
        self._message = "starting the backend"

    # -- driving --------------------------------------------------------------------------------
    def poll(self) -> JobStatus:
        """Advance without blocking. Never raises: a failure lands in `error`."""
        if not self.finished:
            try:
                self._advance()
            except BakeError as exc:
                self._fail(exc)
        return JobStatus(self.finished, self.fraction, self._message)

    def run(self, on_progress: Callable[[JobStatus], None] | None = None,
            interval: float = 0.05) -> list[Curves]:
        """Blocking: the synchronous path (background Blender, scripts). Raises BakeError."""
        while True:
            status = self.poll()
            if on_progress is not None:
                on_progress(status)
            if status.finished:
                break
            time.sleep(interval)
        if self.error is not None:
            raise self.error
        return self.results

    def cancel(self) -> None:
        """Stop now: the backend is asked to drop the running request; nothing is returned."""
        if self._call is not None:
            self._call.cancel()
        if self.error is None:  # even a finished job: a cancel means nothing is written
            self._fail(BakeCancelled("cancelled; nothing was written"))

    @property
    def fraction(self) -> float:
        done = len(self.results)
        inner = 0.0
        if self._call is not None and not self._initializing:
            progress = self._call.poll().progress
            inner = progress.fraction if progress is not None else 0.0
        if self.finished and self.error is None:
            return 1.0
        return min(1.0, (done + inner) / len(self.requests))

    # -- internals ------------------------------------------------------------------------------
    def _fail(self, exc: BakeError) -> None:
        self.error, self.results, self.finished, self._call = exc, [], True, None

    def _advance(self) -> None:
        if self._call is None:
            self._start_next()
            return
        status = self._call.poll()
        if not status.finished:
            if status.progress is not None and status.progress.message and not self._initializing:
                self._message = f"{self._current.label}: {status.progress.message}"
            return
        label = "" if self._initializing else self._current.label
        if status.error is not None:
            raise BakeError(describe_error(status.error, self.backend, label))
        self._call = None
        if self._initializing:
            self._initializing = False
            self.backend.info = status.result
        else:
            self.results.append(self._decode(self._current, status.result))
        if len(self.results) == len(self.requests):
            self.finished = True
            self._message = "done"
        else:
            self._start_next()

    @property
    def _current(self) -> AnimateRequest:
        return self.requests[len(self.results)]

    def _start_next(self) -> None:
        running = self.backend.client
        if self.backend.info is None:
            self._initializing = True
            self._message = f"loading the model ({self.backend.settings.model})"
            self._call = running.start_call(protocol.METHOD_INITIALIZE,
                                           self.backend.initialize_params())
            return
        req = self._current
        self._message = f"{req.label}: starting"
        controls = self.controls if req.controls is None else req.controls
        params = protocol.animate_params(req.path, req.start, req.end, req.scene_fps,
                                         controls, req.transcript)
        self._call = running.start_call(protocol.METHOD_ANIMATE, params)

    def _decode(self, req: AnimateRequest, result: Any) -> Curves:
        try:
            values = decode_result(result)
        except (KeyError, TypeError, ValueError, protocol.ProtocolError) as exc:
            raise BakeError(f"{req.label}: the backend sent an unreadable result ({exc})") from exc
        if values.shape[0] == 0:
            raise BakeError(f"{req.label}: the backend returned no frames for this strip")
        curves = fit_frames(values, req.frame_count)
        probabilities = ((result.get("emotion") or {}).get("probabilities")) or {}
        source = result.get("phoneSource")
        return Curves(req, curves, {str(k): float(v) for k, v in probabilities.items()},
                      result_warnings(result), source if isinstance(source, str) else None)


def result_warnings(result: dict[str, Any]) -> list[str]:
    """An animate result's `warnings`; [] from a backend that predates them."""
    found = result.get("warnings")
    return [str(w) for w in found] if isinstance(found, list) else []


def bake_warnings(results: Sequence[Curves]) -> list[str]:
    """Every strip's warnings, each naming its strip."""
    return [f"{c.request.label}: {w}" for c in results for w in c.warnings]


def fit_frames(values: np.ndarray, count: int) -> np.ndarray:
    """The first `count` frames of a strip's curves (the backend rounds the window's length up
    to whole frames); a strip's last frame may reach just past the audio, and then holds the
    audio's last frame."""
    if values.shape[0] >= count:
        return values[:count]
    held = np.repeat(values[-1:], count - values.shape[0], axis=0)
    return np.concatenate([values, held])


def decode_result(result: dict[str, Any]) -> np.ndarray:
    """(frames, 52) float32 in arkit.CHANNELS order, whatever order the backend sent: curves
    are always exchanged by name."""
    if result.get("encoding") != protocol.ENCODING_F32LE:
        raise ValueError(f"unknown encoding {result.get('encoding')!r}")
    names = list(result["channels"])
    frames = int(result["frames"])
    raw = protocol.values_bytes(result["values"], frames, len(names))
    values = np.frombuffer(raw, dtype="<f4").reshape(frames, len(names))
    position = {name: i for i, name in enumerate(names)}
    missing = [name for name in arkit.CHANNELS if name not in position]
    if missing:
        raise ValueError(f"channels missing from the result: {', '.join(missing)}")
    return np.ascontiguousarray(values[:, [position[n] for n in arkit.CHANNELS]], dtype=np.float32)
