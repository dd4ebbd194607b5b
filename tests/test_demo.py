"""`emotalk demo`: the bundled clip, the settings and frame choices, the pictures' layout, and
one end-to-end run (bpy) whose every output is opened and checked.

The end-to-end test is selected with `pytest -m bpy tests/test_demo.py` (bpy loads once per
process) and skipped with the reason when bpy is missing; the others need no bpy.
"""

from __future__ import annotations

import csv
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blender_addon.headless import demo
from emotalk_core import checkpoint
from emotalk_core.arkit import CHANNELS
from emotalk_core.audio import audio_duration, load_audio
from emotalk_core.cli import main
from emotalk_core.errors import ControlError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def fake_curves(frames: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (frames, len(CHANNELS))).astype(np.float32)


# -- without bpy ----------------------------------------------------------------------------------
def test_bundled_clip_is_short_real_speech_with_its_licence():
    info = sf.info(demo.DEMO_CLIP)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 3.0 <= audio_duration(demo.DEMO_CLIP) <= 6.0
    samples = load_audio(demo.DEMO_CLIP)
    assert samples.dtype == np.float32 and 0.1 < np.abs(samples).max() <= 1.0
    assert demo.DEMO_CLIP.stat().st_size < 250_000
    licence = (demo.DEMO_DIR / "LICENSE.txt").read_text(encoding="utf-8")
    assert "Carnegie Mellon University" in licence and "pysptk" in licence
    assert demo.DEMO_TRANSCRIPT in (demo.DEMO_DIR / "README.md").read_text(encoding="utf-8")


def test_missing_default_model_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_DIR", tmp_path / "not-installed")
    monkeypatch.delenv("EMOTALK_MODEL", raising=False)
    out = tmp_path / "out"
    assert main(["demo", "--model", "default", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the default model is not bundled in this checkout" in err
    assert "--model DIR" in err and "emotalk import-official" in err
    assert not out.exists()  # nothing is written before the checks pass


def test_bad_inputs_fail_before_any_work(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["demo", "--model", str(tiny_model_dir), "--out", str(out)]
    assert main([*base, "--audio", str(tmp_path / "none.wav")]) == 1
    assert "audio file not found" in capsys.readouterr().err
    assert main([*base, "--settings", "sad"]) == 1
    assert "no emotion preset 'sad'" in capsys.readouterr().err
    assert not out.exists()


def test_settings_fall_back_when_the_model_lacks_presets():
    said: list[str] = []
    assert [s.name for s in demo.plan_settings((), ["neutral", "happy"], said.append)] == [
        "neutral", "happy"]
    assert said == []
    plan = demo.plan_settings((), [], said.append)
    assert [s.name for s in plan] == [demo.SPEECH]
    assert plan[0].controls.emotion.source == "audio"
    assert "no 'neutral' preset" in said[0] and "emotalk presets" in said[1]
    neutral, happy = demo.plan_settings(("neutral", "happy"), ["neutral", "happy"], said.append)
    assert (neutral.controls.emotion.preset, neutral.controls.level) == ("neutral", 0.0)
    assert (happy.controls.emotion.source, happy.controls.emotion.strength,
            happy.controls.level) == ("preset", 1.0, 1.0)
    with pytest.raises(ControlError, match="twice"):
        demo.plan_settings(("speech", "speech"), [], said.append)
    with pytest.raises(ControlError, match="no emotion preset 'angry'"):
        demo.plan_settings(("angry",), ["neutral"], said.append)


def test_frames_show_the_widest_and_most_closed_mouth_during_speech():
    frames = 120
    jaw = 0.3 + 0.2 * np.sin(np.arange(frames) / 3.0)
    jaw[50], jaw[5] = 0.95, 0.0  # frame 5 is in the leading silence
    lip_channels = [CHANNELS.index(n) for n in ("mouthClose", "mouthLowerDownLeft",
                                                  "mouthLowerDownRight", "mouthUpperUpLeft",
                                                  "mouthUpperUpRight")]
    curves = {name: fake_curves(frames, seed) for seed, name in enumerate(("a", "b"))}
    for values in curves.values():
        values[:, CHANNELS.index("jawOpen")] = jaw
        values[:, lip_channels] = 0.0
        values[80, CHANNELS.index("mouthClose")] = jaw[80]  # lips shut over an open jaw (an m)
    envelope = np.where((np.arange(frames) >= 12) & (np.arange(frames) < 105), 0.2, 0.001)
    picked = demo.pick_frames(curves, envelope, 7)
    assert len(picked) == 7 and picked == sorted(set(picked))
    assert 50 in picked and 80 in picked and 5 not in picked
    assert all(12 <= f < 105 for f in picked)
    assert min(np.diff(picked)) >= frames // 14
    assert demo.pick_frames({"a": fake_curves(3)}, np.ones(3), 7) == [0, 1, 2]


def test_contact_sheet_layout_is_pixel_exact(tmp_path):
    pytest.importorskip("matplotlib", reason="the demo's pictures need matplotlib")
    settings = [demo.setting("neutral"), demo.setting("happy")]
    tile, frames = 64, [3, 40, 90]
    rows = [np.full((len(frames), tile, tile, 3), 200, np.uint8) for _ in settings]
    curves = {s.name: fake_curves() for s in settings}
    path = demo.layout_sheet(rows, settings, frames, curves, tmp_path / "sheet.png", tile)
    width, height = png_size(path)
    assert len(frames) * tile < width < len(frames) * tile + 80
    assert len(settings) * tile < height < len(settings) * tile + 160


# -- with bpy -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpy(tmp_path_factory):
    if "bpy" not in sys.modules:
        os.environ["BLENDER_USER_RESOURCES"] = str(tmp_path_factory.mktemp("blender-user"))
    return pytest.importorskip("bpy", reason="bpy is not installed (pip install bpy==5.0.1)")


def jaw_fcurve(bpy, obj):
    """The jawOpen F-curve of the object's shape keys (slotted actions on 4.4+)."""
    anim = obj.data.shape_keys.animation_data
    path = 'key_blocks["jawOpen"].value'
    slot = getattr(anim, "action_slot", None)
    if slot is not None:
        from bpy_extras.anim_utils import action_get_channelbag_for_slot

        return action_get_channelbag_for_slot(anim.action, slot).fcurves.find(path)
    return anim.action.fcurves.find(path)


@pytest.mark.bpy
def test_demo_end_to_end(bpy, tiny_model_dir, tmp_path, capsys):
    from emotalk_core.inference import Predictor

    pytest.importorskip("matplotlib", reason="the demo's pictures need matplotlib")
    out = tmp_path / "demo"
    argv = ["demo", "--model", str(tiny_model_dir), "--out", str(out), "--tile", "96",
            "--columns", "5", "--head", "low"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "[6/6] plotting the curves: done" in said
    assert "happy.blend" in said and "press Space" in said

    sheet_w, sheet_h = png_size(out / "contact_sheet.png")
    assert 5 * 96 < sheet_w < 5 * 96 + 80 and 2 * 96 < sheet_h < 2 * 96 + 160
    assert png_size(out / "curves.png")[0] >= 800

    frames = audio_duration(demo.DEMO_CLIP) * demo.FPS
    predictor = Predictor(tiny_model_dir, device="cpu")
    for name in ("neutral", "happy"):
        values = np.load(out / f"{name}.npy")
        assert values.shape == (round(frames), 52) and values.dtype == np.float32
        expected = predictor.predict(demo.DEMO_CLIP, controls=demo.setting(name).controls)
        np.testing.assert_allclose(values, expected.values, atol=1e-5)  # the keys hold it
        with open(out / f"{name}.csv", newline="") as f:
            header, first = next(csv.reader(f)), next(csv.reader(f))
        assert header[:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"]
        assert len(header) == 63 and first[0].startswith("00:00:00:00")

    bpy.ops.wm.open_mainfile(filepath=str(out / "happy.blend"), load_ui=False)
    scene = bpy.context.scene
    obj = bpy.data.objects[demo.HEAD_NAME]
    assert len(obj.data.shape_keys.key_blocks) == 53
    assert (scene.render.fps, scene.frame_start, scene.frame_end) == (30, 1, round(frames))
    assert len(jaw_fcurve(bpy, obj).keyframe_points) == round(frames)
    strips = scene.sequence_editor.strips if hasattr(scene.sequence_editor, "strips") \
        else scene.sequence_editor.sequences
    sounds = [s for s in strips if s.type == "SOUND"]
    assert len(sounds) == 1 and sounds[0].sound.packed_file is not None


@pytest.mark.bpy
def test_make_demo_with_the_bundled_model(bpy, tmp_path, capsys, monkeypatch):
    """`make demo`'s own command line (no --model): the packaged default model."""
    pytest.importorskip("matplotlib", reason="the demo's pictures need matplotlib")
    monkeypatch.delenv("EMOTALK_MODEL", raising=False)
    out = tmp_path / "demo_output"
    assert main(["demo", "--out", str(out)]) == 0
    assert "press Space" in capsys.readouterr().out
    names = {"head.blend", "neutral.blend", "happy.blend", "contact_sheet.png", "curves.png",
             "neutral.npy", "neutral.csv", "happy.npy", "happy.csv"}
    assert names <= {p.name for p in out.iterdir()}
    neutral, happy = np.load(out / "neutral.npy"), np.load(out / "happy.npy")
    jaw = neutral[:, CHANNELS.index("jawOpen")]
    assert jaw.max() - jaw.min() > 0.2  # the mouth opens and closes with the speech
    upper = [CHANNELS.index(n) for n in ("browInnerUp", "browOuterUpLeft", "browOuterUpRight",
                                         "cheekSquintLeft", "cheekSquintRight")]
    assert np.abs(happy[:, upper].mean(0) - neutral[:, upper].mean(0)).max() > 0.05
