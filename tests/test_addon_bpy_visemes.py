"""Viseme rigs in Blender: a VRChat rig (the 15 `vrc.v_*` keys) and a VRM rig (aa ih ou ee oh
and blinks) get lip-sync keys from a real bake, the viseme weights of the predicted curves.

The bakes use the shipped default model: the tiny random model's mouth barely moves, and lip
sync that moves is what is tested."""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import emotalk_core
from tests.backend_python import predict
from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    FPS,
    NO_AUDIO,
    animate,
    audio,
    bpy,
    draw_panels,
    env,
    fcurve_keys,
    set_handles,
    strips_of,
)

pytestmark = pytest.mark.bpy

VRCHAT = ["vrc.v_sil", "vrc.v_pp", "vrc.v_ff", "vrc.v_th", "vrc.v_dd", "vrc.v_kk", "vrc.v_ch",
          "vrc.v_ss", "vrc.v_nn", "vrc.v_rr", "vrc.v_aa", "vrc.v_e", "vrc.v_ih", "vrc.v_oh",
          "vrc.v_ou"]
VRM = {"aa": "viseme_aa", "ih": "viseme_ih", "ou": "viseme_ou", "ee": "viseme_E",
       "oh": "viseme_oh"}
FIRST, LAST = 5, 40  # the strip's visible frames
DEFAULT_MODEL = Path(emotalk_core.__file__).parent / "weights" / "default"


@pytest.fixture
def speaking(env, monkeypatch) -> Path:
    """The backend runs the default model."""
    monkeypatch.setenv("EMOTALK_MODEL", str(DEFAULT_MODEL))
    return DEFAULT_MODEL


@pytest.fixture
def rig(bpy, env, audio, tmp_path):
    """rig(keys) -> an empty file with the mesh 'Face' (Basis + `keys`) and one selected sound
    strip heard on frames FIRST..LAST."""

    def make(keys: list[str]):
        bpy.ops.wm.read_homefile(use_empty=True)
        clip = tmp_path / "line.wav"
        shutil.copy(audio, clip)
        sc = bpy.context.scene
        sc.render.fps, sc.render.fps_base = FPS, 1.0
        mesh = bpy.data.meshes.new("Face")
        mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
        obj = bpy.data.objects.new("Face", mesh)
        sc.collection.objects.link(obj)
        bpy.context.view_layer.objects.active = obj
        for name in ["Basis", *keys]:
            obj.shape_key_add(name=name)
        try:
            strip = strips_of(sc.sequence_editor_create()).new_sound("A", str(clip), 1, 1)
        except RuntimeError as exc:  # PyPI's bpy 4.2 has no audio library
            NO_AUDIO.append(str(exc))
            pytest.skip(f"this bpy build cannot create sound strips: {exc}")
        set_handles(strip, FIRST, LAST + 1)
        strip.select = True
        return obj

    return make


def addon(bpy, name: str):
    return sys.modules[f"{ADDON}.{name}"]


def expected(bpy, model: Path) -> dict[str, np.ndarray]:
    """Virtual channel name -> the strip's frames of it, from Predictor's curves."""
    clip = bpy.data.sounds[0].filepath
    values = predict(model, clip, start=(FIRST - 1) / FPS, end=LAST / FPS, fps=FPS)
    visemes = addon(bpy, "visemes")
    extended = visemes.extend(values)
    return {name: extended[:, index] for name, index in visemes.INDEX.items()}


def keyed(bpy, shape_key: str) -> np.ndarray:
    keys = fcurve_keys(bpy, shape_key)
    assert sorted(keys) == [float(f) for f in range(FIRST, LAST + 1)], shape_key
    return np.array([keys[float(f)] for f in range(FIRST, LAST + 1)])


def test_a_vrchat_viseme_rig_gets_lip_sync(bpy, rig, speaking):
    rig(VRCHAT)
    assert animate(bpy) == {"FINISHED"}
    outcome = addon(bpy, "operators").last_outcome()
    assert "animated 15 shape keys of 'Face' (0/52 channels, 15 visemes)" in outcome.summary
    assert not any("mouth" in warning for warning in outcome.warnings), outcome.warnings
    want = expected(bpy, speaking)
    curves = {key: keyed(bpy, key) for key in VRCHAT}
    for key, channel in zip(VRCHAT, addon(bpy, "visemes").CHANNELS, strict=False):
        np.testing.assert_allclose(curves[key], want[channel], atol=1e-5)
        assert np.all((curves[key] >= 0) & (curves[key] <= 1))
    total = sum(curves.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-4)  # one viseme at a time, sil the rest
    mouth = np.stack([curves[key] for key in VRCHAT[1:]])
    assert mouth.max() > 0.1 and np.ptp(mouth, axis=1).max() > 0.05  # the lips move


def test_a_vrm_rig_gets_lip_sync_and_blinks(bpy, rig, speaking):
    rig([*VRM, "Blink_L", "Blink_R", "Joy"])
    assert animate(bpy) == {"FINISHED"}
    outcome = addon(bpy, "operators").last_outcome()
    assert "animated 7 shape keys of 'Face' (2/52 channels, 5 visemes)" in outcome.summary
    assert not any("mouth" in warning for warning in outcome.warnings), outcome.warnings
    want = expected(bpy, speaking)
    vowels = np.stack([keyed(bpy, key) for key in VRM])
    for row, channel in zip(vowels, VRM.values(), strict=True):
        np.testing.assert_allclose(row, want[channel], atol=1e-5)
    assert np.all((vowels >= 0) & (vowels <= 1)) and np.all(vowels.sum(axis=0) <= 1 + 1e-5)
    assert np.ptp(vowels, axis=1).max() > 0.05
    assert len(keyed(bpy, "Blink_L")) == LAST - FIRST + 1
    assert fcurve_keys(bpy, "Joy") == {}


def test_the_panel_shows_the_visemes_and_overrides_offer_them(bpy, rig):
    obj = rig([*VRM, "Mouth Wide"])
    lines = draw_panels(bpy)
    assert "0 of 52 channels matched (5 shape keys)" in lines
    assert "5 visemes matched (lip sync)" in lines
    items = addon(bpy, "properties").EMOTALK_PG_override.bl_rna.properties["channel"].enum_items
    assert {"viseme_aa", "viseme_PP", "viseme_etc", "viseme_E_ih"} <= set(items.keys())
    override = obj.emotalk_overrides.add()
    override.shape_key, override.channel = "Mouth Wide", "viseme_E_ih"
    assert animate(bpy) == {"FINISHED"}
    wide, ee, ih = keyed(bpy, "Mouth Wide"), keyed(bpy, "ee"), keyed(bpy, "ih")
    np.testing.assert_allclose(wide, ee + ih, atol=1e-5)
