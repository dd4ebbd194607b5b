"""Operators: Animate from audio (modal in the UI, synchronous in background), Cancel, Add audio
file, per-object channel overrides, and the preferences' Check backend and Set up backend
(bpy glue over blender_addon/setup.py, polled by a Blender timer so the UI stays usable).

The bake collects every strip's curves first and writes them only when all succeeded, so a
failure or a cancel leaves the scene as it was. Errors are `BakeError`s raised where they are
found and reported once, here, with `self.report`.

Each run of Animate from audio also records how it ended as an `Outcome`, so that scripts and
`emotalk bake` read its summary, warnings or error as data, not from the reports Blender prints:

    bpy.ops.emotalk.animate_from_audio()
    from bl_ext.user_default.emotalk import operators  # where the extension is installed
    print(operators.last_outcome())
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from bpy.props import IntProperty, StringProperty

from . import (
    anim,
    backend,
    checks,
    keys,
    line_settings,
    preferences,
    properties,
    setup,
    strips,
    visemes,
)
from .backend import AnimateRequest, BakeCancelled, BakeError, BakeJob, Curves
from .mapping import ChannelMapping, build_mapping
from .timing import AudioWindow, TimingError, audible_window, check_overlaps, scene_fps

TIMER_SECONDS = 0.1


# -- what a bake needs ----------------------------------------------------------------------------
def target_object(context: bpy.types.Context) -> bpy.types.Object | None:
    """The mesh whose mapping the panel shows: the active mesh, else (an armature active) the
    first selected mesh with matching shape keys."""
    targets = target_objects(context)
    return targets[0] if targets else None


def target_objects(context: bpy.types.Context) -> list[bpy.types.Object]:
    """The meshes one bake animates: the active mesh first, then every other selected mesh
    whose shape keys match a channel (a character's head, teeth, tongue and lashes often carry
    the same shape keys). With another kind of object active (the character's armature), the
    selected meshes alone."""
    active = context.active_object
    first = [active] if active is not None and active.type == "MESH" else []
    return first + [o for o in _other_meshes(context, first) if _keyable(o)]


def _other_meshes(context: bpy.types.Context,
                  first: list[bpy.types.Object]) -> list[bpy.types.Object]:
    """Selected meshes besides `first` whose shape keys match a channel, by name."""
    selected = (o for o in getattr(context, "selected_objects", None) or ()
                if o.type == "MESH" and o not in first)
    return sorted((o for o in selected if shape_key_names(o) and object_mapping(o)),
                  key=lambda o: o.name)


def _keyable(obj: bpy.types.Object) -> bool:
    return checks.target_problem(key_owner(obj)) is None


def skipped_targets(context: bpy.types.Context) -> list[str]:
    """Notes for the selected meshes left out because their keys could not be saved."""
    first = target_objects(context)[:1]
    return [f"skipped '{o.name}': {checks.target_problem(key_owner(o))}"
            for o in _other_meshes(context, first) if not _keyable(o)]


def shape_key_names(obj: bpy.types.Object) -> list[str]:
    """The object's shape keys except the reference ("Basis") key."""
    key = obj.data.shape_keys
    if key is None:
        return []
    reference = key.reference_key.name if key.reference_key else None
    return [block.name for block in key.key_blocks if block.name != reference]


def object_mapping(obj: bpy.types.Object) -> ChannelMapping:
    return build_mapping(shape_key_names(obj), properties.overrides_of(obj))


def unavailable_reason(context: bpy.types.Context) -> str | None:
    """Why Animate is disabled, in the words the button shows; None when it can run."""
    run = getattr(context.window_manager, "emotalk_run", None)
    if run is not None and run.running:
        return "A bake is running; cancel it or wait"
    targets = target_objects(context)
    obj = targets[0] if targets else context.active_object
    if obj is None:
        return "Select a mesh with ARKit-style shape keys (no active object)"
    if obj.type != "MESH":
        return (f"The active object '{obj.name}' is not a mesh: select the character's face "
                "mesh (with it, the armature may stay active)")
    if not shape_key_names(obj):
        return f"'{obj.name}' has no shape keys"
    problem = checks.target_problem(key_owner(obj))
    if problem:
        return problem
    if not object_mapping(obj):
        return f"None of the shape keys of '{obj.name}' match an ARKit channel (add overrides)"
    sequencer = strips.sequencer_scene(context)
    if context.scene is None or sequencer is None:
        return checks.NO_STRIPS
    return strips.sound_selection(sequencer).problem() or _rate_problem(sequencer, context.scene)


def key_owner(obj: bpy.types.Object) -> checks.KeyOwner:
    """Where the object's shape keys live, as `checks.target_problem` judges it. Blender marks
    a value it will not let the user edit read-only; linked data and system overrides are
    named apart because their fixes differ."""
    key = obj.data.shape_keys
    library = key.library or obj.data.library
    overrides = [i.override_library for i in (key, obj.data) if i.override_library is not None]
    return checks.KeyOwner(
        obj.name,
        library=(bpy.path.basename(library.filepath) or library.name) if library else None,
        system_override=any(o.is_system_override for o in overrides),
        read_only=(not getattr(key, "is_editable", True)
                   or key.key_blocks[-1].is_property_readonly("value")))


def _rate_problem(sequencer: bpy.types.Scene, scene: bpy.types.Scene) -> str | None:
    try:
        return checks.rate_problem(sequencer.name, _fps(sequencer), scene.name, _fps(scene))
    except TimingError as exc:
        return str(exc)


def _fps(scene: bpy.types.Scene) -> float:
    return scene_fps(scene.render.fps, scene.render.fps_base)


def target_warnings(obj: bpy.types.Object, mapping: ChannelMapping) -> list[str]:
    """What makes a bake onto this object show little: keys under drivers, few mouth shapes."""
    found = (driver_warning(obj, mapping), checks.mouth_warning(mapping.by_key.values()))
    return [warning for warning in found if warning]


def driver_warning(obj: bpy.types.Object, mapping: ChannelMapping) -> str | None:
    key = obj.data.shape_keys
    anim = key.animation_data if key is not None else None
    driven = checks.driven_keys(d.data_path for d in (anim.drivers if anim else ()))
    return checks.driver_warning(mapping.by_key, driven)


@dataclass
class Plan:
    """Everything a bake needs, checked before any backend work starts."""

    obj: bpy.types.Object
    key: bpy.types.Key
    mapping: ChannelMapping
    requests: list[AnimateRequest]
    windows: list[AudioWindow]
    controls: dict
    temp_dir: str
    warnings: list[str]  # found while planning (a transcript file that cannot be read)
    strip_names: list[str] = field(default_factory=list)  # one per request
    # Further selected meshes keyed from the same curves, each with its own mapping.
    others: list[tuple[bpy.types.Object, ChannelMapping]] = field(default_factory=list)
    write_mode: str = "action"  # keys.MODES
    tolerance: float = 0.0  # key reduction; 0 keys every frame


def make_plan(context: bpy.types.Context) -> Plan:
    """The strips come from the scene the sequencer shows (`strips.sequencer_scene`; usually
    the scene itself). Their keys go on that scene's frame numbers, timed at its frame rate,
    which `unavailable_reason` has checked equals the animated scene's."""
    reason = unavailable_reason(context)
    if reason:
        raise BakeError(reason)
    obj, scene, sequencer = target_object(context), context.scene, strips.sequencer_scene(context)
    rate = _fps(sequencer)
    settings = scene.emotalk
    if settings.emotion_source == "reference":
        ref = bpy.path.abspath(settings.reference) if settings.reference else ""
        if not ref or not os.path.isfile(ref):
            raise BakeError(f"reference clip not found: {ref or '(none chosen)'}")
    selection = strips.sound_selection(sequencer)
    note = checks.other_scene_note(sequencer.name, scene.name)
    warnings = selection.notes() + ([note] if note else [])
    temp_dir = strips.make_temp_dir()
    try:
        requests, windows, names = _strip_requests(selection.picks, rate, temp_dir, warnings,
                                                   settings)
    except BaseException:
        strips.remove_temp_dir(temp_dir)
        raise
    mapping = object_mapping(obj)
    warnings += target_warnings(obj, mapping)
    others = [(o, object_mapping(o)) for o in target_objects(context)[1:]]
    warnings += skipped_targets(context)
    for other, other_mapping in others:  # a tongue with two mouth shapes is no reason to warn
        found = driver_warning(other, other_mapping)
        warnings += [f"'{other.name}': {found}"] if found else []
    return Plan(obj, obj.data.shape_keys, mapping, requests, windows,
                properties.controls_from(settings), temp_dir, warnings, strip_names=names,
                others=others, write_mode=settings.write_mode,
                tolerance=settings.key_tolerance if settings.reduce_keys else 0.0)



def _strip_requests(picks: Sequence[checks.SoundPick], rate: float, temp_dir: str,
                    warnings: list[str], settings: properties.EMOTALK_PG_settings):
    """One request per strip; a strip with its own settings carries its controls, the others
    take the job's (the panel's)."""
    requests, windows, names = [], [], []
    for pick in picks:
        strip = pick.ref
        names.append(strip.name)
        strips.check_speed(strip)
        path = strips.audio_file(strip, temp_dir)
        try:
            timing = checks.clip_timing(strips.strip_timing(strip, path), pick)
            window = audible_window(timing, rate)
        except TimingError as exc:
            raise BakeError(str(exc)) from exc
        windows.append(window)
        label = f"strip '{strip.name}'"
        controls = _line_controls(strip, settings, label)
        transcript = strips.strip_transcript(strip)
        warnings += [f"{label}: {w}" for w in transcript.warnings]
        requests.append(AnimateRequest(label, path, window.start, window.end,
                                       window.frame_count, rate, transcript.text, controls))
    try:
        check_overlaps(list(zip(names, windows, strict=True)))
    except TimingError as exc:
        raise BakeError(str(exc)) from exc
    return requests, windows, names


def _line_controls(strip, settings: properties.EMOTALK_PG_settings, label: str) -> dict | None:
    """The strip's own emotion and style over the panel's post-processing; None when the strip
    follows the panel."""
    line = properties.own_line(strip)
    if line is None:
        return None
    if line.emotion_source == "reference":
        ref = bpy.path.abspath(line.reference) if line.reference else ""
        if not ref or not os.path.isfile(ref):
            raise BakeError(f"{label}: reference clip not found: {ref or '(none chosen)'} "
                            "(the line's own settings, in the Audio panel)")
    try:
        return properties.controls_from(settings, line)
    except BakeError as exc:
        raise BakeError(f"{label}: {exc}") from exc


def start_job(plan: Plan) -> BakeJob:
    session_backend = backend.SESSION.ensure(preferences.settings())
    return BakeJob(session_backend, plan.requests, plan.controls)


# -- how a run ended ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How one run of Animate from audio ended: the texts it reported, without the "EmoTalk: "
    prefix that tells them apart in Blender's status bar and log."""

    summary: str = ""  # what was animated; "" when nothing was written
    warnings: tuple[str, ...] = ()  # about a good bake (a transcript that was not used, ...)
    error: str | None = None  # why nothing was written: a failure or a cancel


_last_outcome: Outcome | None = None


def last_outcome() -> Outcome | None:
    """The outcome of the latest Animate run in this Blender session; None before the first.
    Each run records a new object, so `is` tells whether a run recorded one."""
    return _last_outcome


def _record(outcome: Outcome) -> Outcome:
    global _last_outcome
    _last_outcome = outcome
    return outcome


def report_failure(op: bpy.types.Operator, level: str, exc: BakeError) -> None:
    """Report why nothing was written, and record it."""
    _record(Outcome(error=str(exc)))
    op.report({level}, str(exc))


def write_results(plan: Plan, results: list[Curves]) -> str:
    """Write every strip's keys (the only write of a bake); returns the summary to report."""
    targets = [(plan.obj, plan.mapping), *plan.others]
    shape_keys = [_shape_keys_of(obj) for obj, _ in targets]  # all checked before any write
    blocks = [(w.first_frame, c.values) for w, c in zip(plan.windows, results, strict=True)]
    for key, (_, mapping) in zip(shape_keys, targets, strict=True):
        if mapping.viseme_count:  # the viseme channels follow the 52 in each block
            _write_lines(key, plan, [(f, visemes.extend(v)) for f, v in blocks], mapping)
        else:
            _write_lines(key, plan, blocks, mapping)
    spans = ", ".join(f"{w.first_frame}-{w.last_frame}" for w in plan.windows)
    where = f" as NLA strips on track '{keys.NLA_TRACK}'" if plan.write_mode == "nla" else ""
    count = plan.mapping.viseme_count
    lips = f", {count} visemes" if count else ""
    also = "".join(f" and {len(m.by_key)} of '{o.name}'" for o, m in plan.others)
    return (f"animated {len(plan.mapping.by_key)} shape keys of '{plan.obj.name}' "
            f"({plan.mapping.matched_count}/52 channels{lips}){also} on frames {spans}{where}"
            f"{_applied(plan, results)}")


def _shape_keys_of(obj: bpy.types.Object) -> bpy.types.Key:
    try:
        key, name = obj.data.shape_keys, obj.name
    except ReferenceError as exc:
        raise BakeError("a target object was deleted during the bake; nothing was written") \
            from exc
    if key is None:
        raise BakeError(f"'{name}' lost its shape keys during the bake")
    return key


def _write_lines(key: bpy.types.Key, plan: Plan, blocks: list[tuple[int, np.ndarray]],
                 mapping: ChannelMapping) -> None:
    """Replace each strip's previous bake (found in the records kept on `key`, in either mode)
    by this one, and record what was written."""
    records = keys.read_records(key.get(keys.RECORD_PROPERTY))
    old_keys = keys.spans_to_clear(records, plan.strip_names, "action")
    by_key = mapping.by_key
    if plan.write_mode == "nla":
        if old_keys:
            anim.write_shape_key_curves(key, {}, [], old_keys)
        for name, (first, values) in zip(plan.strip_names, blocks, strict=True):
            anim.write_line_action(key, by_key, name, first, values, plan.tolerance)
    else:
        for name in plan.strip_names:
            anim.remove_line_action(key, name)
        anim.write_shape_key_curves(key, by_key, blocks, old_keys, plan.tolerance)
    for name, (first, values) in zip(plan.strip_names, blocks, strict=True):
        records[name] = keys.BakeRecord(plan.write_mode, first, first + values.shape[0],
                                        tuple(sorted(by_key)), keys.nla_strip_name(name))
    key[keys.RECORD_PROPERTY] = keys.write_records(records)


def report_success(op: bpy.types.Operator, plan: Plan, results: list[Curves]) -> None:
    """The summary, then each warning: the last report is the one the status bar shows, and a
    warning is what the animator must not miss."""
    outcome = _record(Outcome(write_results(plan, results),
                              tuple(plan.warnings + backend.bake_warnings(results))))
    op.report({"INFO"}, f"EmoTalk: {outcome.summary}")
    for warning in outcome.warnings:
        op.report({"WARNING"}, f"EmoTalk: {warning}")


def _applied(plan: Plan, results: list[Curves]) -> str:
    """What each line was animated with (its own settings or the panel's), for the summary."""
    applied = [line_settings.Applied(name, plan.controls if c.request.controls is None
                                     else c.request.controls,
                                     c.request.controls is not None, c.emotion)
               for name, c in zip(plan.strip_names, results, strict=True)]
    return f"; {line_settings.summary(applied)}" if applied else ""


# -- the bake operator ----------------------------------------------------------------------------
class EMOTALK_OT_animate_from_audio(bpy.types.Operator):
    """Animate the active mesh's ARKit shape keys from the selected sound strips"""

    bl_idname = "emotalk.animate_from_audio"
    bl_label = "Animate from Audio"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        reason = unavailable_reason(context)
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        """Synchronous: background Blender, scripts, and `bpy.ops...()` without invoke."""
        plan = None
        try:
            plan = make_plan(context)
            results = start_job(plan).run()
            report_success(self, plan, results)
            return {"FINISHED"}
        except BakeError as exc:
            report_failure(self, "ERROR", exc)
            return {"CANCELLED"}
        finally:
            strips.remove_temp_dir(plan.temp_dir if plan else None)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._plan = make_plan(context)
            self._job = start_job(self._plan)
        except BakeError as exc:
            strips.remove_temp_dir(getattr(getattr(self, "_plan", None), "temp_dir", None))
            report_failure(self, "ERROR", exc)
            return {"CANCELLED"}
        run = context.window_manager.emotalk_run
        run.running, run.cancel_requested, run.progress, run.message = True, False, 0.0, ""
        self._timer = context.window_manager.event_timer_add(TIMER_SECONDS, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        run = context.window_manager.emotalk_run
        if event.type == "ESC" or run.cancel_requested:
            self._job.cancel()
            return self._end(context)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        status = self._job.poll()
        run.progress, run.message = status.fraction, status.message
        _redraw(context)
        return self._end(context) if status.finished else {"RUNNING_MODAL"}

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal (file load, quit): stop the job, write nothing."""
        self._job.cancel()
        self._cleanup(context)
        _record(Outcome(error="Blender ended the bake (a file was loaded, or it quit); "
                              "nothing was written"))

    def _end(self, context: bpy.types.Context) -> set[str]:
        """The one place a modal bake ends: clean up, then write or report."""
        self._cleanup(context)
        job = self._job
        try:
            if job.error is not None:
                raise job.error
            report_success(self, self._plan, job.results)
            return {"FINISHED"}
        except BakeCancelled as exc:
            report_failure(self, "WARNING", exc)
        except BakeError as exc:
            report_failure(self, "ERROR", exc)
        return {"CANCELLED"}

    def _cleanup(self, context: bpy.types.Context) -> None:
        if getattr(self, "_timer", None) is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        strips.remove_temp_dir(self._plan.temp_dir)
        run = context.window_manager.emotalk_run
        run.running, run.cancel_requested, run.progress, run.message = False, False, 0.0, ""
        _redraw(context)


def _redraw(context: bpy.types.Context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


class EMOTALK_OT_cancel(bpy.types.Operator):
    """Stop the running bake; nothing is written"""

    bl_idname = "emotalk.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.window_manager.emotalk_run.running

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.emotalk_run.cancel_requested = True
        return {"FINISHED"}


# -- audio ----------------------------------------------------------------------------------------
class EMOTALK_OT_add_audio(bpy.types.Operator):
    """Add an audio file as a sound strip at the current frame and select it"""

    bl_idname = "emotalk.add_audio"
    bl_label = "Add Audio File..."
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default=strips.sound_file_glob(), options={"HIDDEN"})

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        path = bpy.path.abspath(self.filepath)
        if not os.path.isfile(path):
            self.report({"ERROR"}, f"audio file not found: {path or '(none chosen)'}")
            return {"CANCELLED"}
        try:
            scene = strips.sequencer_scene(context)  # where the user sees the new strip
            strip = strips.add_sound_strip(scene, path, scene.frame_current)
        except BakeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"added sound strip '{strip.name}' at frame "
                              f"{context.scene.frame_current}")
        return {"FINISHED"}


# -- per-line settings ----------------------------------------------------------------------------
def active_line(context: bpy.types.Context) -> tuple[object, properties.EMOTALK_PG_line | None]:
    """The sequencer's active sound strip and its own settings (None when it follows the
    panel)."""
    strip = strips.active_sound_strip(strips.sequencer_scene(context))
    return strip, properties.own_line(strip)


class EMOTALK_OT_line_from_panel(bpy.types.Operator):
    """Set the active sound strip's own emotion, intensity and style to the panel's"""

    bl_idname = "emotalk.line_from_panel"
    bl_label = "Copy from Panel"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and active_line(context)[1] is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        strip, line = active_line(context)
        if line is None:
            return {"CANCELLED"}
        properties.copy_line(context.scene.emotalk, line)
        self.report({"INFO"}, f"'{strip.name}' now has the panel's emotion and style")
        return {"FINISHED"}


# -- overrides ------------------------------------------------------------------------------------
class EMOTALK_OT_override_add(bpy.types.Operator):
    """Override the channel of the active shape key (or of a named one)"""

    bl_idname = "emotalk.override_add"
    bl_label = "Add Override"
    bl_options = {"REGISTER", "UNDO"}

    shape_key: StringProperty(name="Shape Key", default="")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = target_object(context)
        return obj is not None and bool(shape_key_names(obj))

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = target_object(context)
        name = self.shape_key or (obj.active_shape_key.name if obj.active_shape_key else "")
        item = obj.emotalk_overrides.add()
        item.shape_key = name
        obj.emotalk_override_index = len(obj.emotalk_overrides) - 1
        return {"FINISHED"}


class EMOTALK_OT_override_remove(bpy.types.Operator):
    """Remove a channel override"""

    bl_idname = "emotalk.override_remove"
    bl_label = "Remove Override"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = target_object(context)
        if obj is None or not 0 <= self.index < len(obj.emotalk_overrides):
            return {"CANCELLED"}
        obj.emotalk_overrides.remove(self.index)
        return {"FINISHED"}


# -- preferences ----------------------------------------------------------------------------------
class EMOTALK_OT_check_backend(bpy.types.Operator):
    """Start the backend with these settings and show the server and model it reports"""

    bl_idname = "emotalk.check_backend"
    bl_label = "Check Backend"

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = preferences.settings()
        try:
            info = backend.SESSION.ensure(settings).initialize(timeout=300)
        except BakeError as exc:
            preferences.show_check([f"Failed: {exc}"])
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        lines = describe_backend(info, settings, preferences.discovered().source)
        preferences.show_check(lines)
        self.report({"INFO"}, "; ".join(lines[:2]))
        return {"FINISHED"}


def describe_backend(info: dict, settings: backend.BackendSettings, source: str = "") -> list[str]:
    """What a user quotes when asking for help: versions, the device the model runs on, and
    which Python (and how it was found)."""
    server, model = info.get("server") or {}, info.get("model") or {}
    presets = ", ".join(model.get("presets") or []) or "none"
    torch = server.get("torch") or "? (a backend before 0.1.0 does not say)"
    found = f" ({source})" if source else ""
    return [f"Server: {server.get('name', '?')} {server.get('version', '')}".rstrip(),
            f"Model: {model.get('name', '?')} ({model.get('kind', '?')}), "
            f"{model.get('persons', '?')} styles, {model.get('fps', '?')} fps",
            f"Torch: {torch}  Device: {model.get('device', '?')}",
            f"Word recognition: {recognition_line(server)}",
            f"Emotion presets: {presets}",
            f"Python: {settings.python}{found}"]


def recognition_line(server: dict) -> str:
    """Check Backend's word-recognition line: where its model is, or why it cannot run and
    what fixes it."""
    status = server.get("recognition")
    if status is None:
        return "? (a backend older than the add-on: Repair Backend updates it)"
    if status.startswith("unavailable"):
        return f"{status}; Repair Backend installs it (strips without a transcript use the " \
               "phone loop until then)"
    return status


SETUP_TICK = 0.25  # seconds between polls of a running Set up backend


def setup_plan(prefs: preferences.EMOTALK_AP_preferences | None) -> setup.SetupPlan:
    """The set-up the preferences ask for (raises SetupError when it cannot start)."""
    folder = preferences.backend_folder(create=True)
    if folder is None:
        raise setup.SetupError("Set up backend works when EmoTalk is installed as an extension "
                               "(Edit > Preferences > Get Extensions > Install from Disk)")
    torch = prefs.torch_build if prefs is not None and prefs.torch_build else "cpu"
    wheels = bpy.path.abspath(prefs.wheels_folder) if prefs and prefs.wheels_folder else ""
    if wheels and not os.path.isdir(wheels):
        raise setup.SetupError(f"the Wheels Folder {wheels} does not exist: choose the folder "
                               f"with the downloaded wheels, or clear it to download them")
    version = backend.addon_version()
    return setup.SetupPlan(folder=folder, base_python=preferences.base_python(prefs),
                           torch=torch, wheel=setup.find_wheel(Path(__file__).parent, version),
                           version=version, wheels_folder=wheels)


def begin_setup(prefs: preferences.EMOTALK_AP_preferences | None) -> setup.SetupJob:
    """Start Set up backend; the running backend stops, as it may run from the environment
    being repaired."""
    backend.SESSION.close()
    job = setup.SetupJob(setup_plan(prefs))
    preferences.SETUP["job"], preferences.SETUP["lines"] = job, []
    return job


def finish_setup(job: setup.SetupJob) -> list[str]:
    """The lines the preferences show once the set-up ended, and the backend pointed at the new
    environment: a Backend Python preference would hide it, so it is cleared."""
    if job.error is not None:
        lines = [f"Failed: {job.error}"]
    else:
        lines = [job.summary]
        prefs = preferences.get()
        if prefs is not None and prefs.python_path:
            lines.append(f"Backend Python was {prefs.python_path}; cleared, so the new "
                         f"environment is used")
            prefs.python_path = ""
        if os.environ.get(backend.ENV_PYTHON, "").strip():
            lines.append(f"{backend.ENV_PYTHON} is set and overrides it: unset it to use the "
                         f"new environment")
        backend.SESSION.close()
    preferences.SETUP["lines"] = lines
    return lines


def setup_tick() -> float | None:
    """Blender timer: poll the set-up, redraw the preferences; None ends the timer."""
    job = preferences.SETUP["job"]
    if job is None:
        return None
    job.poll()
    _redraw_preferences()
    if not job.finished:
        return SETUP_TICK
    finish_setup(job)
    preferences.SETUP["job"] = None
    _redraw_preferences()
    return None


def _redraw_preferences() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _setup_running() -> bool:
    job = preferences.SETUP["job"]
    return job is not None and not job.finished


class EMOTALK_OT_setup_backend(bpy.types.Operator):
    """Make (or repair) a private Python environment with torch and EmoTalk in the extension's
    user folder, and use it as the backend"""

    bl_idname = "emotalk.setup_backend"
    bl_label = "Set up Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _setup_running():
            cls.poll_message_set("Set up backend is running")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            job = begin_setup(preferences.get())
        except setup.SetupError as exc:
            preferences.SETUP["lines"] = [f"Failed: {exc}"]
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not bpy.app.background:  # the UI stays responsive; the timer polls
            bpy.app.timers.register(setup_tick, first_interval=SETUP_TICK)
            return {"FINISHED"}
        job.run()  # background Blender and scripts: wait here
        preferences.SETUP["job"] = None
        lines = finish_setup(job)
        if job.error is not None:
            self.report({"ERROR"}, job.error)
            return {"CANCELLED"}
        self.report({"INFO"}, lines[0])
        return {"FINISHED"}


class EMOTALK_OT_cancel_setup(bpy.types.Operator):
    """Stop Set up backend; nothing is put in use"""

    bl_idname = "emotalk.cancel_setup"
    bl_label = "Cancel Set up"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _setup_running()

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = preferences.SETUP["job"]
        job.cancel()
        self.report({"WARNING"}, job.error)
        return {"FINISHED"}


class EMOTALK_OT_remove_backend(bpy.types.Operator):
    """Delete the private environment Set up backend made (and any unfinished one)"""

    bl_idname = "emotalk.remove_backend"
    bl_label = "Remove Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _setup_running():
            cls.poll_message_set("Set up backend is running: cancel it first")
            return False
        return preferences.backend_folder() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        backend.SESSION.close()  # it may run from the environment (Windows locks its files)
        folder = preferences.backend_folder()
        try:
            removed = setup.remove(folder)
        except OSError as exc:
            message = (f"cannot remove {folder}: {exc.strerror or exc}. Close programs using "
                       f"it, or delete the folder by hand")
            preferences.SETUP["lines"] = [f"Failed: {message}"]
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        message = (f"removed {', '.join(str(p) for p in removed)}" if removed
                   else "there was no environment to remove")
        preferences.SETUP["lines"] = [message]
        self.report({"INFO"}, message)
        return {"FINISHED"}


CLASSES = (
    EMOTALK_OT_animate_from_audio, EMOTALK_OT_cancel, EMOTALK_OT_add_audio,
    EMOTALK_OT_override_add, EMOTALK_OT_override_remove, EMOTALK_OT_check_backend,
    EMOTALK_OT_line_from_panel, EMOTALK_OT_setup_backend, EMOTALK_OT_cancel_setup,
    EMOTALK_OT_remove_backend,
)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
