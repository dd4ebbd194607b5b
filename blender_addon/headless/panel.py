"""Controls as the add-on panel's settings for a headless bake, and the check that the panel,
read back the way the operator reads it, holds what was asked. The conversions themselves are
`emotalk_core.controls`' (`panel_values`, `from_panel`, `differences`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from emotalk_core import controls as controls_module
from emotalk_core.controls import Controls, EmotionControl
from emotalk_core.errors import AudioError, ControlError
from emotalk_core.files import probe, require_file, shown

from .blender import addon_module


def panel_values(controls: Controls) -> dict[str, Any]:
    """The panel's settings for `controls`, with a reference clip that exists, by its absolute
    path. Raises ControlError for what the panel cannot hold, AudioError for a missing clip."""
    emotion = controls.emotion
    if emotion.source == "reference":
        reference = Path(emotion.reference).expanduser().absolute()
        if probe(reference, "reference clip", AudioError) is None:
            raise AudioError(f"reference clip not found: {shown(reference)}")
        require_file(reference, "reference clip", AudioError, "choose an audio file")
        emotion = EmotionControl("reference", reference=str(reference),
                                 strength=emotion.strength)
        controls = dataclasses.replace(controls, emotion=emotion)
    return controls_module.panel_values(controls)


def apply_panel(scene, values: dict[str, Any]) -> None:
    settings = scene.emotalk
    for key, value in values.items():
        try:
            setattr(settings, key, value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ControlError(f"the add-on's panel refuses {key}={value!r}: {exc}") from exc


def check_panel(scene, addon: str, controls: Controls) -> None:
    """The panel, read back the way the operator reads it, must give the requested controls:
    Blender clamps out-of-range values silently, and this catches any drift between the CLI
    and the add-on."""
    applied = Controls.from_dict(addon_module(addon, "properties").controls_from(scene.emotalk))
    diff = controls_module.differences(controls, applied)
    if diff:
        raise ControlError(f"the add-on's panel cannot hold these settings as given: "
                           f"{', '.join(diff)}")
