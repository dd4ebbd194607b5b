"""The demo head in Blender: mesh object with ARKit shape keys, a preview rig, contact sheets.

The geometry is `emotalk_core.head` (numpy only); this module turns it into Blender data. It
imports bpy inside its functions, so importing it costs nothing where bpy is missing. Works with
the PyPI `bpy` module (5.0) and inside Blender 4.2+.

Render engine of the preview rig: Workbench by default. Headless it renders a 256 px frame in
about 0.1 s here, is deterministic, and its studio lighting with cavity shading shows the form
of each shape key clearly. `engine="CYCLES"` (16 samples, CPU) gives softer skin for a still at
a few seconds a frame. EEVEE is never chosen: headless it takes about 30 s a frame
(DESIGN.md section 9).
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emotalk_core.head import HeadMesh

# Base colours (linear RGB) of the head's materials, by name (see head.MATERIALS).
COLORS: dict[str, tuple[float, float, float]] = {
    "skin": (0.80, 0.56, 0.45), "lips": (0.62, 0.26, 0.24), "brow": (0.16, 0.10, 0.06),
    "sclera": (0.92, 0.91, 0.88), "iris": (0.18, 0.36, 0.55), "pupil": (0.01, 0.01, 0.01),
    "mouth": (0.25, 0.05, 0.05), "teeth": (0.93, 0.91, 0.84), "tongue": (0.70, 0.25, 0.25),
}  # fmt: skip
ROUGHNESS = {"sclera": 0.15, "iris": 0.1, "pupil": 0.1, "teeth": 0.3, "tongue": 0.35}

# Framing (mm, head coordinates): centre and height of what the camera shows.
FRAMES: dict[str, tuple[tuple[float, float, float], float]] = {
    "face": ((0.0, -85.0, -22.0), 205.0),
    "eyes": ((0.0, -80.0, 24.0), 125.0),
}


def import_bpy():
    """Import bpy with its user resources in a temporary folder, not the home folder."""
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="emotalk-bpy-"))
    import bpy

    return bpy


def _material(bpy, name: str):
    """A material with a viewport colour (Workbench) and a Principled BSDF (Cycles/EEVEE)."""
    color = (*COLORS.get(name, (0.8, 0.8, 0.8)), 1.0)
    mat = bpy.data.materials.new(f"EmoTalkHead.{name}")
    mat.diffuse_color = color
    mat.roughness = ROUGHNESS.get(name, 0.5)
    if getattr(mat, "node_tree", None) is None and hasattr(mat, "use_nodes"):
        mat.use_nodes = True  # Blender < 5 creates materials without nodes
    for node in mat.node_tree.nodes if mat.node_tree else ():
        if node.type == "BSDF_PRINCIPLED":
            node.inputs["Base Color"].default_value = color
            node.inputs["Roughness"].default_value = ROUGHNESS.get(name, 0.5)
            if name in ("skin", "lips"):
                weight = node.inputs.get("Subsurface Weight")
                if weight is not None:
                    weight.default_value = 0.15
    return mat


def to_blender(head: HeadMesh, name: str = "EmoTalkHead", scale: float = 0.001,
               collection=None):  # fmt: skip
    """Create the head as a mesh object (metres by default) with Basis + 52 ARKit shape keys.

    Shape keys are named exactly as CHANNELS (ARKit camelCase), so the add-on maps them 1:1.
    Vertex groups "lips" and "eyes" hold the LVE / EVE regions. Returns the object, linked to
    `collection` (default: the active scene's collection).
    """
    bpy = import_bpy()
    verts = np.asarray(head.vertices, np.float64) * scale
    faces = np.asarray(head.faces)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 4, dtype=np.int32))
    if hasattr(mesh.polygons[0], "loop_total") and not mesh.polygons[0].is_property_readonly(
        "loop_total"
    ):
        mesh.polygons.foreach_set("loop_total", np.full(len(faces), 4, np.int32))
    mesh.update(calc_edges=True)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
    for mat_name in head.materials:
        mesh.materials.append(_material(bpy, mat_name))
    mesh.polygons.foreach_set("material_index", np.asarray(head.face_materials, np.int32))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    (collection or bpy.context.scene.collection).objects.link(obj)
    obj.shape_key_add(name="Basis", from_mix=False)
    for key_name, delta in zip(head.names, head.deltas, strict=True):
        key = obj.shape_key_add(name=key_name, from_mix=False)
        key.data.foreach_set("co", (verts + delta * scale).astype(np.float32).ravel())
    for group_name, idx in (("lips", head.lip_vertices), ("eyes", head.eye_vertices)):
        obj.vertex_groups.new(name=group_name).add([int(i) for i in idx], 1.0, "REPLACE")
    return obj


def set_key_values(obj, values: Mapping[str, float] | Sequence[float] | np.ndarray) -> None:
    """Set shape-key values by name (mapping) or for all 52 keys in CHANNELS order."""
    blocks = obj.data.shape_keys.key_blocks
    if isinstance(values, Mapping):
        for key in blocks[1:]:
            key.value = float(values.get(key.name, 0.0))
        return
    for key, value in zip(blocks[1:], values, strict=True):
        key.value = float(value)


def add_preview_rig(scene, obj, engine: str = "WORKBENCH", resolution: int = 256,
                    frame: str = "face", scale: float = 0.001):  # fmt: skip
    """Camera (front, slightly above), three-point lights and fast render settings.

    `frame` is "face" (forehead to chin) or "eyes" (a close-up of eyes and brows).
    Returns the camera object. Lights matter for Cycles/EEVEE; Workbench uses studio lighting.
    """
    bpy = import_bpy()
    from mathutils import Vector

    center, height = FRAMES[frame]
    target = obj.matrix_world @ (Vector(center) * scale)
    cam = scene.camera
    if cam is None:
        cam = bpy.data.objects.new("EmoTalkCamera", bpy.data.cameras.new("EmoTalkCamera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
    direction = Vector((0.0, -1.0, 0.18)).normalized()
    distance = 0.9
    cam.location = target + direction * distance
    cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    cam.data.sensor_fit = "VERTICAL"
    cam.data.lens = cam.data.sensor_height * distance / (height * scale)
    cam.data.clip_start, cam.data.clip_end = 0.05, 5.0
    if not any(o.type == "LIGHT" for o in scene.objects):
        for light_name, kind, energy, offset in (
            ("Key", "AREA", 4.0, (-0.5, -0.7, 0.5)), ("Fill", "AREA", 1.0, (0.6, -0.6, 0.1)),
            ("Rim", "AREA", 3.0, (0.2, 0.7, 0.5)),
        ):  # fmt: skip
            light = bpy.data.objects.new(light_name, bpy.data.lights.new(light_name, kind))
            light.data.energy = energy
            light.data.size = 0.4
            light.location = target + Vector(offset)
            light.rotation_euler = (target - light.location).to_track_quat("-Z", "Y").to_euler()
            scene.collection.objects.link(light)
    if scene.world is None:
        scene.world = bpy.data.worlds.new("EmoTalkWorld")
    scene.world.color = (0.05, 0.05, 0.06)
    render = scene.render
    render.resolution_x = render.resolution_y = resolution
    render.resolution_percentage = 100
    render.image_settings.file_format = "PNG"
    if engine.upper() == "CYCLES":
        render.engine = "CYCLES"
        scene.cycles.samples = 16
        scene.cycles.use_denoising = False
        scene.cycles.device = "CPU"
    else:
        render.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.color_type = "MATERIAL"
        shading.show_cavity = True
        shading.cavity_type = "WORLD"
        scene.display.render_aa = "8"
    return cam


def _label(bpy, cam, text: str):
    """A text object in front of the camera, along the bottom of the frame."""
    curve = bpy.data.curves.new("EmoTalkLabel", type="FONT")
    curve.body = text
    curve.align_x = "CENTER"
    distance = 0.2
    half = distance * (cam.data.sensor_height / 2) / cam.data.lens  # half the frame there
    curve.size = half * 0.14
    label = bpy.data.objects.new("EmoTalkLabel", curve)
    label.parent = cam
    label.location = (0.0, -half * 0.93, -distance)
    mat = bpy.data.materials.new("EmoTalkLabel")
    mat.diffuse_color = (1.0, 1.0, 0.6, 1.0)
    curve.materials.append(mat)
    bpy.context.scene.collection.objects.link(label)
    return label


def render_rgb(bpy, scene, path: Path) -> np.ndarray:
    """Render the scene's current frame to `path` and read it back as (H, W, 3) uint8, top row
    first."""
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    try:
        w, h = image.size
        pixels = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return (pixels.reshape(h, w, 4)[::-1, :, :3] * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write (H, W, 3) uint8 as PNG with zlib alone (no Pillow needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, np.uint8))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
    Path(path).write_bytes(png + chunk(b"IEND", b""))
    return Path(path)


def contact_sheet_tiles(names: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
    """Neutral, each key at 1.0, and jawOpen + mouthClose (mouthClose only reads with it)."""
    tiles = [("neutral", {})] + [(n, {n: 1.0}) for n in names]
    return tiles + [("jawOpen+mouthClose", {"jawOpen": 1.0, "mouthClose": 1.0})]


def render_contact_sheet(
    head: HeadMesh,
    out_path: str | Path,
    tile: int = 256,
    columns: int = 9,
    frame: str = "face",
    engine: str = "WORKBENCH",
    tiles: list[tuple[str, dict[str, float]]] | None = None,
) -> Path:
    """Render the neutral head and each shape key at 1.0 into one labelled PNG grid.

    Resets the bpy session (factory settings, empty scene) first: call it from a process
    that does nothing else in Blender.
    """
    bpy = import_bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = to_blender(head)
    cam = add_preview_rig(scene, obj, engine=engine, resolution=tile, frame=frame)
    tiles = tiles if tiles is not None else contact_sheet_tiles(head.names)
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * tile, columns * tile, 3), 20, np.uint8)
    with tempfile.TemporaryDirectory(prefix="emotalk-sheet-") as tmp:
        for i, (text, values) in enumerate(tiles):
            set_key_values(obj, values)
            label = _label(bpy, cam, text)
            rgb = render_rgb(bpy, scene, Path(tmp) / f"tile{i:03d}.png")
            bpy.data.objects.remove(label)
            r, c = divmod(i, columns)
            sheet[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = rgb
    return write_png(out_path, sheet)
