"""Which sound a bake hears (Blender): the sequencer scene of the workspace (Blender 5.0+), sound
strips inside meta strips (clipped to the meta's handles), muted strips and channels; and the
warnings about targets that will show little (driven shape keys, few mouth shapes)."""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import sys

import pytest

from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    FPS,
    OP_ERROR,
    all_keys,
    animate,
    audio,
    bpy,
    draw_panels,
    env,
    fcurve_keys,
    scene,
    set_handles,
    strips,
    strips_of,
    unchanged_after,
)

pytestmark = pytest.mark.bpy

HAND_KEY = 5.0  # build_scene's hand key on jawOpen, outside the strips


def outcome(bpy):
    return sys.modules[f"{ADDON}.operators"].last_outcome()


def frames(first: int, last: int) -> list[float]:
    """Frames first..last, inclusive."""
    return [float(f) for f in range(first, last + 1)]


def has_sequencer_scene(bpy) -> bool:
    """Blender 5.0+: each workspace names the scene its Video Sequencer shows."""
    return "sequencer_scene" in bpy.types.WorkSpace.bl_rna.properties


def make_meta(bpy, scene, names: list[str]):
    """A meta strip of the named strips, made as the Video Sequencer's Make Meta Strip does."""
    if has_sequencer_scene(bpy):  # the sequencer's operators act on this scene
        bpy.context.workspace.sequencer_scene = scene
    window = bpy.context.window_manager.windows[0]
    area = window.screen.areas[0]
    area.type = "SEQUENCE_EDITOR"
    region = next(r for r in area.regions if r.type == "WINDOW")
    for strip in strips_of(scene.sequence_editor):
        strip.select = strip.name in names
    with bpy.context.temp_override(window=window, area=area, region=region):
        assert bpy.ops.sequencer.meta_make() == {"FINISHED"}
    meta = next(s for s in strips_of(scene.sequence_editor) if s.type == "META")
    meta.name = "M"
    return meta


def forget_bakes(bpy) -> None:
    """No keys and no record of earlier bakes: the next bake starts from nothing."""
    key = bpy.data.objects["Face"].data.shape_keys
    key.animation_data_clear()
    for name in list(key.keys()):
        del key[name]


# -- the workspace's sequencer scene (Blender 5.0+) -----------------------------------------------
@pytest.fixture
def edit_scene(bpy, scene, strips):
    """A second scene with one sound strip 'E' (frames 100-123), shown by the workspace's
    sequencer while the window's scene keeps the rig and its unselected strips."""
    if not has_sequencer_scene(bpy):
        pytest.skip(f"Blender {bpy.app.version_string} has no workspace sequencer scene")
    for strip in strips.values():
        strip.select = False
    edit = bpy.data.scenes.new("Edit")
    edit.render.fps, edit.render.fps_base = FPS, 1.0
    clip = bpy.data.sounds[0].filepath
    strip = strips_of(edit.sequence_editor_create()).new_sound("E", clip, 1, 90)
    set_handles(strip, 100, 124)
    strip.select = True
    bpy.context.workspace.sequencer_scene = edit
    assert bpy.context.scene == scene
    return edit


def test_strips_come_from_the_sequencer_scene_the_user_looks_at(bpy, edit_scene):
    assert animate(bpy) == {"FINISHED"}
    assert sorted(fcurve_keys(bpy, "jawOpen")) == [HAND_KEY, 20.0, *frames(100, 123)]
    result = outcome(bpy)
    assert "on frames 100-123" in result.summary
    assert ("the sound strips are in the sequencer's scene 'Edit', not in 'Scene': the keys are "
            "on the same frame numbers as the strips") in result.warnings
    lines = draw_panels(bpy)
    assert "Strips of the sequencer's scene 'Edit'" in lines and "E: frames 100-123" in lines


def test_a_sequencer_scene_at_another_frame_rate_is_refused(bpy, edit_scene):
    edit_scene.render.fps = 30
    unchanged_after(bpy, r"The sequencer shows the scene 'Edit' at 30 fps but 'Scene' plays at "
                         r"24 fps: give both scenes the same frame rate")


def test_add_audio_puts_the_strip_where_the_sequencer_shows_it(bpy, edit_scene, audio):
    edit_scene.frame_current = 300
    assert bpy.ops.emotalk.add_audio(filepath=str(audio)) == {"FINISHED"}
    added = [s for s in strips_of(edit_scene.sequence_editor) if s.select]
    assert len(added) == 1 and added[0].name != "E"
    assert {s.name for s in strips_of(bpy.context.scene.sequence_editor)} == {"A", "B"}


# -- meta strips ----------------------------------------------------------------------------------
def test_a_selected_meta_bakes_its_sound_strips_within_its_handles(bpy, scene, strips):
    set_handles(strips["A"], 20, 40)  # what the meta's handles below leave audible
    set_handles(strips["B"], 60, 70)
    assert animate(bpy) == {"FINISHED"}
    want = all_keys(bpy)
    forget_bakes(bpy)
    set_handles(strips["A"], 7, 40)
    set_handles(strips["B"], 60, 90)
    meta = make_meta(bpy, scene, ["A", "B"])
    set_handles(meta, 20, 70)
    lines = draw_panels(bpy)
    assert "A: frames 20-39" in lines and "B: frames 60-69" in lines
    assert animate(bpy) == {"FINISHED"}
    assert "on frames 20-39, 60-69" in outcome(bpy).summary
    got = all_keys(bpy)
    assert sorted(got["jawOpen"]) == [*frames(20, 39), *frames(60, 69)]
    baked = {f: v for f, v in want["jawOpen"].items() if f != HAND_KEY}
    assert got["jawOpen"] == pytest.approx(baked)  # the same audio as the trimmed strips
    assert got["eyeBlink_L"].keys() == want["eyeBlink_L"].keys()


def test_inside_an_opened_meta_the_selected_strips_count(bpy, scene, strips):
    meta = make_meta(bpy, scene, ["A", "B"])
    set_handles(meta, 20, 70)
    scene.sequence_editor.display_stack(meta)  # as Tab into the meta strip does
    try:
        for strip in meta.strips:
            strip.select = strip.name == "B"
        assert animate(bpy) == {"FINISHED"}
        assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == frames(60, 69)
        meta.mute = True
        unchanged_after(bpy, r"The selected sound strips are muted \('B'\)")
    finally:
        scene.sequence_editor.display_stack(None)


def test_a_meta_without_sound_between_its_handles_is_refused(bpy, scene, strips):
    meta = make_meta(bpy, scene, ["A", "B"])  # A: frames 7-39, B: 60-89
    set_handles(meta, 45, 55)
    unchanged_after(bpy, r"The selected meta strip 'M' holds no sound strip between its "
                         r"handles: select sound strips in the sequencer, or add an audio file")


def test_muted_strips_inside_a_selected_meta_are_skipped(bpy, scene, strips):
    meta = make_meta(bpy, scene, ["A", "B"])
    meta.strips["B"].mute = True
    assert animate(bpy) == {"FINISHED"}
    assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == frames(7, 39)
    assert "skipped muted strip 'B'" in outcome(bpy).warnings


# -- muted strips and channels --------------------------------------------------------------------
def test_a_muted_strip_is_skipped_with_a_note(bpy, scene, strips):
    strips["B"].mute = True
    assert animate(bpy) == {"FINISHED"}
    assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == frames(7, 39)
    assert "skipped muted strip 'B'" in outcome(bpy).warnings
    assert "skipped muted strip 'B'" in draw_panels(bpy)


def test_a_strip_on_a_muted_channel_is_skipped_with_a_note(bpy, scene, strips):
    scene.sequence_editor.channels[strips["A"].channel].mute = True
    assert animate(bpy) == {"FINISHED"}
    assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == frames(60, 89)
    assert (f"skipped muted strip 'A' (its channel {strips['A'].channel} is muted)"
            in outcome(bpy).warnings)


def test_only_muted_strips_selected_is_refused(bpy, scene, strips):
    strips["A"].mute = True
    scene.sequence_editor.channels[strips["B"].channel].mute = True
    unchanged_after(bpy, r"The selected sound strips are muted \('A', 'B'\): unmute them or "
                         r"their channels, or select other strips")
    assert "unmute them or their channels, or select other strips" in " ".join(draw_panels(bpy))


# -- targets that show little ----------------------------------------------------------------------
def test_shape_keys_under_drivers_are_named_in_a_warning(bpy, scene, strips):
    key = bpy.data.objects["Face"].data.shape_keys
    key.key_blocks["mouthClose"].driver_add("value")
    key.key_blocks["Extra"].driver_add("value")  # not animated by EmoTalk: not named
    assert animate(bpy) == {"FINISHED"}
    warnings = [w for w in outcome(bpy).warnings if "driven by drivers" in w]
    assert warnings == ["shape keys driven by drivers do not show the keys EmoTalk writes: "
                        "'mouthClose'; remove their drivers, or set them to (Ignore) in the "
                        "Target panel's overrides"]
    assert any("driven by drivers" in line for line in draw_panels(bpy))


def test_few_mouth_shapes_is_a_warning_not_a_quiet_success(bpy, scene, strips):
    key = bpy.data.objects["Face"].data.shape_keys
    for block in key.key_blocks[1:]:
        if block.name.startswith(("mouth", "tongue", "cheekPuff")):
            block.name = f"Lips {block.name}x"  # no ARKit name any more
    assert animate(bpy) == {"FINISHED"}
    warnings = [w for w in outcome(bpy).warnings if w.startswith("only ")]
    assert warnings == ["only 4 mouth shapes matched (of the 29 mouth and jaw channels), so the "
                        "lips will barely follow the speech; add overrides in the Target panel "
                        "or check the shape key names"]
    assert any(line.startswith("only 4 mouth shapes matched") for line in draw_panels(bpy))
