"""Panel settings (per scene), channel overrides (per object), the transcript and the line's own
emotion and style (per sound strip), and bake progress (per session).

Defaults equal `emotalk predict`'s (emotion from the audio, strength 1, level 1, person 0,
smoothing and blinks on, seed 0, clamp on, mouth amplitude 1), so an untouched panel bakes what
the command line computes.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import line_settings, transcripts, visemes
from .mapping import CHANNELS

try:  # the installed extension carries a verbatim copy of emotalk_core/controls.py
    from . import controls
except ImportError:  # running from the source tree: the original
    from emotalk_core import controls

EMOTION_SOURCES = (
    ("audio", "From Speech", "Emotion of the clip itself (as the paper does)"),
    ("preset", "Preset", "Move towards a stored emotion prototype"),
    ("reference", "Reference Clip", "Emotion of another clip"),
)
IGNORE = "NONE"
WRITE_MODES = (
    ("action", "Active Action", "Replace the keys of each line's frames in the shape keys' "
     "active action (hand keys elsewhere are kept)"),
    ("nla", "NLA Track, One Action per Line", "Each sound strip's line becomes an action of its "
     "own on the shape keys' 'EmoTalk' NLA track: move, blend or mute lines; hand keys in the "
     "active action play on top"),
)


# A '//' path (relative to the .blend) is read with bpy.path.abspath; Blender 4.5+ warns unless
# the property says it takes one (earlier versions lack the option).
_RELATIVE_PATH = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


def _channel_items() -> list[tuple[str, str, str]]:
    # Blender stores an enum by its position: new channels go at the end, so the overrides
    # saved in older files keep their channel.
    items = [(IGNORE, "(Ignore)", "Do not animate this shape key")]
    items += [(name, name, f"ARKit channel {i}") for i, name in enumerate(CHANNELS)]
    return items + [(name, name, visemes.describe(name)) for name in visemes.CHANNELS]


class _LineFields:
    """The settings a sound strip may hold of its own (`line_settings.LINE_SETTINGS`), defined
    once for the panel and the strips."""

    emotion_source: EnumProperty(name="Emotion", items=EMOTION_SOURCES, default="audio")
    preset: EnumProperty(name="Preset", default="happy",
                         items=[(p, p.title(), f"The '{p}' emotion prototype")
                                for p in controls.PRESET_NAMES])
    reference: StringProperty(name="Reference", subtype="FILE_PATH", options=_RELATIVE_PATH,
                              description="Audio clip whose emotion to use")
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                            description="Blend from the clip's own emotion (0) to the chosen (1)")
    level: FloatProperty(name="Intensity", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                         description="Expression intensity: 0 normal, 1 strong")
    person: IntProperty(name="Style", default=0, min=0, max=controls.NUM_STYLES - 1,
                        description="Personal speaking style (one of the training speakers)")
    use_second_person: BoolProperty(name="Mix a Second Style", default=False)
    second_person: IntProperty(name="Second Style", default=1, min=0,
                               max=controls.NUM_STYLES - 1)
    person_mix: FloatProperty(name="Mix", default=0.5, min=0.0, max=1.0, subtype="FACTOR",
                              description="Share of the second style")


class EMOTALK_PG_settings(_LineFields, bpy.types.PropertyGroup):
    """What the Animate button sends; stored in the .blend with the scene. Its emotion and
    style apply to every strip without settings of its own."""

    smooth: BoolProperty(name="Smoothing", default=True,
                         description="Savitzky-Golay smoothing, as the released EmoTalk")
    blinks: BoolProperty(name="Blinks", default=True,
                         description="Replace the blink channels with natural blinks")
    seed: IntProperty(name="Seed", default=0, min=0, description="Same seed, same blinks")
    clamp: BoolProperty(name="Clamp to 0..1", default=True)
    mouth_amplitude: FloatProperty(name="Mouth Amplitude", default=1.0, min=0.0, max=3.0,
                                   description="Scale of mouth and jaw motion")
    recognize_words: BoolProperty(
        name="Recognize Words", default=True,
        description="For strips without a transcript: recognise the English words and "
        "lip-sync their sounds. Off: read the sounds alone (faster, for other languages; the "
        "lips close less often)")
    show_unmatched: BoolProperty(name="Show Unmatched Channels", default=False)
    write_mode: EnumProperty(name="Write To", default="action", items=WRITE_MODES)
    reduce_keys: BoolProperty(
        name="Reduce Keys", default=False,
        description="Key only the frames needed to follow the curves within the tolerance, so "
        "they are easier to edit by hand")
    key_tolerance: FloatProperty(
        name="Tolerance", default=0.01, min=0.0001, max=0.2, precision=4,
        description="Largest allowed difference from the predicted curve (shape key value)")


def _start_from_panel(line: EMOTALK_PG_line, context: bpy.types.Context) -> None:
    """The first time a strip gets its own settings they start as the panel's, so turning them
    on changes nothing until the animator edits them; later toggles keep what was set."""
    if not line.use_own or line.started:
        return
    panel = getattr(context.scene, "emotalk", None)
    if panel is not None:
        copy_line(panel, line)
    line.started = True


class EMOTALK_PG_line(_LineFields, bpy.types.PropertyGroup):
    """One sound strip's own emotion, intensity and style; stored in the .blend with the strip."""

    use_own: BoolProperty(
        name="Own Settings", default=False, update=_start_from_panel,
        description="Animate this line with its own emotion, intensity and style instead of "
        "the panel's (post-processing stays the panel's). Turned on the first time, they start "
        "as the panel's")
    started: BoolProperty(default=False, options={"HIDDEN"})


class EMOTALK_PG_override(bpy.types.PropertyGroup):
    """One per-object override: this shape key takes that channel (or is ignored)."""

    shape_key: StringProperty(name="Shape Key")
    channel: EnumProperty(name="Channel", items=_channel_items(), default=IGNORE)


class EMOTALK_PG_runtime(bpy.types.PropertyGroup):
    """Progress of the running bake; lives on the window manager, so never saved."""

    running: BoolProperty(default=False)
    cancel_requested: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(default="")


CLASSES = (EMOTALK_PG_settings, EMOTALK_PG_line, EMOTALK_PG_override, EMOTALK_PG_runtime)
LINE_PROPERTY = "emotalk_line"  # on every strip


def strip_type() -> type:
    """The sequencer strip base class: `Strip` from 4.4, `Sequence` before."""
    return getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.emotalk = PointerProperty(type=EMOTALK_PG_settings)
    bpy.types.Object.emotalk_overrides = CollectionProperty(type=EMOTALK_PG_override)
    bpy.types.Object.emotalk_override_index = IntProperty(default=0)
    bpy.types.WindowManager.emotalk_run = PointerProperty(type=EMOTALK_PG_runtime)
    # On the base class so every strip type has them (a sound strip inside a meta included).
    setattr(strip_type(), LINE_PROPERTY, PointerProperty(type=EMOTALK_PG_line))
    setattr(strip_type(), transcripts.PROPERTY, StringProperty(
        name="Transcript", description="The words spoken in this strip (its visible part), "
        "optional. Models with a phonetic input align them to the audio for the lip timing. "
        "Empty: a .txt file named like the audio file, beside it, is used if there is one"))


def unregister() -> None:
    delattr(strip_type(), transcripts.PROPERTY)
    delattr(strip_type(), LINE_PROPERTY)
    del bpy.types.WindowManager.emotalk_run
    del bpy.types.Object.emotalk_override_index
    del bpy.types.Object.emotalk_overrides
    del bpy.types.Scene.emotalk
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)


def overrides_of(obj: bpy.types.Object) -> dict[str, str | None]:
    """The object's overrides as `mapping.build_mapping` takes them."""
    return {o.shape_key: (None if o.channel == IGNORE else o.channel)
            for o in getattr(obj, "emotalk_overrides", ()) if o.shape_key}


# The panel's settings that `controls.panel_values` / `controls.from_panel` exchange.
PANEL_SETTINGS = ("emotion_source", "preset", "reference", "strength", "level", "person",
                  "use_second_person", "second_person", "person_mix", "smooth", "blinks", "seed",
                  "clamp", "mouth_amplitude", "recognize_words")


def own_line(strip) -> EMOTALK_PG_line | None:
    """The strip's own settings when it uses them; None when it follows the panel."""
    line = getattr(strip, LINE_PROPERTY, None)
    return line if line is not None and line.use_own else None


def copy_line(source: _LineFields, line: EMOTALK_PG_line) -> None:
    """Copy the emotion and style settings of `source` (the panel, or another line)."""
    for name in line_settings.LINE_SETTINGS:
        setattr(line, name, getattr(source, name))


def controls_from(settings: EMOTALK_PG_settings, line: EMOTALK_PG_line | None = None) -> dict:
    """The protocol's controls from the panel, with `line`'s own settings over its emotion and
    style when given (reference paths made absolute)."""
    values = _values(settings, PANEL_SETTINGS)
    if line is not None:
        values = line_settings.merged(values, _values(line, line_settings.LINE_SETTINGS))
    try:
        return controls.from_panel(values).to_dict()
    except controls.ControlError as exc:
        from .backend import BakeError

        raise BakeError(str(exc)) from exc


def _values(group: _LineFields, names: tuple[str, ...]) -> dict:
    values = {name: getattr(group, name) for name in names}
    values["reference"] = bpy.path.abspath(group.reference) if group.reference else None
    return values
