"""Command-line controls (`emotalk_core.inference.Controls`) as the add-on's panel settings
(`EMOTALK_PG_settings`), and the check that the panel, read back the way the operator reads it,
holds what was asked."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emotalk_core.errors import AudioError, ControlError
from emotalk_core.files import probe, require_file, shown

from .blender import addon_module

PANEL_PRESETS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
PANEL_PERSONS = 24  # the panel's Style field: 0..23
PANEL_MAX_SEED = 2**31 - 1  # Blender's IntProperty is a signed 32-bit int


def panel_values(controls) -> dict[str, Any]:
    """`EMOTALK_PG_settings` values for `inference.Controls`. Raises ControlError for what the
    panel cannot hold (more than two styles, a preset outside its list), rather than baking
    something other than what was asked."""
    from emotalk_core.postprocess import PostProcess

    emotion = controls.emotion
    values: dict[str, Any] = {"emotion_source": emotion.source,
                              "strength": float(emotion.strength), "level": float(controls.level)}
    if emotion.source == "preset":
        if emotion.preset not in PANEL_PRESETS:
            raise ControlError(f"the add-on's panel has no emotion preset {emotion.preset!r}; "
                               f"it offers {', '.join(PANEL_PRESETS)}")
        values["preset"] = emotion.preset
    if emotion.source == "reference":
        reference = Path(emotion.reference).expanduser().absolute()
        if probe(reference, "reference clip", AudioError) is None:
            raise AudioError(f"reference clip not found: {shown(reference)}")
        require_file(reference, "reference clip", AudioError, "choose an audio file")
        values["reference"] = str(reference)
    values.update(_person_values(controls))
    post = controls.postprocess or PostProcess(smooth=False, blinks=False, clamp=False)
    if post.seed > PANEL_MAX_SEED:
        raise ControlError(f"--seed {post.seed} is too large for the panel (at most "
                           f"{PANEL_MAX_SEED})")
    values.update(smooth=post.smooth, blinks=post.blinks, seed=post.seed, clamp=post.clamp,
                  mouth_amplitude=float(post.mouth_amplitude))
    return values


def _person_values(controls) -> dict[str, Any]:
    """One style, or a two-style mix as (first, second, second's share)."""
    weights = controls.person_weights or {controls.person: 1.0}
    used = sorted((p, float(w)) for p, w in weights.items() if w > 0)
    for person, _ in used:
        if not 0 <= person < PANEL_PERSONS:
            raise ControlError(f"person {person} is out of range; the panel has styles "
                               f"0..{PANEL_PERSONS - 1}")
    if len(used) > 2:
        raise ControlError(f"the add-on mixes at most two styles; --person-weights names "
                           f"{len(used)}")
    if len(used) == 1:
        return {"person": used[0][0], "use_second_person": False}
    (first, w1), (second, w2) = used
    return {"person": first, "use_second_person": True, "second_person": second,
            "person_mix": w2 / (w1 + w2)}


def canonical_controls(controls) -> dict[str, Any]:
    """What determines the curves, in one comparable form: no postprocess = all steps off,
    style weights normalised, the seed only when blinks are on, absolute reference path."""
    from emotalk_core.postprocess import PostProcess

    emotion = controls.emotion
    post = controls.postprocess or PostProcess(smooth=False, blinks=False, clamp=False)
    weights = controls.person_weights or {controls.person: 1.0}
    total = sum(weights.values())
    data = {"emotion_source": emotion.source, "strength": emotion.strength,
            "level": controls.level,
            "persons": {int(p): w / total for p, w in weights.items() if w > 0},
            **{k: v for k, v in asdict(post).items() if k != "seed" or post.blinks}}
    if emotion.source == "preset":
        data["preset"] = emotion.preset
    if emotion.source == "reference":
        data["reference"] = str(Path(emotion.reference).expanduser().absolute())
    return data


def controls_differences(wanted, got) -> list[str]:
    """Names of the settings where `got` differs from `wanted` (floats to 1e-6: the panel
    stores float32)."""
    a, b = canonical_controls(wanted), canonical_controls(got)
    return [k for k in sorted(a.keys() | b.keys()) if not _close(a.get(k), b.get(k))]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def apply_panel(scene, values: dict[str, Any]) -> None:
    settings = scene.emotalk
    for key, value in values.items():
        try:
            setattr(settings, key, value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ControlError(f"the add-on's panel refuses {key}={value!r}: {exc}") from exc


def check_panel(scene, addon: str, controls) -> None:
    """The panel, read back the way the operator reads it, must give the requested controls:
    Blender clamps out-of-range values silently, and this catches any drift between the CLI
    and the add-on."""
    from emotalk_core.inference import Controls

    applied = Controls.from_dict(addon_module(addon, "properties").controls_from(scene.emotalk))
    diff = controls_differences(controls, applied)
    if diff:
        raise ControlError(f"the add-on's panel cannot hold these settings as given: "
                           f"{', '.join(diff)}")
