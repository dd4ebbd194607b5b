"""What an animator reads when the add-on's settings are wrong (issue 13): a missing model folder
and a backend Python without torch, set in the add-on's preferences or the environment, reported
by Animate from Audio (its recorded outcome, as reported) and by Check Backend (its preferences
box). Each names the setting to change where the animator is, never a command-line flag, and
says where the backend's log is when the log has the cause.

bpy loads once per process, so this file runs in a pytest process of its own (the Makefile).
Selected with `-m bpy`; skipped when bpy is not installed. The backend runs in the interpreter
tests/backend_python.py names (bpy's own Python may have no torch).
"""

# The bpy fixture comes from test_addon_bpy and is named again as a test parameter.
# ruff: noqa: F811
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import soundfile as sf

from tests.backend_python import backend_python
from tests.conftest import speechlike
from tests.no_torch import no_torch_python
from tests.test_addon_bpy import ADDON, bpy  # noqa: F401  (the fixture)

pytestmark = pytest.mark.bpy

PREFERENCES = "Edit > Preferences > Add-ons > EmoTalk"
CLI_FLAGS = ("--model", "--device")
NO_AUDIO: list[str] = []  # why this bpy cannot make sound strips, if it cannot


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def prefs(bpy, monkeypatch):
    """The add-on's preferences, emptied of the environment's overrides, restored afterwards."""
    monkeypatch.delenv("EMOTALK_PYTHON", raising=False)
    monkeypatch.delenv("EMOTALK_MODEL", raising=False)
    found = bpy.context.preferences.addons[ADDON].preferences
    saved = (found.python_path, found.model_path, found.device)
    found.python_path, found.model_path, found.device = backend_python(), "default", "cpu"
    yield found
    found.python_path, found.model_path, found.device = saved


@pytest.fixture
def scene(bpy, prefs, tmp_path):
    """A mesh with a shape key and one selected sound strip: enough to press Animate."""
    bpy.ops.wm.read_homefile(use_empty=True)
    clip = tmp_path / "line.wav"
    sf.write(clip, speechlike(1.0, seed=3), 16000)
    sc = bpy.context.scene
    mesh = bpy.data.meshes.new("Face")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("Face", mesh)
    sc.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.shape_key_add(name="Basis")
    obj.shape_key_add(name="jawOpen")
    editor = sc.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    try:
        strips.new_sound("A", str(clip), 1, 1).select = True
    except RuntimeError as exc:  # PyPI's bpy 4.2 has no audio library
        pytest.skip(f"this bpy build cannot create sound strips: {exc}")
    return sc


def operators(bpy):
    return sys.modules[f"{ADDON}.operators"]


def animate_error(bpy) -> str:
    """The error Animate from Audio reports (it raises it, as bpy.ops does for an ERROR report)
    and records as its outcome."""
    with pytest.raises(RuntimeError) as info:
        bpy.ops.emotalk.animate_from_audio()
    outcome = operators(bpy).last_outcome()
    assert outcome is not None and outcome.summary == "" and outcome.error, outcome
    assert outcome.error in str(info.value)
    return outcome.error


def check_backend_lines(bpy) -> list[str]:
    """What the preferences' Check Backend box shows after a failed check (also reported)."""
    with pytest.raises(RuntimeError) as info:
        bpy.ops.emotalk.check_backend()
    lines = list(sys.modules[f"{ADDON}.preferences"]._last_check)
    assert lines and lines[0].removeprefix("Failed: ") in str(info.value), (lines, info.value)
    return lines


def assert_no_cli_wording(text: str) -> None:
    assert not any(flag in text for flag in CLI_FLAGS), text


# -- the model ------------------------------------------------------------------------------------
def test_a_missing_model_folder_names_the_model_preference(bpy, scene, prefs, tmp_path):
    prefs.model_path = str(tmp_path / "no-model")
    error = animate_error(bpy)
    assert f"model folder {tmp_path / 'no-model'} does not exist" in error, error
    assert f"Set Model in {PREFERENCES} to a model folder" in error, error
    assert_no_cli_wording(error)
    lines = check_backend_lines(bpy)
    assert len(lines) == 1 and lines[0] == f"Failed: {error}", lines


def test_a_model_folder_from_the_environment_names_the_variable(bpy, scene, prefs, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("EMOTALK_MODEL", str(tmp_path / "elsewhere"))
    error = animate_error(bpy)
    assert "elsewhere does not exist" in error, error
    assert "EMOTALK_MODEL is set and overrides the add-on's preferences" in error, error
    assert_no_cli_wording(error)


# -- the backend's Python -------------------------------------------------------------------------
def test_a_python_without_torch_names_the_python_preference_and_the_log(bpy, scene, prefs,
                                                                        tmp_path):
    prefs.python_path = str(no_torch_python(tmp_path, backend_python()))
    error = animate_error(bpy)
    assert "has no module named 'torch'" in error, error
    assert f"Set Backend Python in {PREFERENCES} to a Python with emotalk installed" in error
    assert "bug" not in error, error
    log = Path(error.rsplit("Log: ", 1)[1])
    assert "ModuleNotFoundError" in log.read_text(), log  # the log it names has the cause
    assert_no_cli_wording(error)
    lines = check_backend_lines(bpy)
    assert "has no module named 'torch'" in lines[0] and f"Log: {log}" in lines[0], lines


def test_a_python_without_torch_from_the_environment_names_the_variable(bpy, scene, prefs,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTALK_PYTHON", str(no_torch_python(tmp_path, backend_python())))
    error = animate_error(bpy)
    assert "has no module named 'torch'" in error, error
    assert "EMOTALK_PYTHON is set and overrides the add-on's preferences" in error, error
    assert "Log: " in error, error
