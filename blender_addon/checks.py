"""What a bake may write and which sound it hears, decided before anything runs (bpy-free, tested
without Blender): `operators.py` and `strips.py` copy what Blender reports into the plain values
here, and every refusal or warning is worded here, naming the problem and the fix.

- Shape keys that the file cannot save (linked from a library, or part of a non-editable library
  override) are refused: Blender keeps keys written to them until the file is closed, then they
  are gone, which is worse than no bake.
- The sound strips are those selected in the sequencer the user looks at. A selected meta strip
  brings every sound strip inside it, each heard only between the meta's handles; muted strips
  (or strips on muted channels) are skipped with a note.
- Shape keys driven by drivers, and rigs with few mouth shapes, bake but are warned about: the
  keys would have no or little visible effect.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

try:  # the installed extension carries a verbatim copy of emotalk_core/arkit.py
    from . import arkit
except ImportError:  # running from the source tree: the one original
    from emotalk_core import arkit

from .timing import StripTiming

# -- can the keys be saved ------------------------------------------------------------------------
# The menu paths as Blender 4.5 and 5.x name them.
MAKE_LOCAL = "Object > Relations > Make Local... > Selected Objects and Data"
MAKE_OVERRIDE = "in the Outliner, right-click the mesh data > Library Override > Make > Selected"


@dataclass(frozen=True)
class KeyOwner:
    """Where one object's shape keys (its mesh's `Key` datablock) come from."""

    object_name: str
    library: str | None = None  # the .blend file the shape keys are linked from
    system_override: bool = False  # the mesh or its keys are a non-editable library override
    read_only: bool = False  # Blender refuses to edit the shape-key values for another reason


def target_problem(owner: KeyOwner) -> str | None:
    """Why keys written to these shape keys would be lost; None when the file saves them.
    Scripts see a failed poll's message cut at 200 characters, so the problem and the first
    fix come first."""
    name = owner.object_name
    if owner.library:
        return (f"The shape keys of '{name}' are linked from '{owner.library}', so keys written "
                f"to them would not be saved: make them local ({MAKE_LOCAL}) or give the mesh "
                f"data an editable library override ({MAKE_OVERRIDE})")
    if owner.system_override:
        return (f"The shape keys of '{name}' belong to a non-editable library override: make "
                f"the override editable ({MAKE_OVERRIDE}) or make them local ({MAKE_LOCAL})")
    if owner.read_only:
        return (f"The shape keys of '{name}' cannot be edited in this file, so keys written to "
                f"them would not be saved: make them local ({MAKE_LOCAL})")
    return None


# -- which sound strips -------------------------------------------------------------------------
NO_STRIPS = "Select one or more sound strips in the sequencer, or add an audio file"
MUTED = "muted"  # StripNode.mute when the strip itself is muted
FULL_SPAN = (-(2**31), 2**31)  # frames: wider than any timeline


@dataclass(frozen=True)
class StripNode:
    """One strip as the selection needs it. `ref` is Blender's strip, passed through untouched.

    `mute` says why the strip is silent: None when it plays, `MUTED`, or a reason such as
    "its channel 3 is muted". `children` are a meta strip's strips (filled only where needed)."""

    ref: object
    name: str
    kind: str  # Blender's strip type: "SOUND", "META", ...
    selected: bool
    left: int  # first visible frame
    right: int  # one past the last visible frame
    mute: str | None = None
    children: tuple[StripNode, ...] = ()


@dataclass(frozen=True)
class SoundPick:
    """A sound strip to bake and the frames where it is heard: its own handles clipped to those
    of every meta strip around it (a meta plays its contents only between its handles)."""

    ref: object
    name: str
    left: int
    right: int


@dataclass(frozen=True)
class SoundSelection:
    picks: tuple[SoundPick, ...] = ()  # in timeline order
    muted: tuple[tuple[str, str], ...] = ()  # (strip name, why) of the skipped muted strips
    silent_metas: tuple[str, ...] = ()  # selected meta strips that play no sound strip

    def notes(self) -> list[str]:
        """One report line per skipped muted strip."""
        return [f"skipped muted strip '{name}'" + ("" if why == MUTED else f" ({why})")
                for name, why in self.muted]

    def problem(self) -> str | None:
        """Why there is nothing to bake; None when there is."""
        if self.picks:
            return None
        if self.muted:
            return (f"The selected sound strips are muted ({_quoted(n for n, _ in self.muted)}): "
                    "unmute them or their channels, or select other strips")
        if self.silent_metas:
            return (f"The selected meta strip {_quoted(self.silent_metas)} holds no sound strip "
                    "between its handles: select sound strips in the sequencer, or add an audio "
                    "file")
        return NO_STRIPS


def select_sounds(level: Sequence[StripNode], span: tuple[int, int] = FULL_SPAN,
                  silenced_by: str | None = None) -> SoundSelection:
    """The sound to bake from the strips the sequencer shows (`level`): selected sound strips,
    and every sound strip inside a selected meta strip. `span` and `silenced_by` describe the
    meta strips the user has opened (their handles clip, and a muted one silences, the level)."""
    picks: list[SoundPick] = []
    muted: list[tuple[str, str]] = []
    silent: list[str] = []
    for node in level:
        if not node.selected or node.kind not in ("SOUND", "META"):
            continue
        why = node.mute or (f"meta strip '{silenced_by}' is muted" if silenced_by else None)
        if why:
            muted.append((node.name, why))
        elif node.kind == "SOUND":
            picks += _pick(node, span)
        else:
            found = _inside(node, span)
            picks += found.picks
            muted += found.muted
            if not found.picks and not found.muted:
                silent.append(node.name)
    return SoundSelection(tuple(sorted(picks, key=lambda p: (p.left, p.name))), tuple(muted),
                          tuple(silent))


def _inside(meta: StripNode, span: tuple[int, int]) -> SoundSelection:
    """Every sound strip a meta strip plays, selected or not, through nested metas."""
    span = (max(span[0], meta.left), min(span[1], meta.right))
    picks: list[SoundPick] = []
    muted: list[tuple[str, str]] = []
    for node in meta.children:
        if node.kind not in ("SOUND", "META"):
            continue
        if node.mute:
            muted.append((node.name, node.mute))
        elif node.kind == "SOUND":
            picks += _pick(node, span)
        else:
            found = _inside(node, span)
            picks += found.picks
            muted += found.muted
    return SoundSelection(tuple(picks), tuple(muted))


def _pick(node: StripNode, span: tuple[int, int]) -> list[SoundPick]:
    """The node as a pick, or nothing when the metas around it hide all of it."""
    left, right = max(node.left, span[0]), min(node.right, span[1])
    return [SoundPick(node.ref, node.name, left, right)] if right > left else []


def clip_timing(timing: StripTiming, pick: SoundPick) -> StripTiming:
    """The strip's timing with its handles narrowed to where the pick is heard."""
    return dataclasses.replace(timing, left_handle=max(timing.left_handle, pick.left),
                               right_handle=min(timing.right_handle, pick.right))


def rate_problem(sequencer_scene: str, sequencer_fps: float, scene: str,
                 scene_fps: float) -> str | None:
    """Keys go on the sequencer scene's frame numbers, timed at its frame rate: when the
    sequencer shows another scene, both must run at the same rate or the keys drift."""
    if sequencer_scene == scene or abs(sequencer_fps - scene_fps) < 1e-9:
        return None
    return (f"The sequencer shows the scene '{sequencer_scene}' at {sequencer_fps:g} fps but "
            f"'{scene}' plays at {scene_fps:g} fps: give both scenes the same frame rate "
            "(Output Properties > Format > Frame Rate)")


def other_scene_note(sequencer_scene: str, scene: str) -> str | None:
    """Said when the strips live in another scene than the animated object's."""
    if sequencer_scene == scene:
        return None
    return (f"the sound strips are in the sequencer's scene '{sequencer_scene}', not in "
            f"'{scene}': the keys are on the same frame numbers as the strips")


# -- bakes that work but will disappoint -------------------------------------------------------
MIN_MOUTH_CHANNELS = 10  # fewer mouth and jaw shapes than this cannot show speech
NAMED_AT_MOST = 6  # names listed in one warning; the rest are counted
_DRIVEN_VALUE = re.compile(r"""^key_blocks\[(["'])((?:\\.|(?!\1).)*)\1\]\.value$""")


def driven_keys(data_paths: Iterable[str]) -> set[str]:
    """Names of the shape keys whose value a driver sets, from the drivers' data paths
    (`key_blocks["jawOpen"].value`, with Blender's backslash escapes)."""
    names = set()
    for path in data_paths:
        match = _DRIVEN_VALUE.match(path)
        if match:
            names.add(re.sub(r"\\(.)", r"\1", match.group(2)))
    return names


def driver_warning(mapped: Iterable[str], driven: set[str]) -> str | None:
    """A driver replaces a shape key's value on every frame, so keys on it never show."""
    hit = [name for name in mapped if name in driven]
    if not hit:
        return None
    return (f"shape keys driven by drivers do not show the keys EmoTalk writes: "
            f"{_quoted(hit)}; remove their drivers, or set them to (Ignore) in the Target "
            "panel's overrides")


def mouth_warning(channels: Iterable[int]) -> str | None:
    """Speech is in the mouth and jaw: a rig that matches few of them barely moves its lips.
    Channel indices past the 52 are viseme channels: a viseme rig's lips are its viseme set
    (five vowels are a whole VRM mouth), so it is never warned about."""
    channels = set(channels)
    if any(i >= arkit.NUM_CHANNELS for i in channels):
        return None
    count = len(channels & set(arkit.MOUTH_CHANNELS))
    if count >= MIN_MOUTH_CHANNELS:
        return None
    return (f"only {count} mouth shapes matched (of the {len(arkit.MOUTH_CHANNELS)} mouth and "
            "jaw channels), so the lips will barely follow the speech; add overrides in the "
            "Target panel or check the shape key names")


def _quoted(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(f"'{n}'" for n in names[:NAMED_AT_MOST])
    rest = len(names) - NAMED_AT_MOST
    return f"{shown} and {rest} more" if rest > 0 else shown


# -- the panel -----------------------------------------------------------------------------------
PANEL_WIDTH = 44  # characters that fit a sidebar label of the usual width


def panel_lines(text: str, width: int = PANEL_WIDTH) -> list[str]:
    """A message as panel labels, which do not wrap: one with a fix ("problem: fix") is wrapped,
    the fix starting on a line of its own; one without stays one line."""
    problem, sep, fix = text.partition(": ")
    if not sep:
        return [text]
    return [*textwrap.wrap(f"{problem}:", width), *textwrap.wrap(fix, width)]
