"""Sound that Blender plays and libsndfile does not (Blender): m4a and mov strips bake, the Add
audio operator offers and adds them, and a bad emotion reference clip is reported as the
reference, not as the strip's sound.

The m4a and mov files are encoded with PyAV in the backend's interpreter, which has it (a
dependency of emotalk_core); bpy's own Python needs neither PyAV nor torch, so this runs on every
Blender line, Python 3.13 included.
"""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from emotalk_core.arkit import CHANNELS
from tests.backend_python import ROOT, backend_python, predict
from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    FPS,
    NO_AUDIO,
    OP_ERROR,
    all_keys,
    animate,
    audio,
    bpy,
    build_scene,
    env,
    fcurve_keys,
    raw_name,
    scene,
    strips,
)

pytestmark = pytest.mark.bpy

# build_scene's strips A and B: (first frame, end frame, start s, end s) of what they play.
WINDOWS = [(7, 40, 6 / FPS, 39 / FPS), (60, 90, 0.0, 30 / FPS)]
CHECKED = ("jawOpen", "eyeBlinkLeft", "mouthSmileRight")
WRITE_MEDIA = (
    "import sys\n"
    "from tests.conftest import speechlike\n"
    "from tests.test_audio import write_ffmpeg\n"
    "path, rate, video, sound = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:5])\n"
    "write_ffmpeg(path, speechlike(2.0, seed=7, sr=rate), rate, video=video, audio=sound)\n"
)


def write_media(path: Path, rate: int, video: bool, sound: bool = True) -> Path:
    """Two seconds of speech-like sound as AAC in `path`'s container (a black picture stream
    too for `video`; the picture alone without `sound`), encoded in the backend's interpreter."""
    python = backend_python()
    proc = subprocess.run([python, "-c", WRITE_MEDIA, str(path), str(rate), str(int(video)),
                           str(int(sound))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} could not write {path.name} with PyAV (pip install av "
                           f"there):\n{proc.stdout}{proc.stderr}")
    return path


def error_of(bpy) -> str:
    """The operator's error report; nothing may be written."""
    before = all_keys(bpy)
    with pytest.raises(OP_ERROR) as info:
        animate(bpy)
    assert all_keys(bpy) == before
    return str(info.value)


def assert_baked_like_predictor(bpy, clip: Path, model: Path,
                                windows: list[tuple[int, int, float, float]]) -> None:
    """The keys inside each window equal Predictor's curves for that part of `clip`."""
    for left, right, start, end in windows:
        want = predict(model, clip, start, end, FPS)
        assert want.shape[0] == right - left
        for channel in CHECKED:
            keys = fcurve_keys(bpy, raw_name(channel))
            got = np.array([keys[float(f)] for f in range(left, right)])
            np.testing.assert_allclose(got, want[:, CHANNELS.index(channel)], atol=1e-5)


@pytest.mark.parametrize(("name", "rate", "video"),
                         [("line.m4a", 44100, False), ("take.mov", 48000, True)])
def test_m4a_and_mov_strips_bake(bpy, env, tmp_path, tiny_model_dir, name, rate, video):
    clip = write_media(tmp_path / name, rate, video)
    bpy.ops.wm.read_homefile(use_empty=True)
    build_scene(bpy, clip)
    if NO_AUDIO:
        pytest.skip(f"this bpy build cannot create sound strips: {NO_AUDIO[-1]}")
    assert animate(bpy) == {"FINISHED"}
    assert_baked_like_predictor(bpy, clip, tiny_model_dir, WINDOWS)


def test_add_audio_offers_and_adds_what_blender_plays(bpy, scene, strips, tmp_path,
                                                      tiny_model_dir):
    rna = bpy.ops.emotalk.add_audio.get_rna_type()
    offered = rna.properties["filter_glob"].default.split(";")
    for pattern in ("*.wav", "*.flac", "*.ogg", "*.mp3", "*.aiff", "*.m4a", "*.aac", "*.opus",
                    "*.wma", "*.mp4", "*.mov", "*.mkv", "*.webm", "*.avi"):
        assert pattern in offered, offered
    clip = write_media(tmp_path / "take.mp4", 48000, video=True)
    bpy.context.scene.frame_current = 120
    assert bpy.ops.emotalk.add_audio(filepath=str(clip)) == {"FINISHED"}
    assert animate(bpy) == {"FINISHED"}  # only the new strip is selected: frames 120-167
    assert_baked_like_predictor(bpy, clip, tiny_model_dir, [(120, 168, 0.0, 2.0)])
    assert sorted(fcurve_keys(bpy, "jawOpen"))[-1] == 167.0


def test_reference_clip_in_a_video_is_read(bpy, scene, strips, tmp_path):
    settings = bpy.context.scene.emotalk
    settings.emotion_source = "reference"
    settings.reference = str(write_media(tmp_path / "angry_take.mov", 44100, video=True))
    assert animate(bpy) == {"FINISHED"}


def test_bad_reference_clip_is_named_as_the_reference(bpy, scene, strips, tmp_path):
    bad = tmp_path / "angry_take.m4a"
    bad.write_bytes(np.random.default_rng(8).bytes(4000))
    settings = bpy.context.scene.emotalk
    settings.emotion_source = "reference"
    settings.reference = str(bad)
    message = error_of(bpy)
    assert f"cannot read emotion reference clip {bad} as audio" in message, message
    assert "convert it to WAV/FLAC/MP3/OGG" in message, message

    silent = write_media(tmp_path / "no_sound.mov", 44100, video=True, sound=False)
    settings.reference = str(silent)
    message = error_of(bpy)
    assert f"emotion reference clip {silent} has no audio stream" in message, message

    settings.emotion_source = "audio"  # the same bad file as the strips' sound: no reference
    for sound in bpy.data.sounds:
        sound.filepath = str(bad)
    message = error_of(bpy)
    assert f"cannot read {bad} as audio" in message and "strip '" in message, message
    assert "emotion reference clip" not in message, message

