"""One bake onto a character split into several meshes (Blender): every selected mesh with
matching shape keys is keyed from the same curves, in one undo step, also with the armature
active."""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import sys

import pytest

from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    animate,
    audio,
    bpy,
    env,
    scene,
    strips,
)

pytestmark = pytest.mark.bpy


def add_mesh(bpy, name: str, shape_keys: list[str]):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    for key in shape_keys:
        obj.shape_key_add(name=key)
    return obj


def keys_of(obj, name: str) -> dict[float, float]:
    key = obj.data.shape_keys
    anim = key.animation_data
    if anim is None or anim.action is None:
        return {}
    path = f'key_blocks["{name}"].value'
    if hasattr(anim, "action_slot"):
        from bpy_extras.anim_utils import action_get_channelbag_for_slot

        bag = action_get_channelbag_for_slot(anim.action, anim.action_slot)
        curve = bag.fcurves.find(path) if bag is not None else None
    else:
        curve = anim.action.fcurves.find(path)
    return {} if curve is None else {round(k.co[0], 3): k.co[1] for k in curve.keyframe_points}


def strip_frames(face) -> dict[float, float]:
    """Face's jawOpen keys without build_scene's hand key outside the strips."""
    return {f: v for f, v in keys_of(face, "jawOpen").items() if f != 5.0}


@pytest.fixture
def character(bpy, scene, strips):
    face = bpy.data.objects["Face"]
    teeth = add_mesh(bpy, "Teeth", ["jawOpen", "mouthClose"])
    lashes = add_mesh(bpy, "Lashes", ["eyeBlink_L", "eyeBlink_R"])
    body = add_mesh(bpy, "Body", ["Fat"])  # selected, but nothing of it matches
    for obj in (face, teeth, lashes, body):
        obj.select_set(True)
    bpy.context.view_layer.objects.active = face
    return face, teeth, lashes, body


def last_outcome():
    return sys.modules[f"{ADDON}.operators"].last_outcome()


def test_every_selected_mesh_with_matching_keys_is_keyed_alike(bpy, character):
    face, teeth, lashes, body = character
    assert animate(bpy) == {"FINISHED"}
    jaw = strip_frames(face)
    assert len(jaw) == 63  # frames 7..39 and 60..89
    assert keys_of(teeth, "jawOpen") == pytest.approx(jaw)
    assert keys_of(lashes, "eyeBlink_L") == pytest.approx(keys_of(face, "eyeBlink_L"))
    assert body.data.shape_keys.animation_data is None
    summary = last_outcome().summary
    assert "shape keys of 'Face' (52/52 channels) and 2 of 'Lashes' and 2 of 'Teeth' on " \
        "frames" in summary, summary


def test_the_armature_may_stay_active(bpy, character):
    face, teeth, lashes, body = character
    armature = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    bpy.context.scene.collection.objects.link(armature)
    armature.select_set(True)
    bpy.context.view_layer.objects.active = armature
    assert animate(bpy) == {"FINISHED"}
    assert len(strip_frames(face)) == 63
    assert keys_of(teeth, "jawOpen") == pytest.approx(strip_frames(face))


def test_one_undo_step_restores_every_mesh(bpy, character):
    face, teeth, lashes, body = character
    window = bpy.context.window_manager.windows[0]
    with bpy.context.temp_override(window=window):
        bpy.ops.ed.undo_push(message="before EmoTalk")
        assert bpy.ops.emotalk.animate_from_audio("EXEC_DEFAULT", True) == {"FINISHED"}
        assert keys_of(bpy.data.objects["Teeth"], "jawOpen")
        bpy.ops.ed.undo()
    assert keys_of(bpy.data.objects["Teeth"], "jawOpen") == {}
    assert keys_of(bpy.data.objects["Lashes"], "eyeBlink_L") == {}
    assert set(keys_of(bpy.data.objects["Face"], "jawOpen")) == {5.0, 20.0}  # the hand keys


def test_an_armature_alone_is_refused_with_the_fix(bpy, scene, strips):
    armature = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    bpy.context.scene.collection.objects.link(armature)
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    bpy.context.view_layer.objects.active = armature
    with pytest.raises(RuntimeError, match="select the character's face mesh"):
        animate(bpy)
