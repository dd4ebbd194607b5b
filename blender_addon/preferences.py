"""Add-on preferences: which Python runs the backend, which model, which device, and Set up
backend (a private environment made without a terminal).

The interpreter defaults to empty, meaning discovery's order (blender_addon/discovery.py):
EMOTALK_PYTHON, the private environment Set up backend made, an `emotalk` on PATH, the .venv of
the repository the add-on comes from, else Blender's own Python. A fixed default of
sys.executable would be wrong inside real Blender, whose own Python has no torch.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend, discovery, setup

ADDON_ID = __package__  # "bl_ext.<repo>.emotalk" when installed as an extension

# What the last "Check backend" found; shown in the preferences, not saved.
_last_check: list[str] = []
# The running or last Set up backend: its job, and the lines it ended with (not saved).
SETUP: dict = {"job": None, "lines": []}


def get() -> EMOTALK_AP_preferences | None:
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_folder(create: bool = False) -> Path | None:
    """The extension's user folder for the private environment (kept across updates of the
    extension); None when the add-on does not run as an installed extension."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="backend", create=create))
    except (ValueError, AttributeError, OSError):  # not an extension, or Blender before 4.2
        return None


def discovered() -> discovery.Found:
    """The backend's interpreter and where it was found."""
    prefs = get()
    preference = bpy.path.abspath(prefs.python_path) if prefs and prefs.python_path else ""
    return backend.discover_python(preference, backend_folder())


def settings() -> backend.BackendSettings:
    """Preferences resolved with the environment overrides (EMOTALK_PYTHON, EMOTALK_MODEL)."""
    prefs = get()
    folder = backend_folder()
    if prefs is None:
        return backend.resolve_settings(backend_folder=folder)
    model = bpy.path.abspath(prefs.model_path) if prefs.model_path != "default" else "default"
    return backend.resolve_settings(bpy.path.abspath(prefs.python_path) if prefs.python_path
                                    else "", model, prefs.device, folder)


def base_python(prefs: EMOTALK_AP_preferences | None) -> str:
    """The Python that makes the private environment: the preference, else a python3.11 this
    machine has, else Blender's own (which can make venvs; its version decides torch's)."""
    if prefs is not None and prefs.base_python:
        return bpy.path.abspath(prefs.base_python)
    found = discovery.base_python_candidates(
        os.environ.get("PATH", ""), discovery.current_platform(),
        Path(Path.home().anchor or "/"), Path.home())
    return str(found[0]) if found else sys.executable


def cuda_offered() -> bool:
    """CUDA torch is offered only where an NVIDIA driver is installed."""
    return shutil.which("nvidia-smi") is not None


def _torch_items(self, context) -> list[tuple[str, str, str]]:
    items = [("cpu", "CPU", f"torch {setup.TORCH_VERSION} for the CPU (about 1.5 GB)")]
    if cuda_offered():
        items.append(("cuda", "CUDA", f"torch {setup.TORCH_VERSION} for NVIDIA GPUs "
                                      "(about 6 GB)"))
    _TORCH_ITEMS[:] = items  # Blender needs the strings to outlive this call
    return _TORCH_ITEMS


_TORCH_ITEMS: list[tuple[str, str, str]] = []


class EMOTALK_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter with emotalk_core installed. Empty: EMOTALK_PYTHON, "
                    "else the environment Set up backend made, else emotalk on PATH, else the "
                    "repository's .venv, else Blender's own Python")
    model_path: StringProperty(
        name="Model", default="default",
        description="Model folder (config.json + model.safetensors), or 'default' for the "
                    "packaged model. EMOTALK_MODEL overrides it")
    device: EnumProperty(name="Device", default="auto", items=(
        ("auto", "Auto", "CUDA when available, else CPU"),
        ("cpu", "CPU", "Always the CPU"),
        ("cuda", "CUDA", "An NVIDIA GPU")))
    base_python: StringProperty(
        name="Base Python", subtype="FILE_PATH", default="",
        description=f"The Python Set up backend makes its environment with (torch "
                    f"{setup.TORCH_VERSION} needs {discovery.BASE_VERSION} where only its "
                    f"wheel is at hand). Empty: python{discovery.BASE_VERSION} on this "
                    f"machine, else Blender's own Python")
    torch_build: EnumProperty(name="Torch", items=_torch_items,
                              description="Which torch Set up backend installs")
    wheels_folder: StringProperty(
        name="Wheels Folder", subtype="DIR_PATH", default="",
        description="Offline machines: install torch and the backend's packages from this "
                    "folder only (pip --no-index --find-links), not from the internet")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "python_path")
        layout.prop(self, "model_path")
        layout.prop(self, "device")
        resolved = settings()
        found = discovered()
        col = layout.column(align=True)
        col.label(text=f"Uses: {resolved.python}")
        col.label(text=f"Found as: {found.source}")
        col.label(text=f"Model: {resolved.model}  Device: {resolved.device}")
        layout.operator("emotalk.check_backend", icon="CHECKMARK")
        if _last_check:
            _lines(layout.box().column(align=True), _last_check)
        self.draw_setup(layout)

    def draw_setup(self, layout: bpy.types.UILayout) -> None:
        box = layout.box()
        box.label(text="Set up backend: a private Python with torch and EmoTalk", icon="PACKAGE")
        folder = backend_folder()
        if folder is None:
            box.label(text="Only when the add-on is installed as an extension (the zip)")
            return
        job = SETUP["job"]
        if job is not None and not job.finished:
            status = job.status  # the timer advances it
            if hasattr(box, "progress"):  # 4.0+
                box.progress(factor=status.fraction, type="BAR", text=status.message[:90])
            else:
                box.label(text=f"{status.fraction:.0%} {status.message[:90]}")
            box.operator("emotalk.cancel_setup", icon="CANCEL")
            return
        col = box.column()
        col.prop(self, "base_python")
        col.label(text=f"Uses: {base_python(self)}")
        col.prop(self, "torch_build")
        col.prop(self, "wheels_folder")
        row = box.row()
        done = setup.state(folder)
        label = "Repair Backend" if done == "ready" else "Set up Backend"
        row.operator("emotalk.setup_backend", text=label, icon="IMPORT")
        if done != "none":
            row.operator("emotalk.remove_backend", icon="TRASH")
        box.label(text=f"Folder: {folder}")
        if SETUP["lines"]:
            _lines(box.column(align=True), SETUP["lines"])


def _lines(col: bpy.types.UILayout, lines: list[str]) -> None:
    """Messages name paths and what to do: wrapped, as a label cuts them at its width."""
    for line in lines:
        for part in textwrap.wrap(line, 90) or [""]:
            col.label(text=part)


def show_check(lines: list[str]) -> None:
    _last_check[:] = lines


CLASSES = (EMOTALK_AP_preferences,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    job = SETUP["job"]
    if job is not None and not job.finished:
        job.cancel()
    backend.SESSION.close()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
