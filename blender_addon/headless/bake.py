"""`emotalk bake`: the add-on's own Animate operator over .blend files, headless.

    emotalk bake shot010.blend shot020.blend --model models/v1 --emotion happy
    emotalk bake rig.blend --audio line1.wav --audio line2.wav --frame 101 -o take1.blend
    emotalk bake shots/*.blend --strips all --out-dir baked/ --level 0.5

Why it drives the add-on instead of calling `Predictor` and writing keys itself: one code path
with the UI. The bake opens each file in the `bpy` module (PyPI, installed into this same
environment), installs the add-on from its built extension zip into a private, temporary
BLENDER_USER_RESOURCES, sets the scene's panel settings from the command line and runs
`bpy.ops.emotalk.animate_from_audio()`. With `bpy.app.background` that operator runs
synchronously, so strip windows, name mapping, resampling and the bulk key writer are exactly
the ones an animator's button press uses. The operator's summary and warnings are read from the
outcome it records (`operators.last_outcome()` of the installed add-on), not from its printed
reports. bpy is imported only inside functions here, so `emotalk_core.cli` imports this module
without it.

Per file: open it; target = `--object`, else the active object when it is a mesh with shape
keys, else the only mesh with shape keys (among several, the only one whose keys match ARKit
channels); strips = the file's selected sound strips (`--strips selected`, the default),
`--strips all`, or `--strips NAME...` (the words combine: `--strips selected Crowd`); `--audio
FILE` adds a sound strip at `--frame N` (default: the scene's current frame) and bakes it;
`--audio` given several times adds the files one after another on the timeline (each starts
where the previous ends), so a rig plus a list of lines becomes one take. With `--audio` and no
`--strips`, only the added strips are baked; with both, the union. `--transcript TEXT` and
`--transcript-file FILE`, none or one per `--audio` in order, are stored on the added strips as
the add-on's per-strip Transcript; a strip without one (added or already in the file) uses a
UTF-8 `.txt` file named like its audio file beside it, if there is one. The panel settings
(emotion, intensity, style, post-processing) are set from the controls, whose defaults equal
`emotalk predict`'s, and are saved with the output. The add-on's warnings about a bake (a
transcript it could not use, ...) are printed as `emotalk: warning: FILE: ...`.

Output: `<name>.emotalk.blend` next to each input by default (never the input itself, nor
another input of the batch); `-o OUT.blend` for one input; `--out-dir DIR` (DIR/<name>.blend);
`--in-place` overwrites the input (Blender's .blend1 backup is not made). Output folders are
checked for writability and space before any file is baked. Every save goes to a hidden partial
file in the target folder and is renamed over the target only when complete, so an error or
Ctrl-C never leaves a partial .blend (and one left by a killed bake is removed by the next save
there). A batch shows one progress bar across files, goes on past a failing file, reports every
failure at the end and exits with status 1 when any failed (130 after Ctrl-C; the first Ctrl-C
stops the running backend request, the files finished so far stay written).

The files are opened and baked in a worker process, so that a damaged .blend that crashes
Blender's reader (SIGSEGV) is reported as that file's failure and a fresh worker bakes the rest
(see "the batch" below). Each worker starts the backend (`<python> -m emotalk_core serve`) once
and reuses it for its files: EMOTALK_PYTHON (default: this interpreter), the model from
`--model` (default EMOTALK_MODEL, else the packaged model), `--device` through the add-on's
preferences.

The same operator in a real Blender binary (its Python has no torch, so name the backend's):

    EMOTALK_PYTHON=/path/to/.venv/bin/python EMOTALK_MODEL=/path/to/model \\
      blender -b shot.blend --python-exit-code 1 --python-expr \\
      "import bpy; bpy.ops.emotalk.animate_from_audio(); bpy.ops.wm.save_mainfile()"

(with the extension installed in that Blender, the target mesh active and the strips selected as
saved in the file; `--python-exit-code 1` makes a failed bake a non-zero exit status).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from emotalk_core.errors import AudioError, ControlError, EmoTalkError, OutputError
from emotalk_core.files import (
    check_writable,
    clean_stale_partials,
    probe,
    refuse_inputs,
    require_file,
    shown,
)

from .blender import (
    SceneError,
    SetupError,
    addon_module,
    blender_output,
    build_addon_zip,
    ensure_addon,
    load_bpy,
    open_blend,
    operator_message,
    run_operator,
    save_atomic,
)
from .panel import apply_panel, check_panel

OUTPUT_SUFFIX = ".emotalk.blend"
ENV_PYTHON = "EMOTALK_PYTHON"  # the add-on's backend.ENV_PYTHON / ENV_MODEL
ENV_MODEL = "EMOTALK_MODEL"
STRIPS_SELECTED, STRIPS_ALL = "selected", "all"


# -- what to do -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileJob:
    """One input .blend and where its baked copy goes."""

    source: Path
    output: Path


@dataclass(frozen=True)
class BakeSettings:
    """Everything but the files. `panel` holds the add-on's scene settings (`panel_values`)."""

    panel: dict[str, Any]
    object_name: str | None = None
    strips: tuple[str, ...] = ()  # () = the default: selected strips, or the added ones
    audio: tuple[Path, ...] = ()
    transcripts: tuple[str, ...] = ()  # none, or one per `audio` ("" = none for that file)
    frame: int | None = None
    model: str = "default"
    device: str = "auto"
    python: str = ""  # "" = EMOTALK_PYTHON, else this interpreter
    addon: Path | None = None  # a built extension zip; None = build it from the source tree
    verbose: bool = False


@dataclass
class FileResult:
    job: FileJob
    summary: str = ""
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # the add-on's, about a good bake


@dataclass
class BatchResult:
    results: list[FileResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.error is not None]


def plan_jobs(inputs: Sequence[str | os.PathLike], output: str | None = None,
              out_dir: str | None = None, in_place: bool = False) -> list[FileJob]:
    """Output paths for every input, checked before any work: a batch that would overwrite an
    input or write two results to one path fails at once, not after an hour of baking."""
    sources = [Path(p).expanduser().absolute() for p in inputs]
    if not sources:
        raise OutputError("no .blend files given")
    if sum(bool(x) for x in (output, out_dir, in_place)) > 1:
        raise OutputError("choose one of -o, --out-dir and --in-place")
    if output and len(sources) > 1:
        raise OutputError(f"-o names one output, but {len(sources)} files were given; "
                          "use --out-dir DIR for a batch")
    jobs = [FileJob(s, _output_for(s, output, out_dir, in_place)) for s in sources]
    _check_outputs(jobs, in_place)
    return jobs


def _size_of(path: Path) -> int:
    """An input's size: about what its baked copy needs, before the keys are added."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _output_for(source: Path, output: str | None, out_dir: str | None, in_place: bool) -> Path:
    if in_place:
        return source
    if output:
        return Path(output).expanduser().absolute()
    if out_dir:
        return Path(out_dir).expanduser().absolute() / source.name
    name = source.name[: -len(".blend")] if source.name.endswith(".blend") else source.stem
    return source.with_name(name + OUTPUT_SUFFIX)


def _check_outputs(jobs: list[FileJob], in_place: bool) -> None:
    """Every output a .blend in a writable folder, none an input of the batch (with
    --in-place, only its own), none written twice."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        out = job.output
        if out.suffix != ".blend":
            raise OutputError(f"output {shown(out)} must end in .blend")
        check_writable(out, _size_of(job.source), ".blend")
        others = [j.source for j in jobs if not (in_place and j is job)]
        refuse_inputs(out, others, "use --in-place to overwrite it" if not in_place
                      else "give each file its own output (--out-dir)")
        if out in seen:
            raise OutputError(f"{seen[out]} and {job.source} would both be written to {out}")
        seen[out] = job.source


# -- one file -------------------------------------------------------------------------------------
def _has_keys(obj) -> bool:
    key = obj.data.shape_keys if obj.type == "MESH" else None
    return key is not None and len(key.key_blocks) > 1


def pick_target(bpy, addon: str, name: str | None):
    """`name`, else the active mesh with shape keys, else the only one (preferring meshes
    whose keys match ARKit channels); made active, as the operator bakes the active object."""
    layer = bpy.context.view_layer
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None:
            raise SceneError(f"no object named '{name}'")
        if obj.type != "MESH" or not _has_keys(obj):
            raise SceneError(f"'{name}' is not a mesh with shape keys")
        if layer.objects.get(name) is None:
            raise SceneError(f"'{name}' is not in the view layer '{layer.name}'")
    else:
        obj = _auto_target(layer, addon)
    layer.objects.active = obj
    return obj


def _auto_target(layer, addon: str):
    active = layer.objects.active
    if active is not None and _has_keys(active):
        return active
    keyed = [o for o in layer.objects if _has_keys(o)]
    if len(keyed) > 1:
        mapping = addon_module(addon, "operators").object_mapping
        keyed = [o for o in keyed if mapping(o)] or keyed
    if len(keyed) == 1:
        return keyed[0]
    if not keyed:
        raise SceneError("no mesh with shape keys in the scene")
    names = ", ".join(sorted(o.name for o in keyed))
    raise SceneError(f"several meshes with shape keys ({names}); choose one with --object")


def add_audio(bpy, scene, addon: str, files: Sequence[Path], frame: int | None,
              log: list[str], transcripts: Sequence[str] = ()) -> list[str]:
    """One sound strip per file with the add-on's Add Audio operator, one after another from
    `frame` (default: the current frame), each with its transcript if given. Returns the new
    strips' names."""
    strips = addon_module(addon, "strips")
    saved_frame = scene.frame_current
    scene.frame_current = saved_frame if frame is None else frame
    added = []
    try:
        for index, path in enumerate(files):
            run_operator(bpy.ops.emotalk.add_audio, log, f"cannot add {path}: ",
                         filepath=str(path))
            strip = strips.selected_sound_strips(scene)[0]  # the operator selects only it
            if index < len(transcripts):
                strips.set_transcript(strip, transcripts[index])
            added.append(strip.name)
            scene.frame_current = strips.right_handle(strip)
    finally:
        scene.frame_current = saved_frame
    return added


def chosen_strips(scene, addon: str, spec: Sequence[str], adding: bool) -> list[str]:
    """Names of the strips `--strips` asks for: each word is 'selected' (the file's selected
    sound strips; the default unless audio is being added), 'all', or a strip's name."""
    collection = addon_module(addon, "strips").strip_collection(scene)
    sounds = [s for s in (collection or []) if s.type == "SOUND"]
    names: list[str] = []
    for word in spec or ([] if adding else [STRIPS_SELECTED]):
        if word == STRIPS_SELECTED:
            names += [s.name for s in sounds if s.select]
        elif word == STRIPS_ALL:
            names += [s.name for s in sounds]
        else:
            names.append(_named_strip(collection, word).name)
    return list(dict.fromkeys(names))


def select_strips(scene, addon: str, names: Sequence[str]) -> None:
    """Select exactly `names` among the sound strips: the operator bakes the selected ones."""
    if not names:
        raise SceneError("no sound strip to bake: none is selected in the file "
                         "(use --strips all, --strips NAME or --audio FILE)")
    collection = addon_module(addon, "strips").strip_collection(scene)
    for strip in collection or []:
        if strip.type == "SOUND":
            strip.select = strip.name in names


def _named_strip(collection, name: str):
    strip = collection.get(name) if collection is not None else None
    if strip is None:
        raise SceneError(f"no strip named '{name}' in the scene's sequencer")
    if strip.type != "SOUND":
        raise SceneError(f"strip '{name}' is not a sound strip")
    return strip


def animate(bpy, addon: str, log: list[str]) -> tuple[str, list[str]]:
    """Run the add-on's Animate operator; returns its summary and its warnings, as the
    operator recorded them (`operators.last_outcome()` of the installed add-on)."""
    operators = addon_module(addon, "operators")
    before = operators.last_outcome()
    try:
        with blender_output(log):
            bpy.ops.emotalk.animate_from_audio()
    except RuntimeError as exc:  # the error the operator reported, or a failed poll (no outcome)
        outcome = operators.last_outcome()
        if outcome is not before and outcome.error:
            raise SceneError(operator_message(outcome.error)) from exc
        # Blender cuts a failed poll's message at 200 characters; the add-on has it whole.
        reason = operators.unavailable_reason(bpy.context)
        raise SceneError(reason or operator_message(exc)) from exc
    outcome = operators.last_outcome()
    if outcome is before:
        raise SceneError("the add-on's Animate operator ended without an outcome")
    if outcome.error is not None:
        raise SceneError(operator_message(outcome.error))
    return outcome.summary, list(outcome.warnings)


def check_outcomes(addon: str) -> None:
    """`animate` reads the operator's outcome: an add-on built before outcomes existed (an old
    --addon zip) is refused before any file."""
    if not hasattr(addon_module(addon, "operators"), "last_outcome"):
        raise SetupError(f"the installed add-on ({addon}) is older than this emotalk bake: its "
                         "Animate operator records no outcome",
                         "pass --addon with a zip built by this version's build_addon.py")


class Interrupted(Exception):
    """Ctrl-C during a file: stop the batch without saving that file."""


def bake_one(bpy, addon: str, job: FileJob, settings: BakeSettings,
             stop: _StopFlag) -> FileResult:
    log: list[str] = []
    try:
        open_blend(bpy, job.source, log)
        scene = bpy.context.scene
        pick_target(bpy, addon, settings.object_name)
        names = chosen_strips(scene, addon, settings.strips, bool(settings.audio))
        names += add_audio(bpy, scene, addon, settings.audio, settings.frame, log,
                           settings.transcripts)
        select_strips(scene, addon, names)
        apply_panel(scene, settings.panel)
        summary, warnings = animate(bpy, addon, log)
        if stop.requested:
            raise Interrupted
        save_atomic(bpy, job.output, log)
    finally:
        if settings.verbose:
            sys.stderr.write("".join(log))
    return FileResult(job, summary, warnings=warnings)


# -- the batch ------------------------------------------------------------------------------------
class _StopFlag:
    """Ctrl-C handling for the batch. The first SIGINT marks the batch to stop and ends the
    backend's running request (by stopping the backend), so the operator returns at once and
    nothing is written for that file; a second SIGINT interrupts at once."""

    def __init__(self, session) -> None:
        self.session = session
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C works as usual
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous or signal.SIG_DFL)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        backend = self.session.backend
        if backend is not None:
            with contextlib.suppress(OSError):
                backend.client.process.terminate()


@contextlib.contextmanager
def backend_environment(bpy, addon: str, settings: BakeSettings) -> Iterator[None]:
    """Point the add-on at the backend: EMOTALK_PYTHON / EMOTALK_MODEL (which win over its
    preferences) and the preferences' device; restored afterwards, and the backend stopped."""
    model = settings.model
    if model != "default":
        model = str(Path(model).expanduser().absolute())
    python = settings.python or os.environ.get(ENV_PYTHON, "").strip() or sys.executable
    saved = {k: os.environ.get(k) for k in (ENV_PYTHON, ENV_MODEL)}
    prefs = bpy.context.preferences.addons[addon].preferences
    saved_device = prefs.device
    os.environ[ENV_PYTHON], os.environ[ENV_MODEL] = python, model
    prefs.device = settings.device
    try:
        yield
    finally:
        addon_module(addon, "backend").SESSION.close()
        with contextlib.suppress(ReferenceError):
            prefs.device = saved_device
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_inputs(settings: BakeSettings) -> None:
    """Failures that would hit every file, found before the first one."""
    from emotalk_core.checkpoint import resolve_model_dir

    resolve_model_dir(settings.model)  # raises ModelError for a missing folder
    for path in settings.audio:
        if probe(path, "audio file", AudioError) is None:
            raise AudioError(f"audio file not found: {shown(path)}")
        require_file(path, "audio file", AudioError, "choose an audio file")
    if settings.frame is not None and not settings.audio:
        raise ControlError("--frame places --audio strips; give --audio FILE too")
    if settings.transcripts and len(settings.transcripts) != len(settings.audio):
        raise ControlError(
            f"{len(settings.transcripts)} transcript(s) for {len(settings.audio)} --audio "
            "file(s): give one --transcript or --transcript-file per --audio, in order "
            "(--transcript '' for a file without one)",
            "strips already in the .blend keep their own transcript (the add-on's Transcript "
            "field, or a .txt file named like the audio beside it)")


# -- the batch: worker processes ------------------------------------------------------------------
# Blender's reader crashes (SIGSEGV) on some damaged .blend files, and no exception handler can
# catch that. So the files are baked in a worker process (`python -m
# blender_addon.headless.bake --worker PLAN FD`) that bakes them in order and reports each one
# on a pipe. When it dies, the file it was on is reported as crashed and a fresh worker takes
# the files after it. The parent owns every temporary folder (the add-on zip, Blender's user
# resources, and Blender's own temporary folder through TMPDIR) and removes them however the
# workers end.
WORKER_COMMAND = (sys.executable, "-m", "blender_addon.headless.bake", "--worker")
_ERROR_TYPES: dict[str, type[EmoTalkError]] = {
    cls.__name__: cls for cls in (SetupError, SceneError, ControlError, AudioError, OutputError)}


def bake_files(jobs: Sequence[FileJob], settings: BakeSettings, controls,
               worker: Sequence[str] = WORKER_COMMAND) -> BatchResult:
    """Bake every job with one progress bar; a failing (or crashing) file is recorded and the
    batch goes on. Raises only for problems that would fail every file (no bpy, no add-on,
    settings the panel cannot hold). `worker`: the command of the worker process."""
    from tqdm import tqdm

    check_inputs(settings)
    if tuple(worker) == WORKER_COMMAND and importlib.util.find_spec("bpy") is None:
        load_bpy()  # raises SetupError with what to install
    batch = BatchResult()
    bar = tqdm(total=len(jobs), desc="baking", unit="file", file=sys.stderr,
               disable=not sys.stderr.isatty())
    with bar, tempfile.TemporaryDirectory(prefix="emotalk-bake-") as folder, \
            _Forwarder() as stop:
        root = Path(folder)
        settings = replace(settings, addon=settings.addon or build_addon_zip(root))
        todo = list(range(len(jobs)))
        while todo and not batch.interrupted:
            run = _WorkerRun(worker, root, jobs, todo, settings, controls)
            todo = run.collect(batch, bar, stop)
    return batch


class _WorkerRun:
    """One worker process over the jobs `todo` (indices into `jobs`)."""

    def __init__(self, worker: Sequence[str], root: Path, jobs: Sequence[FileJob],
                 todo: list[int], settings: BakeSettings, controls) -> None:
        self.jobs, self.todo = jobs, todo
        self.current: int | None = None  # the job the worker started and has not reported
        self.finished: set[int] = set()
        plan = root / f"plan-{todo[0]}.json"
        plan.write_text(json.dumps(_plan(jobs, todo, settings, controls), default=str),
                        encoding="utf-8")
        for name in ("user", "tmp"):
            (root / name).mkdir(exist_ok=True)
        env = dict(os.environ, BLENDER_USER_RESOURCES=str(root / "user"),
                   TMPDIR=str(root / "tmp"))
        read_fd, write_fd = os.pipe()
        try:
            # A session of its own: a terminal's Ctrl-C reaches the parent, which passes it on.
            self.process = subprocess.Popen([*worker, str(plan), str(write_fd)],
                                            pass_fds=(write_fd,), env=env,
                                            start_new_session=True)
        except OSError as exc:
            os.close(read_fd)
            raise SetupError(f"cannot start the bake process: {exc}") from exc
        finally:
            os.close(write_fd)
        self.events = os.fdopen(read_fd, "r", encoding="utf-8")

    def collect(self, batch: BatchResult, bar, stop: _Forwarder) -> list[int]:
        """Record what the worker reports until it exits; returns the jobs left to a new
        worker (those after a file that crashed it)."""
        stop.worker = self.process
        try:
            with self.events:
                for line in self.events:
                    self._on_event(json.loads(line), batch, bar)
            status = self.process.wait()
        finally:
            stop.worker = None
            _stop_process(self.process)
        if stop.count:
            batch.interrupted = True
        return self._after(status, batch, bar)

    def _on_event(self, event: dict[str, Any], batch: BatchResult, bar) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "start":
            self.current = event["index"]
            failed = len(batch.failures)
            name = self.jobs[self.current].source.name
            bar.set_postfix_str(name + (f", {failed} failed" if failed else ""))
        elif kind == "result":
            job = self.jobs[event["index"]]
            result = FileResult(job, event.get("summary", ""), event.get("error"),
                                list(event.get("warnings", [])))
            self.current = None
            self.finished.add(event["index"])
            batch.results.append(result)
            if result.error is None:
                tqdm.write(f"baked {job.source} -> {job.output}: {result.summary}",
                           file=sys.stdout)
            bar.update(1)
        elif kind == "interrupted":
            batch.interrupted = True
        elif kind == "fatal":
            error = _ERROR_TYPES.get(event.get("type", ""), EmoTalkError)
            raise error(event.get("message", "the bake failed"), event.get("detail"))

    def _after(self, status: int, batch: BatchResult, bar) -> list[int]:
        if batch.interrupted:
            return []
        left = [i for i in self.todo if i not in self.finished and i != self.current]
        if self.current is None:
            if left:  # died between files, or before the first: not a file's fault
                raise SetupError(f"the bake process ended ({_status_text(status)}) before "
                                 f"baking {self.jobs[left[0]].source}",
                                 "run again with --verbose to see Blender's output")
            return []
        job = self.jobs[self.current]
        batch.results.append(FileResult(job, error=(
            f"Blender crashed while opening or baking this file ({_status_text(status)}); "
            "the file may be damaged (the other files are baked in a new process)")))
        bar.update(1)
        clean_stale_partials(job.output.parent)  # a save the crash cut short
        return left


def _status_text(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-status).name}"
        return f"signal {-status}"
    return f"exit status {status}"


def _stop_process(process: subprocess.Popen) -> None:
    """A worker still running when the parent stops (an error, SIGTERM): ask, then force."""
    for stop in (None, process.terminate, process.kill):
        if stop is not None:
            with contextlib.suppress(OSError):
                stop()
        try:
            process.wait(10.0)
            return
        except subprocess.TimeoutExpired:
            continue


class _Forwarder:
    """Ctrl-C in the parent. The worker runs in its own session, so the terminal's SIGINT
    reaches only the parent: the first two are passed on (the worker stops its backend and
    saves nothing for the running file, then interrupts at once), a third kills the worker.
    Without a worker it interrupts the parent as usual."""

    def __init__(self) -> None:
        self.worker: subprocess.Popen | None = None
        self.count = 0
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _Forwarder:
        with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C works as usual
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous or signal.SIG_DFL)

    def _handle(self, signum: int, frame: Any) -> None:
        worker = self.worker
        if worker is None:
            raise KeyboardInterrupt
        self.count += 1
        with contextlib.suppress(OSError):
            if self.count < 3:
                worker.send_signal(signal.SIGINT)
            else:
                worker.kill()


def _plan(jobs: Sequence[FileJob], todo: list[int], settings: BakeSettings,
          controls) -> dict[str, Any]:
    """What a worker needs, as JSON: the jobs, the settings, the controls, and the temporary
    folder for Python (TMPDIR points Blender at the parent's folder; the backend's log stays
    where the user's temporary files go)."""
    fields = {k: ([str(p) for p in v] if k == "audio" else str(v) if isinstance(v, Path)
                  else list(v) if isinstance(v, tuple) else v)
              for k, v in asdict(settings).items()}
    return {"jobs": [[str(j.source), str(j.output)] for j in jobs], "todo": todo,
            "settings": fields, "controls": asdict(controls),
            "tempdir": tempfile.gettempdir()}


def _from_plan(plan: dict[str, Any]) -> tuple[list[FileJob], list[int], BakeSettings]:
    jobs = [FileJob(Path(a), Path(b)) for a, b in plan["jobs"]]
    values = dict(plan["settings"])
    values["audio"] = tuple(Path(p) for p in values["audio"])
    values["addon"] = Path(values["addon"]) if values["addon"] else None
    for key in ("strips", "transcripts"):
        values[key] = tuple(values[key])
    return jobs, list(plan["todo"]), BakeSettings(**values)


# -- the worker -----------------------------------------------------------------------------------
class _Reporter:
    """JSON lines to the parent on the pipe it passed (fd 1 carries Blender's own output)."""

    def __init__(self, fd: int) -> None:
        self.stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def send(self, **event: Any) -> None:
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()


def worker_main(argv: Sequence[str]) -> int:
    """`python -m blender_addon.headless.bake --worker PLAN FD`: bake the plan's files in order."""
    plan_path, fd = argv
    report = _Reporter(int(fd))
    signal.signal(signal.SIGTERM, _interrupt)  # the parent stops it: clean up as on Ctrl-C
    try:
        plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
        tempfile.tempdir = plan["tempdir"]
        jobs, todo, settings = _from_plan(plan)
        bpy, addon = setup_worker(settings, plan["controls"])
        bake_in_worker(bpy, addon, jobs, todo, settings, report)
    except EmoTalkError as exc:
        report.send(event="fatal", type=type(exc).__name__, message=exc.message,
                    detail=exc.detail)
        return 1
    except KeyboardInterrupt:
        report.send(event="interrupted")
        return 130
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def setup_worker(settings: BakeSettings, controls: dict[str, Any]) -> tuple[Any, str]:
    """bpy with the add-on enabled and the panel holding the `controls` (their JSON form),
    refused before any file when it cannot."""
    from emotalk_core.controls import Controls

    bpy = load_bpy(Path(os.environ["BLENDER_USER_RESOURCES"]))
    addon = ensure_addon(bpy, settings.addon)
    check_outcomes(addon)
    apply_panel(bpy.context.scene, settings.panel)
    check_panel(bpy.context.scene, addon, Controls.from_dict(controls))
    return bpy, addon


def bake_in_worker(bpy, addon: str, jobs: Sequence[FileJob], todo: Sequence[int],
                   settings: BakeSettings, report: _Reporter) -> None:
    """One backend for the worker's files; each file's start and result reported."""
    session = addon_module(addon, "backend").SESSION
    with backend_environment(bpy, addon, settings), _StopFlag(session) as stop:
        for index in todo:
            report.send(event="start", index=index)
            result = _bake_guarded(bpy, addon, jobs[index], settings, stop)
            if result is None:
                report.send(event="interrupted")
                return
            report.send(event="result", index=index, summary=result.summary,
                        error=result.error, warnings=result.warnings)


def _bake_guarded(bpy, addon: str, job: FileJob, settings: BakeSettings,
                  stop: _StopFlag) -> FileResult | None:
    """One file; its failure becomes the result's error. None: the batch was interrupted."""
    try:
        return bake_one(bpy, addon, job, settings, stop)
    except Interrupted:
        return None
    except EmoTalkError as exc:
        error = exc.message if not exc.detail or exc.detail == exc.message \
            else f"{exc.message} ({exc.detail})"
    except Exception as exc:  # a bug or an unexpected bpy error: report it, go on
        error = f"internal error: {type(exc).__name__}: {exc}"
    if stop.requested:
        return None
    return FileResult(job, error=error)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 4:
        sys.exit("usage: python -m blender_addon.headless.bake --worker PLAN FD "
                 "(started by emotalk bake)")
    sys.exit(worker_main(sys.argv[2:]))
