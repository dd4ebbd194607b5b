"""The add-on inside Blender (PyPI `bpy`): install the built zip, bake two trimmed strips onto a
mesh whose shape keys use Apple's raw names (`eyeBlink_L`), compare with `Predictor`, and check
the failure cases. Background bpy runs the operator synchronously, the same code as `blender -b`.

bpy loads once per process, so each tests/test_addon_bpy*.py runs in a pytest process of its own
(the Makefile). Selected with `-m bpy`; skipped with the reason when bpy is not installed. Runs
in a Python without torch too (the newest bpy's): the backend and the Predictor reference then
run in the interpreter tests/backend_python.py names.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.arkit import CHANNELS
from emotalk_core.controls import Controls
from tests.backend_python import backend_python, predict
from tests.conftest import speechlike

pytestmark = pytest.mark.bpy

ADDON = "bl_ext.user_default.emotalk"
FPS = 24
OP_ERROR = RuntimeError  # bpy.ops raises it for an ERROR report or a failed poll
NO_AUDIO: list[str] = []  # why this bpy cannot make sound strips, if it cannot


def raw_name(channel: str) -> str:
    """Apple's raw value: eyeBlinkLeft -> eyeBlink_L."""
    return re.sub(r"(Left|Right)$", lambda m: "_" + m.group(1)[0], channel)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpy(tmp_path_factory):
    """bpy with the built extension installed and enabled (once per process)."""
    os.environ["BLENDER_USER_RESOURCES"] = str(tmp_path_factory.mktemp("blender-user"))
    module = pytest.importorskip("bpy", reason="bpy is not installed (pip install bpy==5.0.1)")
    import build_addon

    zip_path = build_addon.build(tmp_path_factory.mktemp("dist"))
    module.ops.wm.read_factory_settings(use_empty=True)
    result = module.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"} and ADDON in module.context.preferences.addons
    yield module
    module.ops.preferences.addon_disable(module=ADDON)  # stops the backend


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bpy-audio") / "line.wav"
    sf.write(path, speechlike(2.0, seed=7), 16000)
    return path


@pytest.fixture
def env(monkeypatch, tiny_model_dir):
    """The backend runs in the interpreter with emotalk_core and torch, which is bpy's own only
    where bpy was installed beside torch (not on the newest line's Python 3.13)."""
    monkeypatch.setenv("EMOTALK_PYTHON", backend_python())
    monkeypatch.setenv("EMOTALK_MODEL", str(tiny_model_dir))


@pytest.fixture
def scene(bpy, env, audio, tmp_path):
    """An empty file (the add-on and its backend stay loaded) with the test rig and strips."""
    bpy.ops.wm.read_homefile(use_empty=True)
    clip = tmp_path / "line.wav"
    shutil.copy(audio, clip)
    return build_scene(bpy, clip)


def build_scene(bpy, clip: Path):
    sc = bpy.context.scene
    sc.render.fps, sc.render.fps_base = FPS, 1.0
    mesh = bpy.data.meshes.new("Face")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("Face", mesh)
    sc.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.shape_key_add(name="Basis")
    for channel in CHANNELS:
        obj.shape_key_add(name=raw_name(channel))
    obj.shape_key_add(name="Extra")
    blocks = mesh.shape_keys.key_blocks
    for frame, value in ((5, 0.9), (20, 0.7)):  # 5 is outside the strips, 20 inside
        blocks["jawOpen"].value = value
        blocks["jawOpen"].keyframe_insert("value", frame=frame)
    blocks["Extra"].value = 0.3
    blocks["Extra"].keyframe_insert("value", frame=20)
    editor = sc.sequence_editor_create()
    strips = strips_of(editor)
    try:
        a = strips.new_sound("A", str(clip), 1, 1)  # 48 frames: 1..48
    except RuntimeError as exc:  # PyPI's bpy 4.2 has no audio library
        NO_AUDIO.append(str(exc))
        return sc
    b = strips.new_sound("B", str(clip), 2, 60)  # 60..107
    set_handles(a, 7, 40)  # trim 6 frames at the start, 8 at the end
    set_handles(b, 60, 90)
    a.select = b.select = True
    return sc


@pytest.fixture
def strips(scene):
    """The two trimmed strips; skipped where this bpy build cannot make sound strips."""
    if NO_AUDIO:
        pytest.skip(f"this bpy build cannot create sound strips: {NO_AUDIO[-1]}")
    return strips_of(scene.sequence_editor)


def strips_of(editor):
    """`strips` from 4.4, `sequences` before (gone in 5.0)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def set_handles(strip, left: int, right: int) -> None:
    for name, value in ((("left_handle", "frame_final_start"), left),
                        (("right_handle", "frame_final_end"), right)):
        setattr(strip, next(n for n in name if hasattr(strip, n)), value)


def find_fcurve(bpy, name: str):
    """The shape key's F-curve, whichever API holds it (channelbag or legacy action)."""
    key = bpy.data.objects["Face"].data.shape_keys
    anim = key.animation_data
    if anim is None or anim.action is None:
        return None
    path = f'key_blocks["{name}"].value'
    if hasattr(anim, "action_slot"):
        from bpy_extras.anim_utils import action_get_channelbag_for_slot

        bag = action_get_channelbag_for_slot(anim.action, anim.action_slot)
        return bag.fcurves.find(path) if bag is not None else None
    return anim.action.fcurves.find(path)


def fcurve_keys(bpy, name: str) -> dict[float, float]:
    """Frame -> value of the shape key's curve."""
    curve = find_fcurve(bpy, name)
    if curve is None:
        return {}
    return {round(k.co[0], 3): k.co[1] for k in curve.keyframe_points}


def all_keys(bpy) -> dict[str, dict[float, float]]:
    return {n: fcurve_keys(bpy, n) for n in [raw_name(c) for c in CHANNELS] + ["Extra"]}


def animate(bpy):
    return bpy.ops.emotalk.animate_from_audio()


# -- the bake -------------------------------------------------------------------------------------
def test_bake_matches_predictor_and_keeps_foreign_keys(bpy, scene, strips, tiny_model_dir):
    assert animate(bpy) == {"FINISHED"}
    clip = bpy.data.sounds[0].filepath
    windows = [(7, 40, 6 / FPS, 39 / FPS), (60, 90, 0.0, 30 / FPS)]
    for left, right, start, end in windows:
        # Predictor with the default controls, in the backend's interpreter where bpy's has no torch
        want = predict(tiny_model_dir, clip, start=start, end=end, fps=FPS)
        n = right - left
        assert want.shape[0] == n
        for index in (CHANNELS.index("jawOpen"), CHANNELS.index("eyeBlinkLeft"),
                      CHANNELS.index("mouthSmileRight")):
            keys = fcurve_keys(bpy, raw_name(CHANNELS[index]))
            got = np.array([keys[float(f)] for f in range(left, right)])
            np.testing.assert_allclose(got, want[:, index], atol=1e-5)
    jaw = fcurve_keys(bpy, "jawOpen")
    assert jaw[5.0] == pytest.approx(0.9)  # outside the strips: kept
    assert sorted(jaw) == [5.0] + [float(f) for f in (*range(7, 40), *range(60, 90))]
    assert fcurve_keys(bpy, "Extra") == {20.0: pytest.approx(0.3)}  # unmapped key: untouched


def test_check_backend_shows_the_model(bpy, scene):
    assert bpy.ops.emotalk.check_backend() == {"FINISHED"}
    lines = sys.modules[f"{ADDON}.preferences"]._last_check
    assert any("tiny-compact" in line for line in lines), lines
    assert any(backend_python() in line for line in lines), lines


def test_second_bake_replaces_only_inside_the_strips(bpy, scene, strips):
    animate(bpy)
    first = all_keys(bpy)
    bpy.context.scene.emotalk.level = 0.0  # another intensity: other values, same frames
    bpy.context.scene.emotalk.blinks = False
    animate(bpy)
    second = all_keys(bpy)
    assert {n: sorted(k) for n, k in first.items()} == {n: sorted(k) for n, k in second.items()}
    assert first["eyeBlink_L"] != second["eyeBlink_L"]  # no blinks now
    assert second["jawOpen"][5.0] == pytest.approx(0.9)


def test_one_undo_step_restores_the_keys(bpy, scene, strips):
    before = all_keys(bpy)
    window = bpy.context.window_manager.windows[0]
    with bpy.context.temp_override(window=window):
        bpy.ops.ed.undo_push(message="before EmoTalk")
        # undo=True: record the operator's undo step as a button press does (scripts skip it)
        assert bpy.ops.emotalk.animate_from_audio("EXEC_DEFAULT", True) == {"FINISHED"}
        assert all_keys(bpy) != before
        bpy.ops.ed.undo()  # one step back
    assert all_keys(bpy) == before


def test_packed_sound_is_baked_from_a_temporary_copy(bpy, scene, strips, tmp_path):
    for sound in bpy.data.sounds:  # one per strip, same file
        sound.pack()
    Path(bpy.path.abspath(bpy.data.sounds[0].filepath)).unlink()  # only packed copies are left
    leftovers = set(Path(tempfile.gettempdir()).glob("emotalk-*"))
    assert animate(bpy) == {"FINISHED"}
    assert len(fcurve_keys(bpy, "jawOpen")) == 1 + 33 + 30
    assert set(Path(tempfile.gettempdir()).glob("emotalk-*")) == leftovers  # cleaned up


def test_bake_creates_the_action_when_there_is_none(bpy, scene, strips):
    key = bpy.data.objects["Face"].data.shape_keys
    key.animation_data_clear()
    assert animate(bpy) == {"FINISHED"}
    assert key.animation_data.action is not None
    assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == [float(f) for f in (*range(7, 40),
                                                                         *range(60, 90))]
    assert fcurve_keys(bpy, "Extra") == {}


def test_writer_replaces_only_inside_the_spans_and_keeps_key_attributes(bpy, scene):
    """anim.py alone (no audio needed): runs on every bpy, the legacy action API included."""
    writer = sys.modules[f"{ADDON}.anim"]
    find_fcurve(bpy, "jawOpen").keyframe_points[0].interpolation = "CONSTANT"  # frame 5
    values = np.linspace(0.0, 1.0, 10 * 52, dtype=np.float32).reshape(10, 52)
    key = bpy.data.objects["Face"].data.shape_keys
    blocks = [(15, values[:6]), (30, values[6:])]  # frames 15-20 and 30-33
    by_key = {"jawOpen": CHANNELS.index("jawOpen"), "eyeBlink_L": CHANNELS.index("eyeBlinkLeft")}
    assert writer.write_shape_key_curves(key, by_key, blocks) == 20
    jaw = find_fcurve(bpy, "jawOpen")
    frames = [5.0, *map(float, range(15, 21)), *map(float, range(30, 34))]
    assert [k.co[0] for k in jaw.keyframe_points] == frames  # the key at 20 was replaced
    np.testing.assert_allclose([k.co[1] for k in jaw.keyframe_points][1:],
                               values[:, CHANNELS.index("jawOpen")], rtol=1e-6)
    assert jaw.keyframe_points[0].co[1] == pytest.approx(0.9)
    assert [k.interpolation for k in jaw.keyframe_points] == ["CONSTANT"] + ["LINEAR"] * 10
    assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == frames[1:]
    assert fcurve_keys(bpy, "Extra") == {20.0: pytest.approx(0.3)}


def test_defaults_equal_emotalk_predict(bpy, scene):
    settings = bpy.context.scene.emotalk
    addon = sys.modules[f"{ADDON}.properties"]
    assert Controls.from_dict(addon.controls_from(settings)) == Controls()
    assert settings.recognize_words  # on, as in emotalk predict
    settings.recognize_words = False  # the Audio panel's checkbox goes out with the controls
    assert Controls.from_dict(addon.controls_from(settings)) == Controls(recognize_words=False)
    settings.recognize_words = True


def test_operator_is_one_undo_step_and_panels_exist(bpy, scene):
    op = bpy.types.EMOTALK_OT_animate_from_audio
    assert {"REGISTER", "UNDO"} <= set(op.bl_options)
    for panel in ("EMOTALK_PT_main", "EMOTALK_PT_target", "EMOTALK_PT_audio"):
        assert getattr(bpy.types, panel).bl_category == "EmoTalk"


class FakeLayout:
    """Records what a panel draws and checks every property and operator it names exists
    (panels cannot draw without a window; this catches typos and API drift)."""

    def __init__(self, bpy, lines: list[str]):
        self.bpy, self.lines, self.enabled, self.scale_y = bpy, lines, True, 1.0

    def _sub(self, *args, **kwargs) -> FakeLayout:
        return FakeLayout(self.bpy, self.lines)

    row = column = box = _sub

    def label(self, text: str = "", **kwargs) -> None:
        self.lines.append(text)

    def prop(self, data, name: str, **kwargs) -> None:
        assert name in data.bl_rna.properties, name

    def prop_search(self, data, name: str, search_data, search_name: str, **kwargs) -> None:
        assert name in data.bl_rna.properties and search_name in search_data.bl_rna.properties

    def progress(self, **kwargs) -> None:
        self.lines.append(kwargs.get("text", ""))

    def operator(self, idname: str, **kwargs):
        module, name = idname.split(".")
        assert getattr(getattr(self.bpy.ops, module), name).poll is not None
        return type("Props", (), {})()


def draw_panels(bpy) -> list[str]:
    lines: list[str] = []
    names = ("main", "target", "audio", "emotion", "style", "postprocess")
    for name in names:
        panel = getattr(bpy.types, f"EMOTALK_PT_{name}")
        panel.draw(type("P", (), {"layout": FakeLayout(bpy, lines)})(), bpy.context)
    return lines


def test_panels_draw_every_state(bpy, scene, strips):
    lines = draw_panels(bpy)
    assert "52 of 52 channels matched (52 shape keys)" in lines
    assert "A: frames 7-39" in lines and "B: frames 60-89" in lines
    bpy.data.objects["Face"].data.shape_keys.key_blocks["jawOpen"].name = "Jaw"
    bpy.context.scene.emotalk.show_unmatched = True
    bpy.context.scene.emotalk.emotion_source = "reference"
    lines = draw_panels(bpy)
    assert "51 of 52 channels matched (51 shape keys)" in lines and "jawOpen" in lines
    bpy.context.window_manager.emotalk_run.running = True
    try:
        assert "working" in draw_panels(bpy)  # the progress bar's text, then Cancel
    finally:
        bpy.context.window_manager.emotalk_run.running = False
    bpy.context.view_layer.objects.active = None
    assert "Select a mesh with ARKit-style shape keys (no active object)" in draw_panels(bpy)


# -- transcripts ----------------------------------------------------------------------------------
@pytest.fixture
def sent(bpy, monkeypatch) -> list[dict]:
    """The params of every animate request the add-on sends (the request still goes out)."""
    protocol = sys.modules[f"{ADDON}.backend"].protocol
    calls: list[dict] = []
    real = protocol.animate_params

    def spy(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(protocol, "animate_params", spy)
    return calls


def test_each_strip_sends_its_transcript_or_its_sidecar_file(bpy, scene, strips, sent, capfd):
    clip = Path(bpy.path.abspath(bpy.data.sounds[0].filepath))
    clip.with_suffix(".txt").write_text("\ufeffFrom the file beside the audio.\n",
                                        encoding="utf-8")
    strips["A"].emotalk_transcript = "Typed on strip A."
    capfd.readouterr()
    assert animate(bpy) == {"FINISHED"}
    assert [params.get("transcript") for params in sent] == [
        "Typed on strip A.", "From the file beside the audio."]
    # The tiny model has no phonetic input: each transcript reached it and comes back as a
    # warning about its strip, reported after the summary.
    out = capfd.readouterr().out
    warnings = re.findall(r"^Warning: EmoTalk: (.*)$", out, re.MULTILINE)
    assert [w.split(":")[0] for w in warnings] == ["strip 'A'", "strip 'B'"], out
    assert all("transcript was ignored" in w for w in warnings)
    clip.with_suffix(".txt").unlink()
    strips["A"].emotalk_transcript = ""
    sent.clear()
    assert animate(bpy) == {"FINISHED"}
    assert [params.get("transcript") for params in sent] == [None, None]
    assert "Warning: EmoTalk" not in capfd.readouterr().out


def test_a_bad_sidecar_file_is_reported_and_the_bake_goes_on(bpy, scene, strips, sent, capfd):
    clip = Path(bpy.path.abspath(bpy.data.sounds[0].filepath))
    clip.with_suffix(".txt").write_bytes("Ça va".encode("latin-1"))
    capfd.readouterr()
    assert animate(bpy) == {"FINISHED"}
    assert [params.get("transcript") for params in sent] == [None, None]
    out = capfd.readouterr().out
    assert re.search(r"^Warning: EmoTalk: strip 'A': transcript file .*line\.txt was not used: "
                     r"it is not UTF-8", out, re.MULTILINE), out


def test_transcript_is_saved_with_the_strip(bpy, scene, strips, tmp_path):
    strips["B"].emotalk_transcript = "Saved with the file."
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "saved.blend"))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "saved.blend"))
    saved = strips_of(bpy.context.scene.sequence_editor)
    assert saved["B"].emotalk_transcript == "Saved with the file."
    assert saved["A"].emotalk_transcript == ""


def test_panel_shows_the_active_strips_transcript(bpy, scene, strips):
    editor = bpy.context.scene.sequence_editor
    editor.active_strip = None
    assert not any(line.startswith("Transcript of") for line in draw_panels(bpy))
    editor.active_strip = strips["B"]
    lines = draw_panels(bpy)
    assert "Transcript of 'B'" in lines
    assert "Empty: type it, or put line.txt beside the audio" in lines
    strips["B"].emotalk_transcript = "Words."
    lines = draw_panels(bpy)
    assert "Transcript of 'B'" in lines and not any(x.startswith("Empty") for x in lines)


def test_add_audio_file_creates_a_selected_strip(bpy, scene, strips, audio):
    bpy.context.scene.frame_current = 200
    assert bpy.ops.emotalk.add_audio(filepath=str(audio)) == {"FINISHED"}
    editor = bpy.context.scene.sequence_editor
    selected = [s for s in strips_of(editor) if s.select]
    assert len(selected) == 1
    assert int(getattr(selected[0], "left_handle", None) or selected[0].frame_final_start) == 200


def test_backend_killed_mid_bake_then_a_fresh_one(bpy, scene, strips):
    session = sys.modules[f"{ADDON}.backend"].SESSION
    animate(bpy)  # a warm backend
    before = all_keys(bpy)
    bpy.context.scene.emotalk.seed = 5  # a second bake would change the blink keys
    first = session.backend

    def kill_when_working() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            call = getattr(first.client, "_pending", {})
            if call:  # an animate request is in flight
                first.client.process.kill()
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_when_working)
    killer.start()
    with pytest.raises(OP_ERROR, match="backend stopped; nothing was written"):
        animate(bpy)
    killer.join()
    assert all_keys(bpy) == before
    assert animate(bpy) == {"FINISHED"}
    assert session.backend is not first and session.backend.alive


# -- bad input and faults: a clear message, nothing written ---------------------------------------
def unchanged_after(bpy, message: str) -> None:
    before = all_keys(bpy)
    with pytest.raises(OP_ERROR, match=message):
        animate(bpy)
    assert all_keys(bpy) == before


def test_no_active_object(bpy, scene):
    bpy.context.view_layer.objects.active = None
    unchanged_after(bpy, "no active object")


def test_no_shape_keys(bpy, scene):
    mesh = bpy.data.meshes.new("Plain")
    obj = bpy.data.objects.new("Plain", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    unchanged_after(bpy, "'Plain' has no shape keys")


def test_no_mapped_channels_until_an_override(bpy, scene, strips):
    obj = bpy.data.objects["Face"]
    for block in obj.data.shape_keys.key_blocks[1:]:
        block.name = f"Key {block.name}x"
    unchanged_after(bpy, "None of the shape keys")
    override = obj.emotalk_overrides.add()
    override.shape_key, override.channel = "Key jawOpenx", "jawOpen"
    assert animate(bpy) == {"FINISHED"}
    assert len(fcurve_keys(bpy, "Key jawOpenx")) == 1 + 33 + 30


def test_no_strip_selected(bpy, scene):
    editor = bpy.context.scene.sequence_editor
    for strip in strips_of(editor):
        strip.select = False
    unchanged_after(bpy, "Select one or more sound strips")


def test_missing_sound_file(bpy, scene, strips):
    bpy.data.sounds[0].filepath = "/nonexistent/line.wav"
    unchanged_after(bpy, "sound file not found: /nonexistent/line.wav")


def test_unreadable_sound_file(bpy, scene, strips):
    Path(bpy.path.abspath(bpy.data.sounds[0].filepath)).write_bytes(b"RIFF\x00\x00garbage")
    unchanged_after(bpy, "strip '(A|B)'")


def test_wrong_interpreter(bpy, scene, strips, monkeypatch, tmp_path):
    monkeypatch.setenv("EMOTALK_PYTHON", str(tmp_path / "python"))
    unchanged_after(bpy, "backend Python not found")
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{backend_python()}" -I -S "$@"\n')
    bare.chmod(0o755)
    monkeypatch.setenv("EMOTALK_PYTHON", str(bare))
    unchanged_after(bpy, "has no emotalk_core")
    monkeypatch.delenv("EMOTALK_PYTHON")  # the preference, when no environment override
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.python_path = str(tmp_path / "elsewhere" / "python")
    try:
        unchanged_after(bpy, "elsewhere/python")
    finally:
        prefs.python_path = ""


def test_missing_model_folder(bpy, scene, strips, monkeypatch, tmp_path):
    monkeypatch.setenv("EMOTALK_MODEL", str(tmp_path / "no-model"))
    unchanged_after(bpy, "does not exist")


def test_check_backend_says_whether_words_are_recognised(bpy, scene):
    operators = sys.modules[f"{ADDON}.operators"]
    settings = SimpleNamespace(python="/env/bin/python")
    ready = {"server": {"recognition": "Whisper in /env/models/tiny.en"}}
    assert "Word recognition: Whisper in /env/models/tiny.en" in operators.describe_backend(
        ready, settings)
    missing = {"server": {"recognition": "unavailable: no module named 'ctranslate2'"}}
    line = [x for x in operators.describe_backend(missing, settings)
            if x.startswith("Word recognition")][0]
    assert "no module named 'ctranslate2'" in line and "Repair Backend installs it" in line
    old = [x for x in operators.describe_backend({"server": {}}, settings)
           if x.startswith("Word recognition")][0]
    assert "older than the add-on" in old
