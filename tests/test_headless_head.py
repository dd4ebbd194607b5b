"""The demo head in Blender (blender_addon/headless/head.py): the mesh object with its 52 ARKit
shape keys, and the contact sheet. The geometry itself is tested in test_head.py.

The bpy tests run with `pytest -m bpy tests/test_headless_head.py` and are skipped where the bpy
module is not installed.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys

import numpy as np
import pytest

from emotalk_core import head as hd
from emotalk_core.arkit import CHANNELS


def posed(head: hd.HeadMesh, **values: float) -> np.ndarray:
    coeffs = np.zeros((1, len(CHANNELS)), np.float32)
    for name, value in values.items():
        coeffs[0, CHANNELS.index(name)] = value
    return hd.drive(head, coeffs)[0]


def test_import_pulls_in_neither_bpy_nor_torch():
    code = ("import sys, emotalk_core.head, blender_addon.headless.head; "
            "print(sorted(m for m in ('bpy', 'torch') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def bpy_module():
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("the bpy module is not installed (pip install bpy==5.0.1)")
    from blender_addon.headless.head import import_bpy

    bpy = import_bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy


@pytest.mark.bpy
def test_blender_object_has_the_52_arkit_keys(bpy_module):
    from blender_addon.headless.head import set_key_values, to_blender

    head = hd.build_head("low")
    obj = to_blender(head)
    keys = obj.data.shape_keys.key_blocks
    assert [k.name for k in keys] == ["Basis", *CHANNELS]
    assert len(obj.data.vertices) == len(head.vertices)
    assert len(obj.data.polygons) == len(head.faces)
    assert {g.name for g in obj.vertex_groups} == {"lips", "eyes"}
    set_key_values(obj, {"jawOpen": 1.0, "eyeBlinkLeft": 0.5})
    depsgraph = bpy_module.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph).to_mesh()
    co = np.empty(len(head.vertices) * 3, np.float32)
    evaluated.vertices.foreach_get("co", co)
    expected = posed(head, jawOpen=1.0, eyeBlinkLeft=0.5) * 0.001
    assert np.abs(co.reshape(-1, 3) - expected).max() < 1e-5


@pytest.mark.bpy
def test_contact_sheet_renders(bpy_module, tmp_path):
    from blender_addon.headless.head import render_contact_sheet

    tiles = [("neutral", {}), ("jawOpen", {"jawOpen": 1.0})]
    path = render_contact_sheet(hd.build_head("low"), tmp_path / "sheet.png", tile=64,
                                columns=2, tiles=tiles)  # fmt: skip
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 64)
