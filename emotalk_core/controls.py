"""The controls: everything a user sets besides the audio (DESIGN.md section 4), in one place.

Three forms, one definition:
- the dataclasses (`Controls`, `EmotionControl`, `PostProcess`), validated on construction so a
  bad request fails before any model work starts;
- the JSON form (`Controls.to_dict` / `Controls.from_dict`), the protocol's `controls`;
- the add-on panel's form (`panel_values` / `from_panel`): one emotion source, a preset from
  `PRESET_NAMES`, at most two styles mixed.

Standard library and numpy only: the Blender add-on carries a copy of this module (made by
build_addon.py, with `errors.py` and `protocol.py`), so it must import inside Blender's Python.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .errors import ControlError

# The eight RAVDESS categories: the emotion presets (and our own models' classifier labels)
# that the panel offers.
PRESET_NAMES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
# Personal styles (training speakers) of the released and the default model: indices 0..23.
NUM_STYLES = 24
EMOTION_SOURCES = ("audio", "reference", "preset")
# Person weights are relative shares (normalised to sum to one); a bound keeps their sum far
# inside float32, where the network mixes them.
MAX_PERSON_WEIGHT = 1e6
MAX_MOUTH_AMPLITUDE = 3.0
MAX_PANEL_SEED = 2**31 - 1  # Blender's IntProperty is a signed 32-bit int
MAX_PANEL_STYLES = 2


@dataclass(frozen=True)
class EmotionControl:
    """Where the emotion features come from, and how far to move towards them.

    source "audio": the clip's own emotion (the paper). "reference": another clip's emotion
    features (the paper's cross-reconstruction at inference). "preset": a stored prototype.
    `strength` in [0, 1] blends from the clip's own features (0) to the chosen ones (1).
    """

    source: str = "audio"
    preset: str | None = None
    reference: str | os.PathLike | None = None
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or self.source not in EMOTION_SOURCES:
            raise ControlError(f"unknown emotion source {shown(self.source)}; "
                               f"use one of {', '.join(EMOTION_SOURCES)}")
        if self.preset is not None and not isinstance(self.preset, str):
            raise ControlError(f"emotion preset must be a name (text), got "
                               f"{shown(self.preset)}")
        if self.reference is not None and not isinstance(self.reference, str | os.PathLike):
            raise ControlError(f"emotion reference must be a file path (text), got "
                               f"{shown(self.reference)}")
        if not is_number(self.strength) or not finite_in(self.strength, 0.0, 1.0):
            raise ControlError(f"emotion strength must be within [0, 1], got {self.strength}")
        if self.source == "preset" and not self.preset:
            raise ControlError("emotion source 'preset' needs a preset name",
                               "choose one of the model's presets",
                               cli_hint="add --emotion NAME")
        if self.source == "reference" and not self.reference:
            raise ControlError("emotion source 'reference' needs a reference clip",
                               "choose an audio file whose emotion to follow",
                               cli_hint="add --emotion-reference FILE")


@dataclass(frozen=True)
class PostProcess:
    """The post-processing controls (DESIGN.md section 4)."""

    smooth: bool = True
    blinks: bool = True
    seed: int = 0
    clamp: bool = True
    mouth_amplitude: float = 1.0
    # Shut the lips where a model with a lip-contact output is confident they touch.
    articulate: bool = True

    def __post_init__(self) -> None:
        for name in ("smooth", "blinks", "clamp", "articulate"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ControlError(
                    f"post-processing: {name} must be true or false, got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, bool(getattr(self, name)))
        object.__setattr__(self, "seed", _checked_seed(self.seed))
        amplitude = checked_real(self.mouth_amplitude, "post-processing: mouth_amplitude")
        if not 0.0 <= amplitude <= MAX_MOUTH_AMPLITUDE:
            raise ControlError(
                f"post-processing: mouth_amplitude must be between 0 and "
                f"{MAX_MOUTH_AMPLITUDE:g}, got {amplitude:g}"
            )
        object.__setattr__(self, "mouth_amplitude", amplitude)


@dataclass(frozen=True)
class Controls:
    """Everything a user can set besides the audio (DESIGN.md section 4)."""

    emotion: EmotionControl = field(default_factory=EmotionControl)
    level: float = 1.0  # intensity: 0 normal, 1 strong, interpolated between
    person: int = 0  # personal style, used when person_weights is None
    person_weights: dict[int, float] | None = None  # a convex mix of styles
    postprocess: PostProcess | None = field(default_factory=PostProcess)  # None: raw output
    # Without a transcript, read the phones of recognised English words (models with a phonetic
    # input); off: the phone loop's phones, faster, for other languages, lips less sure.
    recognize_words: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.recognize_words, bool | np.bool_):
            raise ControlError(f"recognize_words must be true or false, got "
                               f"{shown(self.recognize_words)}")
        object.__setattr__(self, "recognize_words", bool(self.recognize_words))
        if not isinstance(self.emotion, EmotionControl):
            raise ControlError(f"emotion must be an EmotionControl, got {shown(self.emotion)}")
        if not is_number(self.level) or not finite_in(self.level, 0.0, 1.0):
            raise ControlError(f"level (intensity) must be a number within [0, 1], got "
                               f"{shown(self.level)}")
        if not is_integer(self.person):
            raise ControlError(f"person must be an integer (a style index), got "
                               f"{shown(self.person)}")
        if self.person_weights is not None:
            _check_person_weights(self.person_weights)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Controls:
        """Controls from their JSON form (the stdio protocol's `controls`, docs/protocol.md).
        Every problem, a wrong type or an unknown key included, is a ControlError that names
        the key."""
        values = _object_fields(data, "controls", {f.name for f in fields(cls)})
        if "emotion" in values:
            values["emotion"] = EmotionControl(**_object_fields(
                values["emotion"], "controls.emotion", {f.name for f in fields(EmotionControl)}))
        if values.get("person_weights") is not None:
            values["person_weights"] = _person_weights(values["person_weights"])
        if values.get("postprocess", {}) is not None:
            values["postprocess"] = PostProcess(**_object_fields(
                values.get("postprocess"), "controls.postprocess",
                {f.name for f in fields(PostProcess)}))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that `from_dict` reads back to equal controls."""
        emotion = self.emotion
        data: dict[str, Any] = {"source": emotion.source, "strength": float(emotion.strength)}
        if emotion.preset is not None:
            data["preset"] = emotion.preset
        if emotion.reference is not None:
            data["reference"] = os.fspath(emotion.reference)
        out: dict[str, Any] = {"emotion": data, "level": float(self.level),
                               "person": int(self.person)}
        if self.person_weights is not None:
            out["person_weights"] = {str(p): float(w) for p, w in self.person_weights.items()}
        out["postprocess"] = None if self.postprocess is None else asdict(self.postprocess)
        if not self.recognize_words:  # left out when on (the default): older servers accept it
            out["recognize_words"] = False
        return out


# -- the add-on panel's form ----------------------------------------------------------------------
def panel_values(controls: Controls) -> dict[str, Any]:
    """The add-on panel's settings (`EMOTALK_PG_settings` names) for `controls`. Raises
    ControlError for what the panel cannot hold (more than two styles, a preset outside its
    list, raw output with articulation), rather than baking something other than what was
    asked. A reference clip's path is kept as given."""
    emotion = controls.emotion
    values: dict[str, Any] = {"emotion_source": emotion.source,
                              "strength": float(emotion.strength), "level": float(controls.level)}
    if emotion.source == "preset":
        if emotion.preset not in PRESET_NAMES:
            raise ControlError(f"the add-on's panel has no emotion preset {emotion.preset!r}; "
                               f"it offers {', '.join(PRESET_NAMES)}")
        values["preset"] = emotion.preset
    if emotion.source == "reference":
        values["reference"] = os.fspath(emotion.reference)
    values.update(_panel_styles(controls))
    post = controls.postprocess or PostProcess(smooth=False, blinks=False, clamp=False)
    if post.seed > MAX_PANEL_SEED:
        raise ControlError(f"--seed {post.seed} is too large for the panel (at most "
                           f"{MAX_PANEL_SEED})")
    values.update(smooth=post.smooth, blinks=post.blinks, seed=post.seed, clamp=post.clamp,
                  mouth_amplitude=float(post.mouth_amplitude),
                  recognize_words=controls.recognize_words)
    return values


def from_panel(values: dict[str, Any]) -> Controls:
    """Controls from the panel's settings (`panel_values`' names; missing ones take the
    panel's defaults, which equal `emotalk predict`'s). The second style's share is
    `person_mix`; a mix whose second style is the first, or whose share is 0, is one style."""
    source = values.get("emotion_source", "audio")
    emotion = EmotionControl(
        source=source, strength=float(values.get("strength", 1.0)),
        preset=values.get("preset") if source == "preset" else None,
        reference=values.get("reference") if source == "reference" else None)
    person = int(values.get("person", 0))
    weights = None
    second, mix = values.get("second_person"), float(values.get("person_mix", 0.5))
    if values.get("use_second_person") and second is not None and second != person and mix > 0:
        shares = {person: 1.0 - mix, int(second): mix}
        weights = {p: w for p, w in shares.items() if w > 0.0}
    post = PostProcess(smooth=bool(values.get("smooth", True)),
                       blinks=bool(values.get("blinks", True)), seed=int(values.get("seed", 0)),
                       clamp=bool(values.get("clamp", True)),
                       mouth_amplitude=float(values.get("mouth_amplitude", 1.0)))
    return Controls(emotion=emotion, level=float(values.get("level", 1.0)), person=person,
                    person_weights=weights, postprocess=post,
                    recognize_words=bool(values.get("recognize_words", True)))


def _panel_styles(controls: Controls) -> dict[str, Any]:
    """One style, or a two-style mix as (first, second, second's share)."""
    weights = controls.person_weights or {controls.person: 1.0}
    used = sorted((p, float(w)) for p, w in weights.items() if w > 0)
    for person, _ in used:
        if not 0 <= person < NUM_STYLES:
            raise ControlError(f"person {person} is out of range; the panel has styles "
                               f"0..{NUM_STYLES - 1}")
    if len(used) > MAX_PANEL_STYLES:
        raise ControlError(f"the add-on mixes at most two styles; --person-weights names "
                           f"{len(used)}")
    if len(used) == 1:
        return {"person": used[0][0], "use_second_person": False}
    (first, w1), (second, w2) = used
    return {"person": first, "use_second_person": True, "second_person": second,
            "person_mix": w2 / (w1 + w2)}


# -- comparing controls ---------------------------------------------------------------------------
def canonical(controls: Controls) -> dict[str, Any]:
    """What determines the curves, in one comparable form: no postprocess = all steps off,
    style weights normalised, the seed only when blinks are on, the reference path absolute."""
    emotion = controls.emotion
    post = controls.postprocess or PostProcess(smooth=False, blinks=False, clamp=False)
    weights = controls.person_weights or {controls.person: 1.0}
    total = sum(weights.values())
    data = {"emotion_source": emotion.source, "strength": emotion.strength,
            "level": controls.level,
            "persons": {int(p): w / total for p, w in weights.items() if w > 0},
            "recognize_words": controls.recognize_words,
            **{k: v for k, v in asdict(post).items() if k != "seed" or post.blinks}}
    if emotion.source == "preset":
        data["preset"] = emotion.preset
    if emotion.source == "reference":
        data["reference"] = os.path.abspath(os.path.expanduser(os.fspath(emotion.reference)))
    return data


def differences(wanted: Controls, got: Controls) -> list[str]:
    """Names of the settings where `got` differs from `wanted` (floats to 1e-6: the panel
    stores float32)."""
    a, b = canonical(wanted), canonical(got)
    return [k for k in sorted(a.keys() | b.keys()) if not _close(a.get(k), b.get(k))]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return a == b


# -- the JSON form's parts ------------------------------------------------------------------------
def _object_fields(data: Any, where: str, known: set[str]) -> dict[str, Any]:
    """A JSON object's members (None: no members) whose keys are all `known`."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ControlError(f"{where} must be an object, got {shown(data)}")
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise ControlError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))[:200]}; "
                           f"known: {', '.join(sorted(known))}")
    return dict(data)


def _person_weights(data: Any) -> dict[int, float]:
    """`{"3": 0.5, "7": 0.5}` (keys: person indices as text or integers) as {3: 0.5, 7: 0.5}."""
    if not isinstance(data, dict):
        raise ControlError(f'person_weights must be an object like {{"3": 0.5, "7": 0.5}}, '
                           f"got {shown(data)}")
    weights: dict[int, float] = {}
    for key, value in data.items():
        index = key if is_integer(key) else _index_text(key)
        if not is_number(value):
            raise ControlError(f"person_weights: the weight of person {key!r:.20} must be a "
                               f"number, got {shown(value)}")
        weights[int(index)] = float(value)
    return weights


def parse_person_weights(text: str | None) -> dict[int, float] | None:
    """The command line's '3:0.5,7:0.5' -> {3: 0.5, 7: 0.5} (a bare index weighs 1)."""
    if text is None:
        return None
    weights: dict[int, float] = {}
    for item in text.split(","):
        person, sep, weight = item.strip().partition(":")
        try:
            weights[int(person)] = float(weight) if sep else 1.0
        except ValueError as exc:
            raise ControlError(f"--person-weights: cannot read {item!r}; write e.g. "
                               '"3:0.5,7:0.5"') from exc
    return weights


def _index_text(key: Any) -> int:
    text = key.strip() if isinstance(key, str) else ""
    if not (text.isascii() and text.lstrip("-").isdigit() and len(text) <= 12):
        raise ControlError(f"person_weights keys must be person indices such as \"3\", got "
                           f"{shown(key)}")
    return int(text)


def _check_person_weights(weights: Any) -> None:
    if not isinstance(weights, dict) or not weights:
        raise ControlError("person weights are empty; give at least one person:weight")
    if any(not is_integer(k) for k in weights):
        raise ControlError("person weights must map person indices (integers) to weights")
    if any(not is_number(w) or not finite_in(w, 0.0, MAX_PERSON_WEIGHT)
           for w in weights.values()):
        raise ControlError(f"person weights must be numbers within [0, {MAX_PERSON_WEIGHT:g}] "
                           "(shares; they are normalised to sum to one)")
    if sum(weights.values()) <= 0:
        raise ControlError("person weights must not all be zero")


# -- value checks (shared with post-processing and inference) ------------------------------------
def finite_in(x: Any, low: float, high: float) -> bool:
    try:
        return math.isfinite(float(x)) and low <= float(x) <= high
    except (TypeError, ValueError, OverflowError):
        return False


def is_number(value: Any) -> bool:
    """A real number, not a boolean nor text (JSON's true is not 1, "0.5" is not 0.5)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def checked_real(value: object, what: str) -> float:
    """`value` as a finite float; ControlError naming `what` otherwise."""
    if not is_number(value):
        raise ControlError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ControlError(f"{what} must be finite, got {number}")
    return number


def checked_count(value: object, what: str) -> int:
    """`value` as a non-negative int; ControlError naming `what` otherwise."""
    if not is_integer(value):
        raise ControlError(f"{what} must be a whole number, got {value!r}")
    if int(value) < 0:
        raise ControlError(f"{what} must not be negative, got {int(value)}")
    return int(value)


def _checked_seed(value: object) -> int:
    return checked_count(value, "blink seed")


def shown(value: Any) -> str:
    """A value for a one-line message, as JSON would name it, at most 80 characters."""
    kinds = {dict: "an object", list: "a list", type(None): "null"}
    if type(value) in kinds:
        return kinds[type(value)]
    text = f"the text {value!r}" if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
