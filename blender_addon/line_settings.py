"""Per-line settings (bpy-free): a sound strip may carry its own emotion, intensity and style,
which replace the panel's for that strip only; post-processing (smoothing, blinks, clamp, mouth
amplitude) and Recognize Words stay the scene's, so all lines of a shot keep one look. A strip
without its own settings takes the panel's.

Also the bake report's words for what each line was animated with, built from the controls that
were sent (their protocol form, `controls.Controls.to_dict`), so the report cannot claim a
setting the backend did not get.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The panel settings (`properties.PANEL_SETTINGS` names) that a line may hold of its own.
LINE_SETTINGS = ("emotion_source", "preset", "reference", "strength", "level", "person",
                 "use_second_person", "second_person", "person_mix")


def merged(scene: Mapping[str, Any], line: Mapping[str, Any] | None) -> dict[str, Any]:
    """The panel's values for one line: the line's own settings (all of `LINE_SETTINGS`) over
    the scene's, which keep everything else; the scene's alone when `line` is None."""
    values = dict(scene)
    if line is not None:
        values.update((name, line[name]) for name in LINE_SETTINGS)
    return values


@dataclass(frozen=True)
class Applied:
    """What one line was animated with: the strip's name, the controls sent for it (their JSON
    form), whether they were the strip's own settings, and the emotion probabilities the
    backend heard in its audio."""

    name: str
    controls: Mapping[str, Any]
    own: bool = False
    heard: Mapping[str, float] = field(default_factory=dict)


def describe(applied: Applied) -> str:
    """'preset happy 80%, intensity 1, style 3' or 'speech emotion sad 35%, intensity 0.5,
    styles 3 70% + 7 30%'."""
    controls = applied.controls
    level = float(controls.get("level", 1.0))
    return f"{_emotion(controls.get('emotion') or {}, applied.heard)}, " \
           f"intensity {_number(level)}, {_styles(controls)}"


def summary(applied: Sequence[Applied]) -> str:
    """Every line, in bake order: 'A (own): preset happy 80%, intensity 1, style 3; B: speech
    emotion sad 35%, intensity 1, style 0'. '(own)' marks a strip's own settings; the others
    followed the panel."""
    return "; ".join(f"{a.name}{' (own)' if a.own else ''}: {describe(a)}" for a in applied)


def _emotion(emotion: Mapping[str, Any], heard: Mapping[str, float]) -> str:
    source = emotion.get("source", "audio")
    if source == "audio":  # the clip's own emotion: say which one the backend heard
        if not heard:
            return "speech emotion"
        label, p = max(heard.items(), key=lambda kv: kv[1])
        return f"speech emotion {label} {p:.0%}"
    strength = f"{float(emotion.get('strength', 1.0)):.0%}"
    if source == "preset":
        return f"preset {emotion.get('preset')} {strength}"
    reference = os.path.basename(str(emotion.get("reference") or "")) or "?"
    return f"reference {reference} {strength}"


def _styles(controls: Mapping[str, Any]) -> str:
    weights = controls.get("person_weights")
    if not weights:
        return f"style {int(controls.get('person', 0))}"
    shares = sorted((int(p), float(w)) for p, w in weights.items() if float(w) > 0)
    total = sum(w for _, w in shares)
    if len(shares) == 1:
        return f"style {shares[0][0]}"
    return "styles " + " + ".join(f"{p} {w / total:.0%}" for p, w in shares)


def _number(value: float) -> str:
    """Two decimals at most, no trailing zeros: the panel stores float32 (0.3 reads
    0.30000001)."""
    return f"{round(value, 2):g}"
