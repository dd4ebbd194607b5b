"""Per-line settings in Blender: a sound strip with its own emotion, intensity and style is baked
with them, the others with the panel's; the report says what each line got; the settings are
saved with the strip and shown for the active strip."""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from emotalk_core import controls as controls_module
from emotalk_core.arkit import CHANNELS
from emotalk_core.controls import Controls, EmotionControl, PostProcess
from tests.backend_python import predict
from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    FPS,
    animate,
    audio,
    bpy,
    draw_panels,
    env,
    fcurve_keys,
    raw_name,
    scene,
    sent,
    strips,
    strips_of,
    unchanged_after,
)

pytestmark = pytest.mark.bpy

# (first frame, end frame, start and end in the sound) of build_scene's trimmed strips
WINDOWS = {"A": (7, 40, 6 / FPS, 39 / FPS), "B": (60, 90, 0.0, 30 / FPS)}
COMPARED = ("jawOpen", "eyeBlinkLeft", "mouthSmileRight", "browInnerUp")
LINE_SETTINGS = ("emotion_source", "preset", "reference", "strength", "level", "person",
                 "use_second_person", "second_person", "person_mix")


def last_summary() -> str:
    outcome = sys.modules[f"{ADDON}.operators"].last_outcome()
    assert outcome is not None and outcome.error is None, outcome
    return outcome.summary


def baked(bpy, left: int, right: int) -> np.ndarray:
    """The keys the bake wrote on the compared channels, frames left..right-1."""
    columns = []
    for channel in COMPARED:
        keys = fcurve_keys(bpy, raw_name(channel))
        columns.append([keys[float(f)] for f in range(left, right)])
    return np.array(columns).T


def expected(model, clip: str, name: str, controls: dict) -> np.ndarray:
    left, right, start, end = WINDOWS[name]
    want = predict(model, clip, start=start, end=end, fps=FPS, controls=controls)
    assert want.shape[0] == right - left
    return want[:, [CHANNELS.index(c) for c in COMPARED]]


def same(wanted: Controls, got: dict) -> bool:
    """Equal controls, floats to the panel's float32 precision."""
    return controls_module.differences(wanted, Controls.from_dict(got)) == []


def own_preset(line) -> None:
    line.use_own = True
    line.emotion_source, line.preset, line.strength = "preset", "happy", 0.8
    line.level, line.person = 0.25, 3


def test_each_strip_is_baked_with_its_own_settings_or_the_panels(bpy, scene, strips, sent,
                                                                 tiny_model_dir):
    panel = bpy.context.scene.emotalk
    panel.level, panel.person, panel.seed = 0.5, 1, 4
    own_preset(strips["A"].emotalk_line)
    assert animate(bpy) == {"FINISHED"}
    a, b = (params["controls"] for params in sent)
    # A: its emotion and style over the panel's post-processing (the seed); B: the panel's
    assert same(Controls(EmotionControl("preset", strength=0.8, preset="happy"), level=0.25,
                         person=3, postprocess=PostProcess(seed=4)), a), a
    assert same(Controls(level=0.5, person=1, postprocess=PostProcess(seed=4)), b), b
    clip = bpy.data.sounds[0].filepath
    for name, controls in (("A", a), ("B", b)):
        left, right = WINDOWS[name][:2]
        np.testing.assert_allclose(baked(bpy, left, right),
                                   expected(tiny_model_dir, clip, name, controls), atol=1e-5)
    # the strip's own settings made a difference: the panel's would have given other keys
    assert not np.allclose(baked(bpy, 7, 40), expected(tiny_model_dir, clip, "A", b), atol=1e-3)

    summary = last_summary()
    start = "animated 52 shape keys of 'Face' (52/52 channels) on frames 7-39, 60-89; "
    assert summary.startswith(start), summary
    assert re.fullmatch(r"A \(own\): preset happy 80%, intensity 0\.25, style 3; "
                        r"B: speech emotion (neutral|happy|sad) \d+%, intensity 0\.5, style 1",
                        summary[len(start):]), summary


def test_own_settings_start_as_the_panels_and_are_kept_when_toggled(bpy, scene, strips, sent):
    panel = bpy.context.scene.emotalk
    panel.emotion_source, panel.preset, panel.strength = "preset", "neutral", 0.6
    panel.level, panel.person, panel.use_second_person = 0.4, 2, True
    line = strips["B"].emotalk_line
    assert not line.use_own
    line.use_own = True
    assert {n: getattr(line, n) for n in LINE_SETTINGS} == \
        {n: getattr(panel, n) for n in LINE_SETTINGS}
    line.person, line.level = 5, 0.9
    line.use_own = False
    line.use_own = True
    assert (line.person, line.level) == (5, pytest.approx(0.9))
    bpy.context.scene.sequence_editor.active_strip = strips["B"]
    assert bpy.ops.emotalk.line_from_panel() == {"FINISHED"}  # the panel's again
    assert (line.person, line.level) == (2, pytest.approx(0.4))
    line.person = 5
    line.use_own = False  # kept on the strip, but not used
    assert animate(bpy) == {"FINISHED"}
    assert sent[0]["controls"] == sent[1]["controls"]
    assert sent[1]["controls"]["person_weights"] == {"2": 0.5, "1": 0.5}
    assert line.person == 5
    assert last_summary().endswith("; A: preset neutral 60%, intensity 0.4, styles 1 50% + 2 50%"
                                   "; B: preset neutral 60%, intensity 0.4, styles 1 50% + 2 50%")


def test_line_settings_are_saved_with_the_strip(bpy, scene, strips, sent, tmp_path):
    line = strips["A"].emotalk_line
    own_preset(line)
    line.use_second_person, line.second_person, line.person_mix = True, 7, 0.3
    path = tmp_path / "lines.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    saved = strips_of(bpy.context.scene.sequence_editor)
    line = saved["A"].emotalk_line
    assert line.use_own and (line.emotion_source, line.preset) == ("preset", "happy")
    assert (line.person, line.second_person, line.use_second_person) == (3, 7, True)
    assert (line.strength, line.level, line.person_mix) == pytest.approx((0.8, 0.25, 0.3))
    assert not saved["B"].emotalk_line.use_own
    # the reopened file bakes with them
    assert animate(bpy) == {"FINISHED"}
    assert [params["controls"]["emotion"]["source"] for params in sent] == ["preset", "audio"]
    assert "; A (own): preset happy 80%, intensity 0.25, styles 3 70% + 7 30%; B: " \
        in last_summary()


def test_a_lines_missing_reference_clip_is_refused_naming_the_strip(bpy, scene, strips):
    line = strips["B"].emotalk_line
    line.use_own = True
    line.emotion_source, line.reference = "reference", "//no-such-clip.wav"
    unchanged_after(bpy, r"strip 'B': reference clip not found: .*no-such-clip\.wav")


def test_the_panel_shows_the_active_strips_line(bpy, scene, strips):
    editor = bpy.context.scene.sequence_editor
    editor.active_strip = None
    assert not any(text.startswith("This Line") for text in draw_panels(bpy))
    editor.active_strip = strips["A"]
    lines = draw_panels(bpy)
    assert "This Line: 'A'" in lines
    assert "Follows the Emotion and Personal Style panels" in lines
    assert not any("has its own" in text for text in lines)
    strips["A"].emotalk_line.use_own = True
    lines = draw_panels(bpy)
    assert "This Line: 'A'" in lines
    assert "Follows the Emotion and Personal Style panels" not in lines
    # the Emotion and Personal Style panels say their settings do not apply to this strip
    assert lines.count("'A' has its own (Audio > This Line)") == 2
    editor.active_strip = strips["B"]
    assert not any("has its own" in text for text in draw_panels(bpy))
