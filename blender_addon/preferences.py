"""Add-on preferences: which Python runs the backend, which model, which device.

The interpreter defaults to empty, meaning: EMOTALK_PYTHON, else the .venv of the repository the
add-on comes from, else sys.executable. A fixed default of sys.executable would be wrong inside
real Blender, whose own Python has no torch.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend

ADDON_ID = __package__  # "bl_ext.<repo>.emotalk" when installed as an extension

# What the last "Check backend" found; shown in the preferences, not saved.
_last_check: list[str] = []


def get() -> EMOTALK_AP_preferences | None:
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def settings() -> backend.BackendSettings:
    """Preferences resolved with the environment overrides (EMOTALK_PYTHON, EMOTALK_MODEL)."""
    prefs = get()
    if prefs is None:
        return backend.resolve_settings()
    model = bpy.path.abspath(prefs.model_path) if prefs.model_path != "default" else "default"
    return backend.resolve_settings(bpy.path.abspath(prefs.python_path) if prefs.python_path
                                    else "", model, prefs.device)


class EMOTALK_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter with emotalk_core installed. Empty: EMOTALK_PYTHON, "
                    "else the repository's .venv, else Blender's own Python")
    model_path: StringProperty(
        name="Model", default="default",
        description="Model folder (config.json + model.safetensors), or 'default' for the "
                    "packaged model. EMOTALK_MODEL overrides it")
    device: EnumProperty(name="Device", default="auto", items=(
        ("auto", "Auto", "CUDA when available, else CPU"),
        ("cpu", "CPU", "Always the CPU"),
        ("cuda", "CUDA", "An NVIDIA GPU")))

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "python_path")
        layout.prop(self, "model_path")
        layout.prop(self, "device")
        resolved = settings()
        col = layout.column(align=True)
        col.label(text=f"Uses: {resolved.python}")
        col.label(text=f"Model: {resolved.model}  Device: {resolved.device}")
        layout.operator("emotalk.check_backend", icon="CHECKMARK")
        if _last_check:
            box = layout.box().column(align=True)
            for line in _last_check:
                box.label(text=line)


def show_check(lines: list[str]) -> None:
    _last_check[:] = lines


CLASSES = (EMOTALK_AP_preferences,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    backend.SESSION.close()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
