"""The add-on's bpy-free logic: name mapping, strip timing, resampling and the backend wrapper
(against the real stdio server with a tiny model). No Blender needed."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blender_addon import backend, checks, mapping, timing, transcripts
from emotalk_core import protocol
from emotalk_core.arkit import CHANNELS
from emotalk_core.controls import Controls, PostProcess
from emotalk_core.inference import Predictor
from tests.conftest import speechlike


# -- name mapping ---------------------------------------------------------------------------------
def apple_raw(name: str) -> str:
    """ARKit's raw values: eyeBlinkLeft -> eyeBlink_L."""
    return re.sub(r"(Left|Right)$", lambda m: "_" + m.group(1)[0], name)


def pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def snake_caps(name: str) -> str:
    """eyeBlinkLeft -> Eye_Blink_Left (Character Creator's numbered ARKit set, sans number)."""
    return "_".join(w.capitalize() for w in re.findall(r"[a-z]+|[A-Z][a-z]*", name))


@pytest.mark.parametrize("convert", [
    lambda n: n,  # ARKit / Ready Player Me / VRoid perfect sync
    apple_raw,  # Apple raw values
    pascal,  # Unreal / Live Link Face
    lambda n: f"A{CHANNELS.index(n) + 1:02d}_{snake_caps(n)}",  # CC4 numbered ARKit set
    lambda n: f"blendShape1.{n}",  # Maya blend-shape node prefix
    lambda n: f"CTRL_expressions_{n}",  # MetaHuman-style curve names
], ids=["arkit", "apple_raw", "pascal", "cc_numbered", "maya_node", "metahuman"])
def test_every_convention_maps_all_52(convert):
    names = [convert(n) for n in CHANNELS]
    result = mapping.build_mapping(["Basis_extra", *names])
    assert result.matched_count == 52
    assert result.unmatched == ()
    assert [result.by_key[convert(n)] for n in CHANNELS] == list(range(52))


def test_character_creator_names_and_unmatched_listing():
    cc = {
        "Brow_Drop_L": "browDownLeft", "Brow_Raise_Outer_R": "browOuterUpRight",
        "Eye_Blink_L": "eyeBlinkLeft", "Eye_L_Look_L": "eyeLookOutLeft",
        "Eye_R_Look_L": "eyeLookInRight", "Eye_R_Look_Down": "eyeLookDownRight",
        "Cheek_Raise_L": "cheekSquintLeft", "Jaw_Open": "jawOpen", "Jaw_L": "jawLeft",
        "Mouth_L": "mouthLeft", "Mouth_Roll_In_Lower": "mouthRollLower",
        "Mouth_Up_Upper_R": "mouthUpperUpRight", "Mouth_Down_Lower_L": "mouthLowerDownLeft",
        "Mouth_Smile_R": "mouthSmileRight", "Tongue_Out": "tongueOut",
    }  # fmt: skip
    result = mapping.build_mapping([*cc, "Brow_Raise_Inner_L", "Cheek_Puff_L", "viseme_aa"])
    assert {k: CHANNELS[i] for k, i in result.by_key.items()} == cc
    assert result.matched_count == len(cc)
    # Many-to-one CC keys stay unmatched until overridden; the listing is in channel order.
    assert "browInnerUp" in result.unmatched and "cheekPuff" in result.unmatched
    assert list(result.unmatched) == [c for c in CHANNELS if c not in cc.values()]


def test_vroid_and_side_spellings():
    result = mapping.build_mapping(["Fcl_EYE_Close_L", "Fcl_EYE_Close_R", "mouthRollLower",
                                    "jaw_open", "browDown.L", "Fcl_MTH_A"])
    named = {k: CHANNELS[i] for k, i in result.by_key.items()}
    assert named == {"Fcl_EYE_Close_L": "eyeBlinkLeft", "Fcl_EYE_Close_R": "eyeBlinkRight",
                     "mouthRollLower": "mouthRollLower", "jaw_open": "jawOpen",
                     "browDown.L": "browDownLeft"}
    # A respelling of the ARKit name outranks an alias, so a perfect-sync VRoid model's
    # eyeBlinkRight drives the channel and Fcl_EYE_Close_R does not blink a second time.
    result = mapping.build_mapping(["Fcl_EYE_Close_R", "eyeBlink.R"])
    assert result.by_key == {"eyeBlink.R": CHANNELS.index("eyeBlinkRight")}


def test_one_key_per_channel_prefers_exact_then_first():
    result = mapping.build_mapping(["EyeBlinkLeft", "eyeBlinkLeft", "eye_blink_left"])
    assert result.by_key == {"eyeBlinkLeft": 8}
    result = mapping.build_mapping(["EyeBlinkLeft", "eye_blink_left"])
    assert result.by_key == {"EyeBlinkLeft": 8}


def test_overrides_win_ignore_and_go_stale():
    keys = ["Brow_Raise_Inner_L", "Brow_Raise_Inner_R", "jawOpen", "Smile", "mouthClose"]
    overrides = {"Brow_Raise_Inner_L": "browInnerUp", "Brow_Raise_Inner_R": "browInnerUp",
                 "Smile": "mouthSmileLeft", "jawOpen": None, "RemovedKey": "tongueOut",
                 "mouthClose": "notAChannel"}
    result = mapping.build_mapping(keys, overrides)
    named = {k: CHANNELS[i] for k, i in result.by_key.items()}
    assert named == {"Brow_Raise_Inner_L": "browInnerUp", "Brow_Raise_Inner_R": "browInnerUp",
                     "Smile": "mouthSmileLeft"}
    assert result.matched_count == 2
    assert "jawOpen" in result.unmatched and "tongueOut" in result.unmatched
    # A channel claimed by an override is not also driven by an automatic match.
    result = mapping.build_mapping(["jawOpen", "JawDrop"], {"JawDrop": "jawOpen"})
    assert result.by_key == {"JawDrop": CHANNELS.index("jawOpen")}


def test_nothing_matches():
    result = mapping.build_mapping(["Key 1", "smile", "A"])
    assert not result and result.matched_count == 0 and len(result.unmatched) == 52


# -- timing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fps", "base", "rate"), [
    (24, 1.001, 24000 / 1001), (24, 1.0, 24.0), (25, 1.0, 25.0), (30, 1.001, 30000 / 1001),
    (60, 1.0, 60.0)])
def test_scene_fps(fps, base, rate):
    assert timing.scene_fps(fps, base) == pytest.approx(rate, rel=1e-12)


def test_scene_fps_refuses_nonsense():
    with pytest.raises(timing.TimingError):
        timing.scene_fps(24, 0.0)


def strip(left, right, content_start=1.0, offset=0.0, duration=None, content_end=None):
    return timing.StripTiming("S", content_start, left, right, offset, duration, content_end)


def test_untrimmed_strip_reads_to_the_file_end():
    w = timing.audible_window(strip(1, 49, duration=2.0, content_end=49), 24.0)
    assert (w.start, w.end, w.first_frame, w.frame_count) == (0.0, None, 1, 48)
    assert w.last_frame == 48


def test_trims_become_seconds_of_the_file():
    # source at frame 10; visible 16..40 (trimmed 6 frames at the start, some at the end)
    w = timing.audible_window(strip(16, 40, content_start=10, duration=2.0, content_end=58), 24.0)
    assert w.start == pytest.approx(6 / 24) and w.end == pytest.approx(30 / 24)
    assert (w.first_frame, w.frame_count) == (16, 24)


def test_sound_offset_and_ntsc_rate():
    rate = 24000 / 1001
    w = timing.audible_window(strip(100, 200, content_start=90, offset=0.5), rate)
    assert w.start == pytest.approx(10 / rate + 0.5)
    assert w.end == pytest.approx(110 / rate + 0.5)


def test_negative_offset_skips_frames_before_the_sound():
    w = timing.audible_window(strip(10, 40, content_start=10, offset=-0.1), 25.0)
    assert w.first_frame == 13 and w.start == pytest.approx(0.02)  # ceil(2.5) frames skipped
    assert w.frame_count == 27


def test_end_past_the_file_is_clamped_to_it():
    w = timing.audible_window(strip(1, 60, content_start=1, duration=2.0), 24.0)
    assert w.end is None and w.frame_count == 48


@pytest.mark.parametrize(("left", "right", "message"), [
    (10, 10, "zero length"), (12, 11, "zero length")])
def test_trimmed_to_nothing(left, right, message):
    with pytest.raises(timing.TimingError, match=message):
        timing.audible_window(strip(left, right), 24.0)


def test_visible_part_after_the_sound():
    with pytest.raises(timing.TimingError, match="none of its sound"):
        timing.audible_window(strip(100, 120, content_start=1, duration=2.0), 24.0)


def test_overlapping_strips_are_refused():
    a = timing.AudioWindow(0.0, None, 1, 48)
    b = timing.AudioWindow(0.0, None, 40, 10)
    timing.check_overlaps([("a", a), ("c", timing.AudioWindow(0.0, None, 49, 5))])
    with pytest.raises(timing.TimingError, match="'a' and 'b' overlap on frames 40-48"):
        timing.check_overlaps([("b", b), ("a", a)])


def test_backend_frames_fit_the_strip():
    """The backend computes the curves at the scene's rate; the strip takes its frame count of
    them, holding the audio's last frame where the strip reaches past it."""
    values = np.arange(4 * 52, dtype=np.float32).reshape(4, 52)
    np.testing.assert_array_equal(backend.fit_frames(values, 3), values[:3])
    longer = backend.fit_frames(values, 6)
    np.testing.assert_array_equal(longer[:4], values)
    np.testing.assert_array_equal(longer[4:], values[[3, 3]])


# -- backend: interpreter, model --------------------------------------------------------
def test_resolve_python_order(monkeypatch, tmp_path):
    monkeypatch.delenv(backend.ENV_PYTHON, raising=False)
    monkeypatch.setenv(backend.ENV_PYTHON, "/env/python")
    assert backend.resolve_python("/prefs/python") == "/env/python"
    monkeypatch.delenv(backend.ENV_PYTHON)
    assert backend.resolve_python("/prefs/python") == "/prefs/python"
    monkeypatch.setattr(backend, "repo_candidates", lambda: [tmp_path])
    assert backend.resolve_python("") == sys.executable
    venv = backend.venv_python(tmp_path)
    venv.parent.mkdir(parents=True)
    venv.write_text("")
    assert backend.resolve_python("") == str(venv)


def test_backend_logs_of_exited_sessions_are_removed_when_a_backend_starts(monkeypatch,
                                                                           tmp_path):
    """The log outlives its session (error messages quote it) until the next one starts."""
    import subprocess

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    folder = tmp_path / "emotalk"
    folder.mkdir()
    names = [f"backend-{exited.pid}.log", f"backend-{os.getppid()}.log", "notes.log"]
    for name in names:
        (folder / name).write_text("a log")
    monkeypatch.setattr(backend.tempfile, "tempdir", str(tmp_path))
    assert backend.default_log_path() == folder / f"backend-{os.getpid()}.log"
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[1:])


def test_resolve_model_order(monkeypatch):
    monkeypatch.delenv(backend.ENV_MODEL, raising=False)
    assert backend.resolve_model("") == "default"
    assert backend.resolve_model("/prefs/model") == "/prefs/model"
    monkeypatch.setenv(backend.ENV_MODEL, "/env/model")
    assert backend.resolve_model("/prefs/model") == "/env/model"


def test_decode_result_reorders_by_name():
    values = np.arange(3 * 52, dtype=np.float32).reshape(3, 52)
    order = list(reversed(CHANNELS))
    result = {"frames": 3, "fps": 30.0, "channels": order, "encoding": "base64-f32le",
              "values": protocol.encode_values(values)}
    decoded = backend.decode_result(result)
    np.testing.assert_array_equal(decoded, values[:, ::-1])
    with pytest.raises(ValueError, match="missing"):
        backend.decode_result({**result, "channels": order[:-1] + ["other"]})


# -- transcripts ----------------------------------------------------------------------------------
def test_the_strip_text_wins_over_the_sidecar_file(tmp_path):
    audio = tmp_path / "line04.wav"
    (tmp_path / "line04.txt").write_text("From the file.", encoding="utf-8")
    chosen = transcripts.choose("  Typed on the strip.\n", audio)
    assert (chosen.text, chosen.source, chosen.warnings) == ("Typed on the strip.", "strip", ())
    for empty in ("", "  \n", None):
        chosen = transcripts.choose(empty, audio)
        assert (chosen.text, chosen.source) == ("From the file.", "file")
        assert chosen.path == tmp_path / "line04.txt"


def test_sidecar_file_is_utf8_named_like_the_audio(tmp_path):
    audio = tmp_path / "take.2.flac"
    assert transcripts.sidecar_path(audio) == tmp_path / "take.2.txt"
    assert transcripts.choose("", audio) == transcripts.Transcript()  # no file: none
    assert transcripts.choose("", None) == transcripts.Transcript()  # no sound path: none
    (tmp_path / "take.2.txt").write_bytes("\ufeffÇa va?\r\n".encode())
    assert transcripts.choose("", audio).text == "Ça va?"
    (tmp_path / "take.2.txt").write_text(" \n", encoding="utf-8")
    assert transcripts.choose("", audio) == transcripts.Transcript()


@pytest.mark.parametrize(("content", "why"), [
    ("Ça va".encode("latin-1"), "not UTF-8"),
    (b"x" * (transcripts.MAX_SIDECAR_BYTES + 1), "more than a line's transcript"),
    (None, "cannot be read"),
])
def test_a_bad_sidecar_file_is_a_warning_not_an_error(tmp_path, monkeypatch, content, why):
    sidecar = tmp_path / "line.txt"
    sidecar.write_bytes(content or b"words")
    if content is None:  # unreadable (chmod does not stop root, so the read fails here)
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "read_text", denied)
    chosen = transcripts.choose(None, tmp_path / "line.wav")
    assert chosen.text is None and len(chosen.warnings) == 1
    assert str(sidecar) in chosen.warnings[0] and why in chosen.warnings[0]


def test_panel_hint_says_what_an_empty_field_means(tmp_path):
    audio = tmp_path / "line.wav"
    assert transcripts.panel_hint("Words.", audio) == ""
    assert transcripts.panel_hint("", audio) == "Empty: type it, or put line.txt beside the audio"
    (tmp_path / "line.txt").write_text("Words.", encoding="utf-8")
    assert transcripts.panel_hint(" ", audio) == "Empty: line.txt beside the audio is used"
    assert "audio alone" in transcripts.panel_hint("", None)


def test_animate_params_carry_the_transcript_only_when_given():
    assert "transcript" not in protocol.animate_params("a.wav")
    assert protocol.animate_params("a.wav", transcript="Hi.")["transcript"] == "Hi."


# -- backend: a real server -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("addon-audio") / "line.wav"
    sf.write(path, speechlike(2.0, seed=5), 16000)
    return path


@pytest.fixture(scope="module")
def live(tiny_model_dir, tmp_path_factory):
    """One real backend for this module (each start imports torch: seconds)."""
    settings = backend.BackendSettings(sys.executable, str(tiny_model_dir), "cpu")
    server = backend.Backend(settings, tmp_path_factory.mktemp("log") / "backend.log")
    yield server
    server.close()


def request(path, start=0.25, end=1.5, frames=30, fps=24.0, label="strip"):
    return backend.AnimateRequest(label, str(path), start, end, frames, fps)


def test_job_matches_predictor(live, clip, tiny_model_dir):
    controls = Controls(level=0.5, person=2, postprocess=PostProcess(seed=3)).to_dict()
    reqs = [request(clip), request(clip, 1.0, None, 24, 25.0, "tail")]
    seen = []
    results = backend.BakeJob(live, reqs, controls).run(on_progress=seen.append)
    assert seen[-1].finished and seen[-1].fraction == 1.0
    predictor = Predictor(tiny_model_dir, device="cpu")
    for req, got in zip(reqs, results, strict=True):
        want = predictor.predict(clip, start=req.start, end=req.end, fps=req.scene_fps,
                                 controls=Controls.from_dict(controls)).values
        assert got.values.shape == (req.frame_count, 52)
        n = min(len(want), req.frame_count)
        np.testing.assert_allclose(got.values[:n], want[:n], atol=1e-5)
        assert set(got.emotion) == {"neutral", "happy", "sad"}


def test_job_sends_each_transcript_and_keeps_the_warnings(live, clip):
    """The tiny model has no phonetic input, so a transcript that reaches it comes back as a
    warning about that strip; the strip without one gets none."""
    reqs = [backend.AnimateRequest("strip 'A'", str(clip), 0.0, 1.0, 24, 24.0, "Some words."),
            backend.AnimateRequest("strip 'B'", str(clip), 0.0, 1.0, 24, 24.0)]
    results = backend.BakeJob(live, reqs, {}).run()
    assert len(results[0].warnings) == 1 and "transcript was ignored" in results[0].warnings[0]
    assert results[1].warnings == [] and results[0].phone_source is None
    np.testing.assert_array_equal(results[0].values, results[1].values)
    assert backend.bake_warnings(results) == [f"strip 'A': {results[0].warnings[0]}"]


def test_results_of_an_older_backend_have_no_warnings():
    assert backend.result_warnings({"frames": 1}) == []
    assert backend.result_warnings({"warnings": None}) == []
    assert backend.result_warnings({"warnings": ["a", 2]}) == ["a", "2"]


def test_job_reports_unreadable_audio_with_the_strip(live, tmp_path, clip):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    job = backend.BakeJob(live, [request(clip), request(bad, label="Broken")], {})
    with pytest.raises(backend.BakeError, match="Broken: ") as info:
        job.run()
    assert job.results == [] and not isinstance(info.value, backend.BakeCancelled)


def test_job_cancel_returns_nothing(live, clip):
    job = backend.BakeJob(live, [request(clip)] * 3, {})
    job.poll()
    job.cancel()
    status = job.poll()
    assert status.finished and isinstance(job.error, backend.BakeCancelled)
    assert job.results == []
    # the backend stays usable after a cancel
    assert backend.BakeJob(live, [request(clip)], {}).run()[0].values.shape == (30, 52)


@pytest.mark.slow  # two backend starts
def test_crash_mid_bake_then_a_fresh_backend(tiny_model_dir, clip, tmp_path):
    session = backend.Session()
    settings = backend.BackendSettings(sys.executable, str(tiny_model_dir), "cpu")
    first = session.ensure(settings, str(tmp_path / "a.log"))
    job = backend.BakeJob(first, [request(clip)] * 50, {})
    deadline = time.monotonic() + 60
    while first.info is None and time.monotonic() < deadline:  # killed once it is working
        job.poll()
        time.sleep(0.02)
    first.client.process.kill()
    with pytest.raises(backend.BakeError, match="backend stopped; nothing was written"):
        job.run()
    assert job.results == []
    second = session.ensure(settings, str(tmp_path / "b.log"))
    assert second is not first and second.alive
    assert backend.BakeJob(second, [request(clip)], {}).run()[0].values.shape == (30, 52)
    session.close()


@pytest.mark.slow  # a backend start
def test_missing_model_folder(tmp_path, clip):
    server = backend.Backend(backend.BackendSettings(sys.executable, str(tmp_path / "nope")),
                             tmp_path / "log.txt")
    try:
        with pytest.raises(backend.BakeError, match="does not exist"):
            backend.BakeJob(server, [request(clip)], {}).run()
    finally:
        server.close()


def test_interpreter_missing_or_without_emotalk_core(tmp_path, clip):
    with pytest.raises(backend.BakeError, match="backend Python not found"):
        backend.Backend(backend.BackendSettings(str(tmp_path / "python"), "default"))
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    os.chmod(bare, 0o755)
    server = backend.Backend(backend.BackendSettings(str(bare), "default"), tmp_path / "l.txt")
    with pytest.raises(backend.BakeError, match="has no emotalk_core"):
        backend.BakeJob(server, [request(clip)], {}).run()
    server.close()


# -- errors in the animator's words (issue 13) ---------------------------------------------------
PREFERENCES = "Edit > Preferences > Add-ons > EmoTalk"
CLI_FLAGS = ("--model", "--device", "--")


class StubClient:
    def __init__(self, tail: str):
        self.tail = tail

    def log_tail(self) -> str:
        return self.tail


class StubBackend:
    """What describe_error reads of a Backend: its settings, its log and the log's tail."""

    def __init__(self, tmp_path: Path, device: str = "auto", tail: str = ""):
        self.settings = backend.BackendSettings("/opt/py/bin/python", "default", device)
        self.log_path = tmp_path / "backend-1.log"
        self.client = StubClient(tail)


def as_received(exc) -> protocol.BackendError:
    """An emotalk_core error as a client receives it from the server (errors.py's fields)."""
    error = protocol.error(1, exc.code, exc.message, exc.detail, exc.kind)["error"]
    return protocol.BackendError.from_error(error, 1)


def received(code: int, message: str, kind: str | None, detail: str | None = None):
    return protocol.BackendError.from_error(
        protocol.error(1, code, message, detail, kind)["error"], 1)


@pytest.fixture
def no_overrides(monkeypatch):
    monkeypatch.delenv(backend.ENV_PYTHON, raising=False)
    monkeypatch.delenv(backend.ENV_MODEL, raising=False)


def test_a_model_error_names_the_model_preference(tmp_path, monkeypatch, no_overrides):
    from emotalk_core import checkpoint
    from emotalk_core.errors import ModelError

    with pytest.raises(ModelError) as missing:
        checkpoint.resolve_model_dir(tmp_path / "no-model")
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_DIR", tmp_path / "not-installed")
    with pytest.raises(ModelError) as no_default:
        checkpoint.resolve_model_dir("default")
    for exc in (missing.value, no_default.value):
        text = backend.describe_error(as_received(exc), StubBackend(tmp_path))
        assert text.startswith(exc.message) and f"Set Model in {PREFERENCES}" in text, text
        assert not any(flag in text for flag in CLI_FLAGS), text
    monkeypatch.setenv(backend.ENV_MODEL, str(tmp_path / "no-model"))
    text = backend.describe_error(as_received(missing.value), StubBackend(tmp_path))
    assert "EMOTALK_MODEL is set and overrides the add-on's preferences" in text, text


def test_a_device_error_names_the_device_preference(tmp_path, no_overrides):
    from emotalk_core.errors import DeviceError
    from emotalk_core.inference import resolve_device

    with pytest.raises(DeviceError) as unknown:
        resolve_device("tpu")
    no_gpu = DeviceError("device 'cuda' was requested but no CUDA GPU is available",
                         "choose the device cpu or auto", cli_hint="use --device cpu or auto")
    for exc in (unknown.value, no_gpu):
        text = backend.describe_error(as_received(exc), StubBackend(tmp_path), "strip 'A'")
        assert text.startswith(f"strip 'A': {exc.message}"), text
        assert f"Choose Device: CPU (or Auto) in {PREFERENCES}" in text, text
        assert not any(flag in text for flag in CLI_FLAGS), text


def test_out_of_memory_suggests_the_cpu_only_off_the_cpu(tmp_path, no_overrides):
    error = received(protocol.OUT_OF_MEMORY, "out of GPU memory", "memory",
                     "run on the CPU or use a shorter clip")
    on_gpu = backend.describe_error(error, StubBackend(tmp_path, "cuda"))
    assert "shorter or fewer strips" in on_gpu and f"Device: CPU in {PREFERENCES}" in on_gpu
    on_cpu = backend.describe_error(received(protocol.OUT_OF_MEMORY, "out of memory", "memory"),
                                    StubBackend(tmp_path, "cpu"))
    assert "shorter or fewer strips" in on_cpu and "Device" not in on_cpu


def test_a_controls_error_points_at_the_panel(tmp_path):
    error = received(protocol.INVALID_PARAMS, "unknown emotion preset 'x'", "controls")
    text = backend.describe_error(error, StubBackend(tmp_path))
    assert text == ("unknown emotion preset 'x'. Check the settings in the EmoTalk tab of the "
                    "3D Viewport's sidebar")


def test_a_missing_dependency_names_the_python_preference_and_the_log(tmp_path, monkeypatch,
                                                                      no_overrides):
    message = "the backend's Python /opt/py/bin/python has no module named 'torch'"
    error = received(protocol.INTERNAL_ERROR, message, "dependency", "install emotalk")
    stub = StubBackend(tmp_path)
    text = backend.describe_error(error, stub)
    assert text.startswith(message) and f"Set Backend Python in {PREFERENCES}" in text, text
    assert "README" in text and text.endswith(f"Log: {stub.log_path}"), text
    assert "bug" not in text
    monkeypatch.setenv(backend.ENV_PYTHON, "/opt/py/bin/python")
    assert "EMOTALK_PYTHON is set" in backend.describe_error(error, stub)


def test_a_bug_says_so_and_where_the_log_is(tmp_path):
    stub = StubBackend(tmp_path)
    for kind in ("internal", None):  # None: a server from before data.kind
        error = received(protocol.INTERNAL_ERROR, "internal error: KeyError: 'x'", kind,
                         "this is a bug in the backend; the backend log (stderr) has the details")
        text = backend.describe_error(error, stub)
        assert text.startswith("internal error: KeyError: 'x'") and "bug" in text, text
        assert text.endswith(f"the log: {stub.log_path}"), text
    assert "the backend's log" in backend.describe_error(error, None)


def test_a_stopped_backend_names_the_log_and_a_missing_module(tmp_path, no_overrides):
    stopped = received(protocol.BACKEND_STOPPED, "backend stopped (exit status 1)", None)
    crashed = StubBackend(tmp_path, tail="Segmentation fault")
    text = backend.describe_error(stopped, crashed, "strip 'A'")
    assert text.startswith("strip 'A': the EmoTalk backend stopped; nothing was written")
    assert f"Log: {crashed.log_path}" in text and "Segmentation fault" in text, text
    for module in ("emotalk_core", "numpy"):
        missing = StubBackend(tmp_path, tail=f"ModuleNotFoundError: No module named '{module}'")
        text = backend.describe_error(stopped, missing)
        assert text.startswith(f"the backend Python /opt/py/bin/python has no {module}. "
                               f"Set Backend Python in {PREFERENCES}"), text
        assert text.endswith(f"Log: {missing.log_path}"), text


def test_kinds_the_add_on_has_no_advice_for_and_older_servers_keep_the_servers_words(tmp_path):
    stub = StubBackend(tmp_path)
    for kind in ("audio", "cancelled", "protocol", "output", "a-future-kind", None):
        error = received(protocol.AUDIO_ERROR, "audio file /a.wav does not exist; check the path",
                         kind, "choose another file")
        assert backend.describe_error(error, stub, "strip 'A'") == (
            "strip 'A': audio file /a.wav does not exist; check the path (choose another file)")


def test_every_kind_on_the_wire_is_one_of_the_documented_set():
    from emotalk_core import errors

    documented = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    assert len(set(errors.KINDS)) == len(errors.KINDS)
    for kind in errors.KINDS:
        assert f"| `{kind}` |" in documented, kind
    classes = [errors.AudioError, errors.ModelError, errors.ResourceError, errors.ControlError,
               errors.DeviceError, errors.OutputError, errors.Cancelled, errors.EmoTalkError]
    assert {cls.kind for cls in classes} <= set(errors.KINDS)


def test_a_backend_without_torch_is_a_dependency_error_with_the_log(tmp_path, clip,
                                                                    no_overrides):
    from tests.no_torch import no_torch_python

    python = str(no_torch_python(tmp_path, sys.executable))
    server = backend.Backend(backend.BackendSettings(python, "default"), tmp_path / "log.txt")
    try:
        with pytest.raises(backend.BakeError) as info:
            backend.BakeJob(server, [request(clip)], {}).run()
    finally:
        server.close()
    text = str(info.value)
    assert text.startswith("the backend's Python ") and "has no module named 'torch'" in text
    assert f"Set Backend Python in {PREFERENCES}" in text, text
    assert text.endswith(f"Log: {tmp_path / 'log.txt'}") and "bug" not in text, text


# -- the extension zip ---------------------------------------------------------------------------
def test_build_addon_zip(tmp_path, capsys):
    import zipfile

    import build_addon
    from emotalk_core import __version__

    assert build_addon.main(["--out", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == str(tmp_path / f"emotalk-{__version__}.zip")
    root = Path(__file__).resolve().parents[1]
    with zipfile.ZipFile(last) as archive:
        names = set(archive.namelist())
        for shared in ("protocol.py", "arkit.py"):  # verbatim copies of the one original
            assert archive.read(shared) == (root / "emotalk_core" / shared).read_bytes()
        manifest = archive.read("blender_manifest.toml").decode()
    assert re.search(rf'^version = "{re.escape(__version__)}"$', manifest, re.MULTILINE)
    assert {"__init__.py", "mapping.py", "timing.py", "backend.py", "anim.py",
            "transcripts.py"} <= names
    assert not any("__pycache__" in n for n in names)


# -- checks before a bake: targets, strip selection, warnings ------------------------------------
def test_linked_shape_keys_are_refused_with_both_fixes():
    problem = checks.target_problem(checks.KeyOwner("Face", library="char.blend",
                                                    read_only=True))
    assert problem.startswith("The shape keys of 'Face' are linked from 'char.blend', so keys "
                              "written to them would not be saved: make them local")
    assert "Object > Relations > Make Local... > Selected Objects and Data" in problem
    assert "Library Override > Make > Selected" in problem


def test_system_overrides_and_read_only_keys_are_refused():
    system = checks.target_problem(checks.KeyOwner("Face", system_override=True))
    assert system.startswith("The shape keys of 'Face' belong to a non-editable library "
                             "override: make the override editable (in the Outliner, "
                             "right-click the mesh data > Library Override > Make > Selected)")
    other = checks.target_problem(checks.KeyOwner("Face", read_only=True))
    assert other.startswith("The shape keys of 'Face' cannot be edited in this file")
    assert checks.target_problem(checks.KeyOwner("Face")) is None


def node(name, kind="SOUND", left=0, right=10, selected=False, mute=None, children=()):
    return checks.StripNode(ref=name, name=name, kind=kind, selected=selected, left=left,
                            right=right, mute=mute, children=tuple(children))


def test_selected_sound_strips_in_timeline_order():
    level = [node("B", left=50, right=60, selected=True), node("A", left=5, right=9,
                                                           selected=True),
             node("C", selected=False), node("Movie", kind="MOVIE", selected=True)]
    selection = checks.select_sounds(level)
    assert [(p.ref, p.left, p.right) for p in selection.picks] == [("A", 5, 9), ("B", 50, 60)]
    assert selection.problem() is None and selection.notes() == []


def test_a_selected_meta_brings_its_sound_clipped_to_its_handles():
    inner = node("Inner", kind="META", left=0, right=100, children=[
        node("Deep", left=30, right=90)])
    meta = node("M", kind="META", left=15, right=50, selected=True, children=[
        node("A", left=10, right=58), node("B", left=30, right=78), node("Late", left=60,
                                                                         right=80),
        inner, node("Image", kind="IMAGE", left=15, right=50)])
    selection = checks.select_sounds([meta])
    assert [(p.name, p.left, p.right) for p in selection.picks] == [
        ("A", 15, 50), ("B", 30, 50), ("Deep", 30, 50)]  # 'Late' is outside the handles


def test_a_meta_that_plays_no_sound_is_named():
    meta = node("M", kind="META", left=0, right=10, selected=True,
                children=[node("Late", left=20, right=30)])
    problem = checks.select_sounds([meta]).problem()
    assert problem.startswith("The selected meta strip 'M' holds no sound strip between its "
                              "handles: ")
    assert checks.select_sounds([]).problem() == checks.NO_STRIPS


def test_muted_strips_are_skipped_with_a_note():
    level = [node("A", selected=True, mute=checks.MUTED),
             node("B", left=20, right=30, selected=True, mute="its channel 2 is muted"),
             node("C", left=40, right=50, selected=True),
             node("M", kind="META", left=60, right=90, selected=True, children=[
                 node("D", left=60, right=70, mute=checks.MUTED), node("E", left=70, right=90)])]
    selection = checks.select_sounds(level)
    assert [p.name for p in selection.picks] == ["C", "E"]
    assert selection.notes() == ["skipped muted strip 'A'",
                                 "skipped muted strip 'B' (its channel 2 is muted)",
                                 "skipped muted strip 'D'"]
    assert selection.problem() is None


def test_all_muted_is_a_refusal_naming_them():
    level = [node("A", selected=True, mute=checks.MUTED),
             node("M", kind="META", selected=True, mute="its channel 3 is muted")]
    assert checks.select_sounds(level).problem() == (
        "The selected sound strips are muted ('A', 'M'): unmute them or their channels, or "
        "select other strips")


def test_inside_an_opened_meta_its_handles_clip_and_its_mute_silences():
    level = [node("A", left=0, right=40, selected=True), node("B", left=50, right=60)]
    picks = checks.select_sounds(level, span=(10, 30)).picks
    assert [(p.name, p.left, p.right) for p in picks] == [("A", 10, 30)]
    silenced = checks.select_sounds(level, span=(10, 30), silenced_by="M")
    assert silenced.notes() == ["skipped muted strip 'A' (meta strip 'M' is muted)"]
    assert silenced.problem().startswith("The selected sound strips are muted ('A')")


def test_clip_timing_narrows_only_the_handles():
    t = timing.StripTiming("A", content_start=10.0, left_handle=10, right_handle=58,
                           sound_offset=0.5, sound_duration=10.0, content_end=58.0)
    pick = checks.SoundPick("A", "A", 15, 50)
    clipped = checks.clip_timing(t, pick)
    assert (clipped.left_handle, clipped.right_handle) == (15, 50)
    assert (clipped.content_start, clipped.sound_offset, clipped.content_end) == (10.0, 0.5,
                                                                                   58.0)
    window = timing.audible_window(clipped, 24.0)
    assert (window.first_frame, window.frame_count) == (15, 35)
    assert window.start == pytest.approx(5 / 24 + 0.5)


def test_another_sequencer_scene_must_share_the_frame_rate():
    assert checks.rate_problem("Scene", 24.0, "Scene", 24.0) is None
    assert checks.rate_problem("Edit", 24.0, "Scene", 24.0) is None
    problem = checks.rate_problem("Edit", 30.0, "Scene", 24000 / 1001)
    assert problem == ("The sequencer shows the scene 'Edit' at 30 fps but 'Scene' plays at "
                       "23.976 fps: give both scenes the same frame rate (Output Properties > "
                       "Format > Frame Rate)")
    assert checks.other_scene_note("Scene", "Scene") is None
    assert "'Edit', not in 'Scene'" in checks.other_scene_note("Edit", "Scene")


def test_driven_shape_keys_are_found_from_driver_paths():
    paths = ['key_blocks["jawOpen"].value', "key_blocks['mouthClose'].value",
             'key_blocks["say \\"ah\\""].value', 'key_blocks["Smile"].slider_max',
             'data.key_blocks["eyeBlink_L"].value', "location"]
    assert checks.driven_keys(paths) == {"jawOpen", "mouthClose", 'say "ah"'}


def test_driver_warning_names_only_mapped_driven_keys():
    assert checks.driver_warning(["jawOpen", "mouthClose"], {"Other"}) is None
    warning = checks.driver_warning(["jawOpen", "mouthClose"], {"mouthClose", "Other"})
    assert warning == ("shape keys driven by drivers do not show the keys EmoTalk writes: "
                       "'mouthClose'; remove their drivers, or set them to (Ignore) in the "
                       "Target panel's overrides")
    many = [f"k{i}" for i in range(9)]
    assert "'k5' and 3 more;" in checks.driver_warning(many, set(many))


def test_few_mouth_shapes_is_a_warning():
    from emotalk_core.arkit import INDEX, MOUTH_CHANNELS

    assert checks.mouth_warning(range(52)) is None
    assert checks.mouth_warning(MOUTH_CHANNELS[:10]) is None
    assert checks.mouth_warning([INDEX["jawOpen"], *range(52, 61)]) is None  # + 9 visemes
    eyes_and_jaw = [INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"], INDEX["jawOpen"]]
    assert checks.mouth_warning(eyes_and_jaw) == (
        f"only 1 mouth shapes matched (of the {len(MOUTH_CHANNELS)} mouth and jaw channels), "
        "so the lips will barely follow the speech; add overrides in the Target panel or "
        "check the shape key names")


def test_panel_lines_wrap_only_messages_with_a_fix():
    short = "Select a mesh with ARKit-style shape keys (no active object)"
    assert checks.panel_lines(short) == [short]
    problem = checks.target_problem(checks.KeyOwner("Face", library="char.blend"))
    lines = checks.panel_lines(problem, width=40)
    assert all(len(line) <= 40 for line in lines)
    assert " ".join(lines) == problem
    assert any(line.endswith("would not be saved:") for line in lines)
    assert lines[lines.index(next(x for x in lines if x.endswith("saved:"))) + 1].startswith(
        "make them local")

