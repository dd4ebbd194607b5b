"""`emotalk bake`: the add-on's own operator over .blend files, headless.

The bpy tests build .blend files here (a mesh whose shape keys use Live Link Face's PascalCase,
sound strips from generated audio, 25 fps so curves are resampled), run the command in this
process through `cli.main` and once as a real subprocess (exit status, one backend for a
batch), and compare the saved keys with `Predictor`. Selected with `pytest -m bpy
tests/test_bake.py` (bpy loads once per process); skipped with the reason when bpy is missing.
The output-planning and controls tests need no bpy and run in the default selection.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core import bake
from emotalk_core.arkit import CHANNELS
from emotalk_core.cli import build_parser, controls_from_args, main
from emotalk_core.errors import ControlError, OutputError
from emotalk_core.inference import Controls, Predictor
from tests.conftest import speechlike

FPS = 25
LINE_FRAME = 10  # where the selected strip "Line" starts
CHECKED = ("jawOpen", "eyeBlinkLeft", "mouthSmileRight")
ROOT = Path(__file__).resolve().parents[1]


def pascal(channel: str) -> str:
    """Live Link Face / Unreal spelling: jawOpen -> JawOpen."""
    return channel[0].upper() + channel[1:]


# -- without bpy: output planning and controls ----------------------------------------------------
def test_outputs_never_overwrite_the_input_unless_asked(tmp_path):
    a, b = tmp_path / "a.blend", tmp_path / "sub" / "b.blend"
    with pytest.raises(OutputError, match="does not exist"):
        bake.plan_jobs([a, b])  # b's folder is missing
    (tmp_path / "sub").mkdir()
    assert [j.output.name for j in bake.plan_jobs([a, b])] == ["a.emotalk.blend",
                                                              "b.emotalk.blend"]
    assert bake.plan_jobs([a], in_place=True)[0].output == a
    for kwargs, message in (({"output": str(a)}, "is the input file"),
                            ({"out_dir": str(tmp_path)}, "is the input file"),
                            ({"output": str(tmp_path / "x.txt")}, "must end in .blend"),
                            ({"out_dir": str(tmp_path / "none")}, "does not exist")):
        with pytest.raises(OutputError, match=message):
            bake.plan_jobs([a], **kwargs)
    with pytest.raises(OutputError, match="use --out-dir"):
        bake.plan_jobs([a, b], output=str(tmp_path / "x.blend"))
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="would both be written"):
        bake.plan_jobs([a, tmp_path / "sub" / "a.blend"], out_dir=str(tmp_path / "out"))


def controls_of(*argv: str) -> Controls:
    return controls_from_args(build_parser().parse_args(["bake", "x.blend", *argv]))


def test_panel_values_hold_the_cli_controls_or_refuse():
    assert bake.panel_values(controls_of()) == {
        "emotion_source": "audio", "strength": 1.0, "level": 1.0, "person": 0,
        "use_second_person": False, "smooth": True, "blinks": True, "seed": 0, "clamp": True,
        "mouth_amplitude": 1.0}
    mixed = bake.panel_values(controls_of("--person-weights", "7:3,3:1", "--emotion", "sad"))
    assert (mixed["person"], mixed["second_person"], mixed["person_mix"]) == (3, 7, 0.75)
    assert mixed["preset"] == "sad" and mixed["emotion_source"] == "preset"
    raw = bake.panel_values(controls_of("--no-postprocess"))
    assert not (raw["smooth"] or raw["blinks"] or raw["clamp"])
    assert bake.controls_differences(controls_of("--no-postprocess"), Controls.from_dict(
        {"postprocess": {"smooth": False, "blinks": False, "clamp": False, "seed": 4}})) == []
    assert bake.controls_differences(controls_of("--level", "0.3"),
                                     Controls(level=0.30000001192092896)) == []
    assert bake.controls_differences(controls_of("--person", "30"), Controls(person=23)) == [
        "persons"]
    for argv, message in ((("--person-weights", "1:1,2:1,3:1"), "at most two"),
                          (("--emotion", "bored"), "no emotion preset"),
                          (("--person", "24"), "out of range")):
        with pytest.raises(ControlError, match=message):
            bake.panel_values(controls_of(*argv))


def test_transcripts_pair_with_the_audio_files_in_order(tmp_path, tiny_model_dir):
    from emotalk_core.cli import bake_transcripts

    (tmp_path / "b.txt").write_text("Second line.\n", encoding="utf-8")
    wavs = [tmp_path / n for n in ("a.wav", "b.wav", "c.wav")]
    for wav in wavs:
        sf.write(wav, speechlike(0.2), 16000)
    args = build_parser().parse_args([
        "bake", "x.blend", "--audio", str(wavs[0]), "--transcript", "First line.",
        "--audio", str(wavs[1]), "--transcript-file", str(tmp_path / "b.txt"),
        "--audio", str(wavs[2]), "--transcript", ""])
    assert bake_transcripts(args) == ("First line.", "Second line.", "")
    settings = bake.BakeSettings(panel={}, audio=tuple(wavs), model=str(tiny_model_dir),
                                 transcripts=bake_transcripts(args))
    bake.check_inputs(settings)  # one per --audio: fine
    assert bake_transcripts(build_parser().parse_args(["bake", "x.blend"])) == ()
    for wrong in (("only one",), ("1", "2", "3", "4")):
        with pytest.raises(ControlError, match=r"one --transcript or --transcript-file per"):
            bake.check_inputs(bake.BakeSettings(panel={}, audio=tuple(wavs), transcripts=wrong,
                                                model=str(tiny_model_dir)))
    with pytest.raises(ControlError, match=r"1 transcript\(s\) for 0 --audio"):
        bake.check_inputs(bake.BakeSettings(panel={}, transcripts=("x",),
                                            model=str(tiny_model_dir)))


def test_bake_transcript_file_problems_fail_before_any_file(capsys, tmp_path):
    code = main(["bake", str(tmp_path / "x.blend"), "--audio", "a.wav", "--transcript-file",
                 str(tmp_path / "none.txt")])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == f"emotalk: error: transcript file not found: " \
        f"{tmp_path / 'none.txt'}"


# -- with bpy -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpy(tmp_path_factory):
    if "bpy" not in sys.modules:
        os.environ["BLENDER_USER_RESOURCES"] = str(tmp_path_factory.mktemp("blender-user"))
    return pytest.importorskip("bpy", reason="bpy is not installed (pip install bpy==5.0.1)")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bake-audio")
    out = {}
    for name, seconds, seed in (("line", 1.2, 1), ("extra1", 0.8, 2), ("extra2", 0.6, 3)):
        out[name] = folder / f"{name}.wav"
        sf.write(out[name], speechlike(seconds, seed=seed), 16000)
    return out


def build_blend(bpy, path: Path, clip: Path, shape_keys: bool = True) -> Path:
    """A scene at 25 fps: "Face" (Basis + 52 PascalCase keys), "Ground" (no keys, active), the
    selected strip "Line" at frame 10 and the unselected "Other" at 200; the sound path is
    relative to the .blend."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    for name in ("Ground", "Face"):
        mesh = bpy.data.meshes.new(name)
        mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
        scene.collection.objects.link(bpy.data.objects.new(name, mesh))
    face = bpy.data.objects["Face"]
    if shape_keys:
        face.shape_key_add(name="Basis")
        for channel in CHANNELS:
            face.shape_key_add(name=pascal(channel))
    bpy.context.view_layer.objects.active = bpy.data.objects["Ground"]
    local = path.parent / clip.name
    if not local.exists():
        local.write_bytes(clip.read_bytes())
    strips = scene.sequence_editor_create().strips
    strips.new_sound("Line", str(local), 1, LINE_FRAME).select = True
    strips.new_sound("Other", str(local), 2, 200).select = False
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.file.make_paths_relative()
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def keys_of(bpy, blend: Path | None, channel: str) -> dict[float, float]:
    """Frame -> value of the channel's shape-key curve in a saved file (None: the open one)."""
    if blend is not None:
        bpy.ops.wm.open_mainfile(filepath=str(blend), load_ui=False)
    key = bpy.data.objects["Face"].data.shape_keys
    anim = key.animation_data
    if anim is None or anim.action is None:
        return {}
    path = f'key_blocks["{pascal(channel)}"].value'
    if hasattr(anim, "action_slot"):
        from bpy_extras.anim_utils import action_get_channelbag_for_slot

        bag = action_get_channelbag_for_slot(anim.action, anim.action_slot)
        curve = bag.fcurves.find(path) if bag is not None else None
    else:
        curve = anim.action.fcurves.find(path)
    return {} if curve is None else {k.co[0]: k.co[1] for k in curve.keyframe_points}


def expect_keys(bpy, blend: Path, first: int, want: np.ndarray) -> None:
    """Keys on frames first.. first+len(want)-1 equal `want` on the checked channels."""
    bpy.ops.wm.open_mainfile(filepath=str(blend), load_ui=False)
    for channel in CHECKED:
        keys = keys_of(bpy, None, channel)
        frames = [float(f) for f in range(first, first + want.shape[0])]
        assert set(frames) <= set(keys), (channel, sorted(keys)[:3])
        got = np.array([keys[f] for f in frames])
        np.testing.assert_allclose(got, want[:, CHANNELS.index(channel)], atol=1e-4)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.bpy
def test_bake_writes_the_predictor_curves_to_a_copy(bpy, clips, tiny_model_dir, tmp_path,
                                                    capsys):
    scene = build_blend(bpy, tmp_path / "shot.blend", clips["line"])
    before = (digest(scene), scene.stat().st_mtime_ns)
    code = main(["bake", str(scene), "--model", str(tiny_model_dir), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    output = tmp_path / "shot.emotalk.blend"
    assert f"baked {scene} -> {output}" in out and "52/52 channels" in out
    assert (digest(scene), scene.stat().st_mtime_ns) == before
    want = Predictor(tiny_model_dir, device="cpu").predict(clips["line"], fps=FPS).values
    expect_keys(bpy, output, LINE_FRAME, want)
    jaw = keys_of(bpy, output, "jawOpen")
    assert sorted(jaw) == [float(f) for f in range(LINE_FRAME, LINE_FRAME + want.shape[0])]
    assert keys_of(bpy, scene, "jawOpen") == {}
    made = {p.name for p in tmp_path.iterdir()} - {"line.wav", "shot.blend", "shot.blend1"}
    assert made == {"shot.emotalk.blend"}  # and no temporary file left


@pytest.mark.bpy
def test_audio_strips_are_added_one_after_another_and_baked(bpy, clips, tiny_model_dir,
                                                             tmp_path, capsys):
    scene = build_blend(bpy, tmp_path / "rig.blend", clips["line"])
    out_dir = tmp_path / "baked"
    out_dir.mkdir()
    code = main(["bake", str(scene), "--audio", str(clips["extra1"]), "--audio",
                 str(clips["extra2"]), "--frame", "40", "--out-dir", str(out_dir),
                 "--model", str(tiny_model_dir), "--level", "0.5", "--no-blinks",
                 "--strips", "Line"])  # the added strips and "Line", not "Other"
    assert code == 0, capsys.readouterr().err
    output = out_dir / "rig.blend"
    predictor = Predictor(tiny_model_dir, device="cpu")
    controls = Controls.from_dict({"level": 0.5, "postprocess": {"blinks": False}})
    line, first, second = (predictor.predict(clips[name], fps=FPS, controls=controls).values
                           for name in ("line", "extra1", "extra2"))
    expect_keys(bpy, output, LINE_FRAME, line)
    expect_keys(bpy, output, 40, first)
    expect_keys(bpy, output, 40 + first.shape[0], second)
    assert len(keys_of(bpy, output, "jawOpen")) == len(line) + len(first) + len(second)
    strips = {s.name: s for s in bpy.context.scene.sequence_editor.strips}
    assert {"extra1", "extra2", "Line", "Other"} <= set(strips)
    assert (strips["extra1"].frame_final_start, strips["extra2"].frame_final_start) == (
        40, 40 + first.shape[0])
    line = Path(bpy.path.abspath(strips["Line"].sound.filepath))  # relative path remapped
    assert line.resolve() == (tmp_path / "line.wav").resolve()
    assert bpy.context.scene.emotalk.level == pytest.approx(0.5)  # the settings are saved too


@pytest.mark.bpy
def test_transcripts_go_onto_the_added_strips_and_warnings_are_printed(bpy, clips, tmp_path,
                                                                       tiny_model_dir, capsys):
    scene = build_blend(bpy, tmp_path / "rig.blend", clips["line"])
    (tmp_path / "line.txt").write_text("The selected strip's line.", encoding="utf-8")
    (tmp_path / "second.txt").write_text("Second added line.", encoding="utf-8")
    code = main(["bake", str(scene), "--strips", "Line", "--frame", "40", "--model",
                 str(tiny_model_dir),
                 "--audio", str(clips["extra1"]), "--transcript", "First added line.",
                 "--audio", str(clips["extra2"]), "--transcript-file",
                 str(tmp_path / "second.txt")])
    out, err = capsys.readouterr()
    assert code == 0, err
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "rig.emotalk.blend"), load_ui=False)
    strips = bpy.context.scene.sequence_editor.strips
    assert {n: strips[n].emotalk_transcript for n in ("Line", "extra1", "extra2")} == {
        "Line": "", "extra1": "First added line.", "extra2": "Second added line."}
    # The tiny model ignores transcripts with a warning, so each one reached the backend: the
    # two given here, and line.txt beside the selected strip's audio.
    warned = [line for line in err.splitlines() if line.startswith("emotalk: warning: ")]
    assert [w.split(": ")[3] for w in warned] == ["strip 'Line'", "strip 'extra1'",
                                                  "strip 'extra2'"], (out, err)
    assert all(f": {scene}: " in w and "transcript was ignored" in w for w in warned)


@pytest.mark.bpy
def test_a_batch_goes_past_bad_files_and_reports_them(bpy, clips, tiny_model_dir, tmp_path):
    """A real `python -m emotalk_core bake` process: one backend for the batch, every failure
    listed with exit status 1, and no output (complete or partial) for a failed file."""
    good = [build_blend(bpy, tmp_path / f"good{i}.blend", clips["line"]) for i in (1, 2)]
    plain = build_blend(bpy, tmp_path / "plain.blend", clips["line"], shape_keys=False)
    silent = build_blend(bpy, tmp_path / "silent.blend", clips["extra1"])
    (tmp_path / "extra1.wav").unlink()  # its strip's sound file is gone
    text = tmp_path / "notes.blend"
    text.write_text("not a blend file")
    missing = tmp_path / "missing.blend"
    files = [good[0], missing, text, plain, silent, good[1]]
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(ROOT))
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "emotalk_core", "bake", *map(str, files),
                           "--model", str(tiny_model_dir)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("emotalk: error")]
    assert len(errors) == 4, proc.stderr
    for path, message in ((missing, "file not found"), (text, "cannot open notes.blend"),
                          (plain, "no mesh with shape keys"), (silent, "sound file not found")):
        assert any(f"{path}: " in line and message in line for line in errors), (message, errors)
    assert "4 of 6 file(s) failed; 2 baked" in proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.emotalk.blend")) == [
        "good1.emotalk.blend", "good2.emotalk.blend"]
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    logs = list((tmp_path / "tmp" / "emotalk").glob("backend-*.log"))  # named after the pid
    assert len(logs) == 1 and logs[0].read_text().count("loaded model") == 1  # one backend
