"""Characters from another .blend file (Blender): shape keys that the file cannot save (linked,
or under a non-editable library override) are refused before anything is written, naming the
fix; an editable override or a character made local bakes, and its keys survive save and
reopen."""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from emotalk_core.arkit import CHANNELS
from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    FPS,
    OP_ERROR,
    animate,
    audio,
    bpy,
    draw_panels,
    env,
    raw_name,
    set_handles,
    strips_of,
)

pytestmark = pytest.mark.bpy

LIBRARY_FIX = ("make them local (Object > Relations > Make Local... > Selected Objects and Data) "
               "or give the mesh data an editable library override")
A_FRAMES = [float(f) for f in range(7, 40)]


@pytest.fixture
def library(bpy, env, tmp_path) -> Path:
    """char.blend: a collection 'Char' with the mesh object 'Face' and its 52 ARKit shape keys."""
    bpy.ops.wm.read_homefile(use_empty=True)
    mesh = bpy.data.meshes.new("Face")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("Face", mesh)
    collection = bpy.data.collections.new("Char")
    bpy.context.scene.collection.children.link(collection)
    collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    for channel in CHANNELS:
        obj.shape_key_add(name=raw_name(channel))
    path = tmp_path / "char.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    return path


@pytest.fixture
def shot(bpy, library, audio, tmp_path):
    """A new file with the selected sound strip 'A' (frames 7-39) and the library's 'Char'
    collection linked into its scene (nothing local yet)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    clip = tmp_path / "line.wav"
    shutil.copy(audio, clip)
    try:
        strip = strips_of(scene.sequence_editor_create()).new_sound("A", str(clip), 1, 1)
    except RuntimeError as exc:
        pytest.skip(f"this bpy build cannot create sound strips: {exc}")
    set_handles(strip, 7, 40)
    strip.select = True
    with bpy.data.libraries.load(str(library), link=True) as (_, linked):
        linked.collections = ["Char"]
    scene.collection.children.link(linked.collections[0])
    return scene


def activate(bpy, obj):
    bpy.context.view_layer.objects.active = obj
    return obj


def linked_face(bpy, scene):
    """The linked 'Face', also linked into the scene's own collection (a linked collection's
    objects reach the view layer only at its next update)."""
    face = next(o for o in bpy.data.objects if o.name == "Face" and o.library is not None)
    scene.collection.objects.link(face)
    bpy.context.view_layer.update()
    return face


def override_character(bpy, shot):
    """An editable library override of the character, as Object > Library Override > Make
    gives it: the object is overridden, its mesh data (and shape keys) stay linked."""
    collection = next(c for c in bpy.data.collections if c.name == "Char")
    collection.override_hierarchy_create(shot, bpy.context.view_layer, do_fully_editable=True)
    return next(o for o in bpy.data.objects if o.name == "Face" and o.override_library)


def keyed_frames(key, name: str) -> list[float]:
    """Frames keyed on the shape key in its action (slotted or legacy)."""
    anim = key.animation_data
    if anim is None or anim.action is None:
        return []
    path = f'key_blocks["{name}"].value'
    if not hasattr(anim, "action_slot"):
        curve = anim.action.fcurves.find(path)
    else:
        bags = [strip.channelbag(anim.action_slot) for layer in anim.action.layers
                for strip in layer.strips]
        curve = next((c for b in bags if b is not None for c in [b.fcurves.find(path)] if c),
                     None)
    return sorted(k.co[0] for k in curve.keyframe_points) if curve is not None else []


def refused(bpy, obj, message: str) -> None:
    """The button explains, the operator refuses, and nothing is written."""
    operators = sys.modules[f"{ADDON}.operators"]
    actions = set(bpy.data.actions)
    assert message in operators.unavailable_reason(bpy.context)
    assert any(line.startswith("make them local") or "make the override editable" in line
               for line in draw_panels(bpy))
    with pytest.raises(OP_ERROR, match=re.escape(message[:150])):  # bpy cuts it at 200
        animate(bpy)
    with pytest.raises(operators.BakeError, match=re.escape(message)):
        operators.make_plan(bpy.context)
    key = obj.data.shape_keys
    assert set(bpy.data.actions) == actions
    assert key.animation_data is None and keyed_frames(key, "jawOpen") == []
    assert not list(key.keys())  # no record of a bake either


def saved_and_reopened(bpy, tmp_path: Path):
    """The active object's shape keys after saving the file and opening it again."""
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    face = next(o for o in bpy.data.objects if o.name == "Face" and o.library is None)
    return face.data.shape_keys


# -- refused: the keys would not be saved ---------------------------------------------------------
def test_a_linked_character_is_refused(bpy, shot):
    face = activate(bpy, linked_face(bpy, shot))
    refused(bpy, face, "The shape keys of 'Face' are linked from 'char.blend', so keys written "
                       f"to them would not be saved: {LIBRARY_FIX}")


def test_an_overridden_object_whose_mesh_is_linked_is_refused(bpy, shot):
    face = activate(bpy, override_character(bpy, shot))
    assert face.data.library is not None  # overriding the object leaves its data linked
    refused(bpy, face, "The shape keys of 'Face' are linked from 'char.blend', so keys written "
                       f"to them would not be saved: {LIBRARY_FIX}")


def test_a_system_override_of_the_mesh_is_refused(bpy, shot):
    face = activate(bpy, override_character(bpy, shot))
    face.data.override_create(remap_local_usages=True).override_library.is_system_override = True
    assert face.data.library is None and face.data.override_library.is_system_override
    refused(bpy, face, "The shape keys of 'Face' belong to a non-editable library override: "
                       "make the override editable (in the Outliner, right-click the mesh data "
                       "> Library Override > Make > Selected) or make them local")


# -- accepted: the keys survive save and reopen ---------------------------------------------------
def test_an_editable_override_bakes_and_the_keys_are_saved(bpy, shot, tmp_path):
    face = activate(bpy, override_character(bpy, shot))
    face.data.override_create(remap_local_usages=True)
    assert not face.data.override_library.is_system_override
    assert animate(bpy) == {"FINISHED"}
    assert keyed_frames(face.data.shape_keys, "jawOpen") == A_FRAMES
    assert keyed_frames(saved_and_reopened(bpy, tmp_path), "jawOpen") == A_FRAMES


def test_a_character_made_local_bakes_and_the_keys_are_saved(bpy, shot, tmp_path):
    face = activate(bpy, linked_face(bpy, shot))
    face.select_set(True)
    assert bpy.ops.object.make_local(type="SELECT_OBDATA") == {"FINISHED"}
    face = bpy.context.view_layer.objects.active
    assert face.data.shape_keys.library is None
    assert animate(bpy) == {"FINISHED"}
    assert keyed_frames(saved_and_reopened(bpy, tmp_path), "jawOpen") == A_FRAMES
