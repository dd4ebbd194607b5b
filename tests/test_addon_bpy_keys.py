"""Where a bake writes (Blender): a re-bake replaces the strip's previous keys wherever the
strip was, one action per line on an NLA track, and key reduction."""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import pytest

from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    animate,
    audio,
    bpy,
    env,
    fcurve_keys,
    find_fcurve,
    scene,
    strips,
)

pytestmark = pytest.mark.bpy

HAND_KEY = 5.0  # build_scene's hand key on jawOpen outside the strips
A_FRAMES = [float(f) for f in range(7, 40)]


def move(strip, frames: int) -> None:
    """Slide a strip along the timeline, its trim kept."""
    name = next(n for n in ("content_start", "frame_start") if hasattr(strip, n))
    setattr(strip, name, getattr(strip, name) + frames)


def set_right(strip, frame: int) -> None:
    name = next(n for n in ("right_handle", "frame_final_end") if hasattr(strip, n))
    setattr(strip, name, frame)


def nla_lines(bpy) -> dict[str, tuple[float, list[float]]]:
    """NLA strip name -> (start frame, the frames its action keys on jawOpen)."""
    anim = bpy.data.objects["Face"].data.shape_keys.animation_data
    track = anim.nla_tracks.get("EmoTalk") if anim is not None else None
    lines = {}
    for strip in track.strips if track is not None else ():
        curves = _action_curves(strip.action, strip)
        jaw = curves.find('key_blocks["jawOpen"].value')
        lines[strip.name] = (strip.frame_start, sorted(k.co[0] for k in jaw.keyframe_points))
    return lines


def _action_curves(action, nla_strip):
    if not hasattr(action, "slots"):
        return action.fcurves
    slot = nla_strip.action_slot
    for layer in action.layers:
        for keyframes in layer.strips:
            bag = keyframes.channelbag(slot)
            if bag is not None:
                return bag.fcurves
    raise AssertionError("the line's action has no curves for its slot")


def test_moving_a_strip_then_rebaking_leaves_no_stale_keys(bpy, scene, strips):
    assert animate(bpy) == {"FINISHED"}
    move(strips["B"], 24)  # 60..89 -> 84..113
    assert animate(bpy) == {"FINISHED"}
    jaw = fcurve_keys(bpy, "jawOpen")
    assert sorted(jaw) == [HAND_KEY, *A_FRAMES, *[float(f) for f in range(84, 114)]]
    assert jaw[HAND_KEY] == pytest.approx(0.9)
    assert sorted(fcurve_keys(bpy, "eyeBlink_L")) == [*A_FRAMES,
                                                       *[float(f) for f in range(84, 114)]]


def test_trimming_a_strip_then_rebaking_leaves_no_stale_keys(bpy, scene, strips):
    assert animate(bpy) == {"FINISHED"}
    set_right(strips["B"], 70)  # 60..89 -> 60..69
    assert animate(bpy) == {"FINISHED"}
    assert sorted(fcurve_keys(bpy, "jawOpen")) == [HAND_KEY, *A_FRAMES,
                                                    *[float(f) for f in range(60, 70)]]


def test_a_strip_not_rebaked_keeps_its_keys(bpy, scene, strips):
    assert animate(bpy) == {"FINISHED"}
    strips["A"].select = False
    move(strips["B"], 10)
    assert animate(bpy) == {"FINISHED"}
    assert sorted(fcurve_keys(bpy, "jawOpen")) == [HAND_KEY, *A_FRAMES,
                                                    *[float(f) for f in range(70, 100)]]


def test_nla_mode_puts_each_line_on_the_track_and_rebakes_replace_it(bpy, scene, strips):
    assert animate(bpy) == {"FINISHED"}  # first into the active action
    bpy.context.scene.emotalk.write_mode = "nla"
    assert animate(bpy) == {"FINISHED"}
    lines = nla_lines(bpy)
    assert sorted(lines) == ["EmoTalk A", "EmoTalk B"]
    assert lines["EmoTalk A"] == (7.0, A_FRAMES)
    assert lines["EmoTalk B"] == (60.0, [float(f) for f in range(60, 90)])
    # the active action lost the earlier bake's keys and kept the hand key
    assert sorted(fcurve_keys(bpy, "jawOpen")) == [HAND_KEY]
    move(strips["B"], 24)
    assert animate(bpy) == {"FINISHED"}
    lines = nla_lines(bpy)
    assert sorted(lines) == ["EmoTalk A", "EmoTalk B"]
    assert lines["EmoTalk B"] == (84.0, [float(f) for f in range(84, 114)])
    assert sum(a.name.startswith("EmoTalk B") for a in bpy.data.actions) == 1  # old one freed
    bpy.context.scene.emotalk.write_mode = "action"
    assert animate(bpy) == {"FINISHED"}
    assert nla_lines(bpy) == {}
    assert sorted(fcurve_keys(bpy, "jawOpen")) == [HAND_KEY, *A_FRAMES,
                                                    *[float(f) for f in range(84, 114)]]


def test_reduced_keys_follow_the_full_bake_within_the_tolerance(bpy, scene, strips):
    assert animate(bpy) == {"FINISHED"}
    full = {name: fcurve_keys(bpy, name) for name in ("jawOpen", "mouthClose", "browInnerUp")}
    settings = bpy.context.scene.emotalk
    settings.reduce_keys, settings.key_tolerance = True, 0.02
    assert animate(bpy) == {"FINISHED"}
    fewer = 0
    for name, dense in full.items():
        curve = find_fcurve(bpy, name)
        baked = {f: v for f, v in dense.items() if f != HAND_KEY}
        kept = [k.co[0] for k in curve.keyframe_points if k.co[0] != HAND_KEY]
        fewer += len(baked) - len(kept)
        assert {7.0, 39.0, 60.0, 89.0} <= set(kept)  # each line's ends
        for frame, value in baked.items():
            assert abs(curve.evaluate(frame) - value) <= 0.02 + 1e-5, (name, frame)
    assert fewer > 0
