"""Set up backend inside Blender: the zip carries our wheel; the preferences' button makes a
private environment from a Wheels Folder (as on an offline machine), the add-on finds it with no
EMOTALK_PYTHON, and a strip bakes with it. A failing pip and a cancel leave a message and no
environment in use.

The Wheels Folder is filled once per process with `pip download` of the wheel's dependencies
from this machine's package sources (torch 2.13.0 from its local CPU wheel). torch's local wheel
is for Python 3.11, so the Base Python is a python3.11 on every Blender line (on 5.3, Blender's
own Python is 3.13: a user there sets Base Python the same way).
"""

# The fixtures come from test_addon_bpy and are named again as test parameters.
# ruff: noqa: F811
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backend_python import backend_python
from tests.test_addon_bpy import (  # noqa: F401  (fixtures)
    ADDON,
    animate,
    audio,
    env,
    fcurve_keys,
    scene,
    strips,
)

pytestmark = [pytest.mark.bpy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([backend_python(), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (found,) = out.glob("emotalk_blender-*.whl")
    return found


@pytest.fixture(scope="module")
def bpy(tmp_path_factory, wheel):
    """bpy with the extension installed from a zip that carries the wheel."""
    os.environ["BLENDER_USER_RESOURCES"] = str(tmp_path_factory.mktemp("blender-user"))
    module = pytest.importorskip("bpy", reason="bpy is not installed (pip install bpy==5.0.1)")
    import zipfile

    import build_addon

    zip_path = build_addon.build(tmp_path_factory.mktemp("dist"), wheel)
    assert f"wheels/{wheel.name}" in zipfile.ZipFile(zip_path).namelist()
    module.ops.wm.read_factory_settings(use_empty=True)
    result = module.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"} and ADDON in module.context.preferences.addons
    yield module
    module.ops.preferences.addon_disable(module=ADDON)


@pytest.fixture(scope="module")
def wheels_folder(tmp_path_factory, wheel) -> Path:
    """What pip needs, downloaded for Python 3.11 (the backend's interpreter's pip)."""
    folder = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run([backend_python(), "-m", "pip", "download", "-q", "-d", str(folder),
                           "--only-binary", ":all:", str(wheel)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return folder


def python311() -> str:
    """A Python 3.11 for Base Python (torch 2.13.0's local wheel is for 3.11 only)."""
    from blender_addon import discovery

    for candidate in discovery.base_python_candidates(os.environ.get("PATH", ""), "posix",
                                                      Path("/"), Path.home()):
        version = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True)
        if version.stdout.strip() == "(3, 11)":
            return str(candidate)
    pytest.skip("no python3.11 on PATH: torch 2.13.0's local wheel needs Base Python 3.11")


@pytest.fixture
def prefs(bpy, monkeypatch):
    """The preferences, with no EMOTALK_PYTHON (discovery decides) and a clean folder."""
    monkeypatch.delenv("EMOTALK_PYTHON", raising=False)
    addon_prefs = bpy.context.preferences.addons[ADDON].preferences
    addon_prefs.python_path = ""
    addon_prefs.base_python = python311()
    yield addon_prefs
    addon_prefs.wheels_folder = ""


def modules(name: str):
    return sys.modules[f"{ADDON}.{name}"]


def folder() -> Path:
    return modules("preferences").backend_folder()


def test_the_zip_carries_the_wheel_and_a_failing_pip_leaves_nothing_in_use(bpy, prefs,
                                                                           tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    prefs.wheels_folder = str(empty)
    with pytest.raises(RuntimeError) as info:
        bpy.ops.emotalk.setup_backend()
    message = str(info.value)
    assert f"pip found no torch 2.13.0 (or one of its dependencies) for this Python in the " \
           f"Wheels Folder {empty}" in message, message
    assert "setup.log" in message
    setup = modules("setup")
    assert setup.state(folder()) == "unfinished"
    found = modules("preferences").discovered()
    assert found.source != modules("discovery").SOURCE_PRIVATE, found
    lines = modules("preferences").SETUP["lines"]
    assert lines and lines[0].startswith("Failed: pip found no torch"), lines


def test_a_cancelled_set_up_stops_pip_and_leaves_nothing_in_use(bpy, prefs, wheels_folder):
    operators = modules("operators")
    prefs.wheels_folder = str(wheels_folder)
    job = operators.begin_setup(prefs)
    deadline = time.monotonic() + 120
    while job.poll().message.startswith("making") and time.monotonic() < deadline:
        time.sleep(0.1)
    proc = job._proc
    assert proc is not None and not job.finished, job.error
    assert bpy.ops.emotalk.cancel_setup() == {"FINISHED"}
    assert operators.setup_tick() is None  # the timer ends and shows the outcome
    assert proc.poll() is not None, "pip still runs after the cancel"
    lines = modules("preferences").SETUP["lines"]
    assert lines[0].startswith("Failed: Set up backend was cancelled; nothing was put in use")
    assert modules("setup").state(folder()) == "unfinished"
    assert modules("preferences").discovered().source != modules("discovery").SOURCE_PRIVATE


def test_set_up_backend_then_bake_with_it(bpy, prefs, wheels_folder, strips, monkeypatch):
    monkeypatch.delenv("EMOTALK_PYTHON", raising=False)  # the scene fixture set it
    prefs.wheels_folder = str(wheels_folder)
    started = time.monotonic()
    assert bpy.ops.emotalk.setup_backend() == {"FINISHED"}
    seconds = time.monotonic() - started
    print(f"Set up backend took {seconds:.0f} s")
    discovery = modules("discovery")
    found = modules("preferences").discovered()
    assert found == discovery.Found(
        str(discovery.env_python(discovery.private_env(folder()), "posix")),
        discovery.SOURCE_PRIVATE)
    assert modules("setup").state(folder()) == "ready"
    assert bpy.ops.emotalk.check_backend() == {"FINISHED"}
    lines = modules("preferences")._last_check
    assert any(line.startswith("Torch: 2.13.0") and "Device: cpu" in line for line in lines), lines
    assert any(line.startswith("Word recognition: Whisper in ") for line in lines), lines
    assert lines[-1] == f"Python: {found.python} ({discovery.SOURCE_PRIVATE})", lines
    assert animate(bpy) == {"FINISHED"}
    assert len(fcurve_keys(bpy, "jawOpen")) > 10
    log = (folder() / "setup.log").read_text()
    assert "READY: Backend ready" in log
