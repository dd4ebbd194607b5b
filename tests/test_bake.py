"""`emotalk bake`: the add-on's own operator over .blend files, headless.

The bpy tests build .blend files here (a mesh whose shape keys use Live Link Face's PascalCase,
sound strips from generated audio, 25 fps so curves are resampled), run the command through
`cli.main` (which bakes in a worker process) and as a real subprocess (exit status, one backend
for a batch, a file that crashes Blender's reader), and compare the saved keys with
`Predictor`. Selected with `pytest -m bpy
tests/test_bake.py` (bpy loads once per process); skipped with the reason when bpy is missing.
The output-planning and controls tests need no bpy and run in the default selection.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blender_addon.headless import bake, blender, panel
from emotalk_core import controls
from emotalk_core.arkit import CHANNELS
from emotalk_core.cli import build_parser, controls_from_args, main
from emotalk_core.controls import Controls
from emotalk_core.errors import ControlError, OutputError
from emotalk_core.inference import Predictor
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
    assert panel.panel_values(controls_of()) == {
        "emotion_source": "audio", "strength": 1.0, "level": 1.0, "person": 0,
        "use_second_person": False, "smooth": True, "blinks": True, "seed": 0, "clamp": True,
        "mouth_amplitude": 1.0, "recognize_words": True}
    assert panel.panel_values(controls_of("--no-recognize-words"))["recognize_words"] is False
    mixed = panel.panel_values(controls_of("--person-weights", "7:3,3:1", "--emotion", "sad"))
    assert (mixed["person"], mixed["second_person"], mixed["person_mix"]) == (3, 7, 0.75)
    assert mixed["preset"] == "sad" and mixed["emotion_source"] == "preset"
    raw = panel.panel_values(controls_of("--no-postprocess"))
    assert not (raw["smooth"] or raw["blinks"] or raw["clamp"])
    assert controls.differences(controls_of("--no-postprocess"), Controls.from_dict(
        {"postprocess": {"smooth": False, "blinks": False, "clamp": False, "seed": 4}})) == []
    assert controls.differences(controls_of("--level", "0.3"),
                                      Controls(level=0.30000001192092896)) == []
    assert controls.differences(controls_of("--person", "30"), Controls(person=23)) == [
        "persons"]
    for argv, message in ((("--person-weights", "1:1,2:1,3:1"), "at most two"),
                          (("--emotion", "bored"), "no emotion preset"),
                          (("--person", "24"), "out of range")):
        with pytest.raises(ControlError, match=message):
            panel.panel_values(controls_of(*argv))


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


# -- the batch's worker processes, with a stand-in for Blender ----------------------------------
# The real worker with its bpy work replaced: "crash*" files kill it with SIGSEGV halfway
# through a save (as a damaged .blend kills Blender's reader), "slow*" files wait to be
# interrupted after writing a marker.
STUB_WORKER = """
import os, signal, sys, time
from pathlib import Path
from blender_addon.headless import bake
from emotalk_core import files

def setup(settings, controls):
    return None, "stub"

def bake_each(bpy, addon, jobs, todo, settings, report):
    for index in todo:
        report.send(event="start", index=index)
        job = jobs[index]
        if job.source.name.startswith("crash"):
            fd, _ = files.new_partial(job.output, ".blend")
            os.write(fd, b"half a file")
            os.kill(os.getpid(), signal.SIGSEGV)
        if job.source.name.startswith("slow"):
            Path(os.environ["STUB_MARKER"]).write_text("waiting")
            time.sleep(60)
        job.output.write_text("baked " + job.source.name)
        report.send(event="result", index=index, summary=f"stub {os.getpid()}", error=None,
                    warnings=[])

bake.setup_worker, bake.bake_in_worker = setup, bake_each
sys.exit(bake.worker_main(sys.argv[1:]))
"""


@pytest.fixture
def stub_batch(tmp_path, monkeypatch):
    """(run, folder): run(names) bakes files of those names through the stub worker; every
    temporary folder goes under folder/"tmp", which must end empty."""
    stub = tmp_path / "stub_worker.py"
    stub.write_text(STUB_WORKER)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("STUB_MARKER", str(tmp_path / "marker"))

    def run(names: list[str]) -> tuple[bake.BatchResult, list[bake.FileJob]]:
        sources = []
        for name in names:
            sources.append(tmp_path / name)
            sources[-1].write_bytes(b"BLENDER-" + name.encode())
        jobs = bake.plan_jobs(sources)
        settings = bake.BakeSettings(panel={}, addon=tmp_path / "unused.zip")
        return bake.bake_files(jobs, settings, Controls(),
                               worker=[sys.executable, str(stub)]), jobs

    return run, tmp_path


def test_a_file_that_crashes_the_worker_is_reported_and_the_batch_goes_on(stub_batch):
    run, folder = stub_batch
    batch, jobs = run(["a.blend", "crash.blend", "c.blend"])
    assert [r.job.source.name for r in batch.results] == ["a.blend", "crash.blend", "c.blend"]
    a, crash, c = batch.results
    assert a.error is None and c.error is None and not batch.interrupted
    assert crash.error.startswith("Blender crashed while opening or baking this file "
                                  "(signal SIGSEGV)")
    assert a.summary != c.summary  # c.blend was baked by a fresh worker
    assert (folder / "c.emotalk.blend").read_text() == "baked c.blend"
    assert not (folder / "crash.emotalk.blend").exists()
    for job in jobs:  # inputs untouched
        assert job.source.read_bytes() == b"BLENDER-" + job.source.name.encode()
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert hidden == [], "partial file of the crashed save left behind"
    assert list((folder / "tmp").iterdir()) == [], "temporary folders left behind"


def test_a_crashing_file_is_one_error_line_and_exit_status_1(stub_batch, capsys, monkeypatch):
    run, folder = stub_batch
    real = bake.bake_files
    stub = [sys.executable, str(folder / "stub_worker.py")]
    monkeypatch.setattr(bake, "bake_files", lambda *a, **k: real(*a, **k, worker=stub))
    for name in ("a.blend", "crash.blend"):
        (folder / name).write_bytes(b"BLENDER")
    code = main(["bake", str(folder / "a.blend"), str(folder / "crash.blend")])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"baked {folder / 'a.blend'} -> " in out
    assert err.splitlines() == [
        f"emotalk: error: {folder / 'crash.blend'}: Blender crashed while opening or baking "
        "this file (signal SIGSEGV); the file may be damaged (the other files are baked in a "
        "new process)", "emotalk: 1 of 2 file(s) failed; 1 baked"]


def test_ctrl_c_reaches_the_worker_through_the_batch(stub_batch):
    """The worker has a session of its own, so the parent passes Ctrl-C on: the running file
    is not written, the batch reports an interruption, nothing is left behind."""
    run, folder = stub_batch

    def interrupt_when_waiting() -> None:
        deadline = time.monotonic() + 60
        while not (folder / "marker").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_waiting, daemon=True).start()
    batch, _ = run(["a.blend", "slow.blend", "c.blend"])
    assert batch.interrupted
    assert [r.job.source.name for r in batch.results] == ["a.blend"]
    assert not (folder / "slow.emotalk.blend").exists()
    assert not (folder / "c.emotalk.blend").exists()
    assert list((folder / "tmp").iterdir()) == []


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
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's usual permissions


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
    blender.ensure_addon(bpy)  # the bake ran in a worker process: read its settings here too
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
    blender.ensure_addon(bpy)  # the bake ran in a worker process: read its properties here too
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
def test_the_bake_reads_the_operators_outcome_and_the_reports_stay(bpy, clips, tmp_path,
                                                                   tiny_model_dir):
    """One file's Animate step in this process: its summary and warnings are the Outcome the
    operator recorded, and Blender still prints the same reports ("EmoTalk: " + each text);
    a failure is the Outcome's error."""
    scene = build_blend(bpy, tmp_path / "shot.blend", clips["line"])
    (tmp_path / "line.txt").write_text("The selected strip's line.", encoding="utf-8")
    addon = blender.ensure_addon(bpy)
    operators = blender.addon_module(addon, "operators")
    settings = bake.BakeSettings(panel={}, model=str(tiny_model_dir), device="cpu")
    log: list[str] = []
    with bake.backend_environment(bpy, addon, settings):
        blender.open_blend(bpy, scene, log)
        bake.pick_target(bpy, addon, None)
        summary, warnings = bake.animate(bpy, addon, log)
        outcome = operators.last_outcome()
        assert (outcome.summary, list(outcome.warnings), outcome.error) == (
            summary, warnings, None)
        frames = Predictor(tiny_model_dir, device="cpu").predict(clips["line"], fps=FPS).values
        assert summary.startswith(f"animated 52 shape keys of 'Face' (52/52 channels) on "
                                  f"frames {LINE_FRAME}-{LINE_FRAME + len(frames) - 1}; "
                                  "Line: speech emotion ")
        assert len(warnings) == 1 and warnings[0].startswith("strip 'Line': ")
        assert "transcript was ignored" in warnings[0]
        printed = log[-1].splitlines()
        assert f"Info: EmoTalk: {summary}" in printed
        assert f"Warning: EmoTalk: {warnings[0]}" in printed

        (tmp_path / "line.wav").unlink()
        blender.open_blend(bpy, scene, log)
        bake.pick_target(bpy, addon, None)
        with pytest.raises(blender.SceneError, match="sound file not found") as failed:
            bake.animate(bpy, addon, log)
    failure = operators.last_outcome()
    assert failure is not outcome and (failure.summary, failure.warnings) == ("", ())
    assert failed.value.message == failure.error
    assert f"Error: {failure.error}" in log[-1].splitlines()


@pytest.mark.bpy
def test_a_refusal_longer_than_blenders_poll_message_arrives_whole(bpy, clips, tmp_path,
                                                                    tiny_model_dir):
    """Blender cuts a failed poll's message at 200 characters; the bake reports the add-on's
    whole reason."""
    scene = build_blend(bpy, tmp_path / "shot.blend", clips["line"])
    addon = blender.ensure_addon(bpy)
    operators = blender.addon_module(addon, "operators")
    settings = bake.BakeSettings(panel={}, model=str(tiny_model_dir), device="cpu")
    log: list[str] = []
    with bake.backend_environment(bpy, addon, settings):
        blender.open_blend(bpy, scene, log)
        bake.pick_target(bpy, addon, None)
        for strip, letter in zip(bpy.context.scene.sequence_editor.strips, "LO", strict=True):
            strip.name, strip.select, strip.mute = letter * 60, True, True
        reason = operators.unavailable_reason(bpy.context)
        assert len(reason) > 200 and reason.endswith("select other strips")
        with pytest.raises(blender.SceneError) as refused:
            bake.animate(bpy, addon, log)
    assert refused.value.message == reason


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


# -- a .blend that crashes Blender's reader -------------------------------------------------------
def blend_blocks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(code, offset of the data, length) of each block of an uncompressed .blend: the header
    "BLENDER17-01v0500" (Blender 5) has 32-byte block headers, "BLENDER-v405" 24-byte ones."""
    large = data[7:9] == b"17"
    pos = 17 if large else 12
    while pos < len(data):
        if large:
            code, _sdna, _old, length, _nr = struct.unpack_from("<4siQqq", data, pos)
            pos += 32
        else:
            code, length, _old, _sdna, _nr = struct.unpack_from("<4siQii", data, pos)
            pos += 24
        yield code, pos, length
        if code == b"ENDB":
            return
        pos += length


def struct_field_offset(data: bytes, struct_name: str, field_name: str) -> int:
    """Byte offset of a field inside a struct, from the file's own SDNA (DNA1 block)."""
    dna = next(data[p:p + n] for code, p, n in blend_blocks(data) if code == b"DNA1")
    pos, tables = 8, {}
    for key in ("NAME", "TYPE"):
        count = struct.unpack_from("<i", dna, pos)[0]
        pos, items = pos + 4, []
        for _ in range(count):
            end = dna.index(b"\0", pos)
            items.append(dna[pos:end].decode())
            pos = end + 1
        tables[key] = items
        pos = (pos + 3) & ~3
        pos += 4  # the next table's tag
    lengths = struct.unpack_from(f"<{len(tables['TYPE'])}h", dna, pos)
    pos = ((pos + 2 * len(lengths) + 3) & ~3) + 4  # past "STRC"
    count = struct.unpack_from("<i", dna, pos)[0]
    pos += 4
    for _ in range(count):
        type_index, nfields = struct.unpack_from("<hh", dna, pos)
        members = struct.unpack_from(f"<{2 * nfields}h", dna, pos + 4)
        pos += 4 + 4 * nfields
        if tables["TYPE"][type_index] != struct_name:
            continue
        offset = 0
        for member_type, member_name in zip(members[::2], members[1::2], strict=True):
            name = tables["NAME"][member_name]
            size = 8 if name.startswith(("*", "(*")) else lengths[member_type]
            for dim in re.findall(r"\[(\d+)\]", name):
                size *= int(dim)
            if re.sub(r"\[.*", "", name.lstrip("*")) == field_name:
                return offset
            offset += size
    raise KeyError(f"{struct_name}.{field_name}")


def damage_shape_keys(path: Path) -> None:
    """Point the runtime data of the shape-key datablock somewhere that does not exist: a
    damage that makes Blender 5.0's reader crash (SIGSEGV) while opening the file."""
    data = bytearray(path.read_bytes())
    assert data.startswith(b"BLENDER"), "compressed .blend: cannot patch it"
    offset = struct_field_offset(bytes(data), "ID", "runtime")
    start = next(p for code, p, _ in blend_blocks(bytes(data)) if code == b"KE\0\0")
    data[start + offset:start + offset + 8] = struct.pack("<Q", 0xDEAD0000)
    path.write_bytes(bytes(data))


def crashes_blender(path: Path, tmp: Path) -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1],"
         " load_ui=False)", str(path)], capture_output=True, timeout=120,
        env=dict(os.environ, BLENDER_USER_RESOURCES=str(tmp), TMPDIR=str(tmp)))
    return probe.returncode < 0


@pytest.mark.bpy
@pytest.mark.slow
def test_a_batch_survives_a_file_that_crashes_blenders_reader(bpy, clips, tiny_model_dir,
                                                              tmp_path):
    """A real damaged .blend that kills Blender's reader with SIGSEGV: the files before and
    after it are baked, it is reported as crashed, and no temporary folder or partial file is
    left."""
    files = [build_blend(bpy, tmp_path / f"{name}.blend", clips["line"])
             for name in ("a", "bad", "c")]
    bpy.ops.wm.open_mainfile(filepath=str(files[1]), load_ui=False)
    bpy.ops.wm.save_as_mainfile(filepath=str(files[1]), compress=False)  # patchable
    damage_shape_keys(files[1])
    (tmp_path / "probe").mkdir()
    if not crashes_blender(files[1], tmp_path / "probe"):
        pytest.skip("this Blender reads the damaged file without crashing")
    before = {f: digest(f) for f in files}
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "emotalk_core", "bake", *map(str, files),
                           "--model", str(tiny_model_dir)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("emotalk: error")]
    assert errors == [f"emotalk: error: {files[1]}: Blender crashed while opening or baking "
                      "this file (signal SIGSEGV); the file may be damaged (the other files "
                      "are baked in a new process)"], proc.stderr
    assert "1 of 3 file(s) failed; 2 baked" in proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.emotalk.blend")) == [
        "a.emotalk.blend", "c.emotalk.blend"]
    assert {f: digest(f) for f in files} == before
    assert not list(tmp_path.glob(".*")), "partial files left behind"
    leftovers = [p for p in (tmp_path / "tmp").iterdir() if p.name != "emotalk"]
    assert leftovers == [], "temporary folders left behind"
