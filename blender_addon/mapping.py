"""Shape-key names -> EmoTalk's 52 ARKit channels (bpy-free, tested without Blender).

Rigs spell the ARKit names in many ways: Apple's raw values (`eyeBlink_L`), Unreal / Live Link
Face PascalCase (`EyeBlinkLeft`), Ready Player Me and VRoid "perfect sync" (the ARKit names),
Character Creator (`Eye_Blink_L`, `Brow_Drop_L`, `Eye_L_Look_Down`, `A14_Eye_Blink_Left`).
Matching uses `arkit.normalize` (the backend's own rule, one source of truth) and, for names that
are not a respelling, an alias table of one-to-one equivalents. Per-object overrides win over
everything: an animator can always say which key drives which channel, or that a key is ignored.

Viseme rigs (VRChat / Oculus, VRM, MMD, Preston Blair sets; `visemes.py`) are matched to the
virtual viseme channels after the 52, but only when the ARKit match leaves the rig without
jawOpen: a rig with an ARKit mouth speaks with it, and its viseme keys (Ready Player Me and
VRoid "perfect sync" models have both) stay still instead of moving the lips a second time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import visemes

try:  # the installed extension carries a verbatim copy of emotalk_core/arkit.py
    from . import arkit
except ImportError:  # running from the source tree: the one original
    from emotalk_core import arkit

CHANNELS: tuple[str, ...] = arkit.CHANNELS
# Every channel a key can take: the 52, then the virtual viseme channels (index 52 on).
ALL_CHANNELS: tuple[str, ...] = CHANNELS + visemes.CHANNELS
ALL_INDEX: dict[str, int] = {name: i for i, name in enumerate(ALL_CHANNELS)}
normalize = arkit.normalize

# One-to-one equivalents that normalisation alone cannot find. Keys are spelled as the rigs
# spell them; they are normalised once below. Many-to-one cases (Character Creator's split
# Brow_Raise_Inner_L/R or Cheek_Puff_L/R for ARKit's single browInnerUp / cheekPuff) are left to
# per-object overrides, because driving two keys from one channel is the animator's choice.
_ALIASES: dict[str, str] = {
    # Character Creator 3+/4 (CC3+ / CC4 Extended facial profile)
    "Brow_Drop_L": "browDownLeft", "Brow_Drop_R": "browDownRight",
    "Brow_Raise_Outer_L": "browOuterUpLeft", "Brow_Raise_Outer_R": "browOuterUpRight",
    "Cheek_Raise_L": "cheekSquintLeft", "Cheek_Raise_R": "cheekSquintRight",
    "Eye_L_Look_Up": "eyeLookUpLeft", "Eye_R_Look_Up": "eyeLookUpRight",
    "Eye_L_Look_Down": "eyeLookDownLeft", "Eye_R_Look_Down": "eyeLookDownRight",
    # CC's L/R after "Look" is the direction of gaze: a left eye looking left looks out.
    "Eye_L_Look_L": "eyeLookOutLeft", "Eye_L_Look_R": "eyeLookInLeft",
    "Eye_R_Look_L": "eyeLookInRight", "Eye_R_Look_R": "eyeLookOutRight",
    "Mouth_Roll_In_Upper": "mouthRollUpper", "Mouth_Roll_In_Lower": "mouthRollLower",
    "Mouth_Up_Upper_L": "mouthUpperUpLeft", "Mouth_Up_Upper_R": "mouthUpperUpRight",
    "Mouth_Down_Lower_L": "mouthLowerDownLeft", "Mouth_Down_Lower_R": "mouthLowerDownRight",
    # VRoid / VRM blink expressions (VRoid's own morphs and VRM 0.x / 1.0 presets)
    "Fcl_EYE_Close_L": "eyeBlinkLeft", "Fcl_EYE_Close_R": "eyeBlinkRight",
    "Blink_L": "eyeBlinkLeft", "Blink_R": "eyeBlinkRight",
    "blinkLeft": "eyeBlinkLeft", "blinkRight": "eyeBlinkRight",
}  # fmt: skip

ALIASES: dict[str, int] = {normalize(k): arkit.INDEX[v] for k, v in _ALIASES.items()}

# Prefixes that exporters put before the ARKit name: Character Creator's numbered ARKit set
# (`A25_Jaw_Open`), MetaHuman curves (`CTRL_expressions_jawOpen`), Maya blend-shape nodes and
# namespaces (`blendShape1.jawOpen`, `head:jawOpen`, `grp|jawOpen`).
_PREFIX = re.compile(r"^(?:A\d{2}_|CTRL_expressions_|.*[.:|](?=[A-Za-z]{3}))")

# Ranks: a lower rank wins when several keys match one channel.
RANK_OVERRIDE, RANK_EXACT, RANK_NORMALIZED, RANK_ALIAS = 0, 1, 2, 3


@dataclass(frozen=True)
class ChannelMapping:
    """The result of matching one object's shape keys.

    `by_key` maps a shape-key name to the channel index it receives (an index into
    ALL_CHANNELS: the viseme channels come after the 52); `unmatched` lists the ARKit channels
    that drive no key, in channel order, so the panel can show them.
    """

    by_key: dict[str, int]
    unmatched: tuple[str, ...]

    @property
    def matched_count(self) -> int:
        """How many of the 52 channels drive at least one key."""
        return len({i for i in self.by_key.values() if i < visemes.FIRST})

    @property
    def viseme_count(self) -> int:
        """How many viseme channels drive at least one key (0: the rig speaks in ARKit)."""
        return len({i for i in self.by_key.values() if i >= visemes.FIRST})

    def __bool__(self) -> bool:
        return bool(self.by_key)


def match_name(name: str) -> tuple[int, int] | None:
    """(channel index, rank) for one shape-key name, or None if it names no ARKit channel."""
    if name in arkit.INDEX:
        return arkit.INDEX[name], RANK_EXACT
    for candidate in _candidates(name):
        key = normalize(candidate)
        if key in arkit.NORMALIZED_INDEX:
            return arkit.NORMALIZED_INDEX[key], RANK_NORMALIZED
        if key in ALIASES:
            return ALIASES[key], RANK_ALIAS
    return None


def _candidates(name: str) -> list[str]:
    """The name itself, then the name without an exporter's prefix (if it has one)."""
    stripped = _PREFIX.sub("", name.strip(), count=1)
    return [name] if stripped == name or not stripped else [name, stripped]


def build_mapping(
    key_names: Iterable[str], overrides: Mapping[str, str | None] | None = None
) -> ChannelMapping:
    """Match shape keys to channels.

    `key_names` excludes the reference ("Basis") key. `overrides` maps a shape-key name to a
    channel name (ARKit or viseme: ALL_CHANNELS), or to None / "" to ignore that key; overrides
    for keys the mesh does not have are ignored (an object keeps them when a key is renamed or
    removed). A channel named by an
    override drives only the keys its overrides name. Otherwise each channel drives the one key
    that matches it best (exact name, then respelling, then alias; the first key on a tie), so
    a rig that has both `eyeBlinkLeft` and `Fcl_EYE_Close_L` does not blink twice. Viseme
    keys follow the same rule, matched only when no key takes jawOpen (see the module).
    """
    names = list(dict.fromkeys(key_names))
    overrides = dict(overrides or {})
    by_key: dict[str, int] = {}
    for name in names:
        if name in overrides and overrides[name]:
            index = ALL_INDEX.get(str(overrides[name]))
            if index is not None:
                by_key[name] = index
    claimed = set(by_key.values())
    best: dict[int, tuple[int, int, str]] = {}
    for order, name in enumerate(names):
        if name in overrides:
            continue
        hit = match_name(name)
        if hit is None or hit[0] in claimed:
            continue
        index, rank = hit
        if index not in best or (rank, order) < best[index][:2]:
            best[index] = (rank, order, name)
    for index, (_, _, name) in best.items():
        by_key[name] = index
    if arkit.JAW_OPEN not in by_key.values():
        _match_visemes(names, overrides, by_key)
    by_key = {name: by_key[name] for name in names if name in by_key}  # keep key order
    used = set(by_key.values())
    unmatched = tuple(name for i, name in enumerate(CHANNELS) if i not in used)
    return ChannelMapping(by_key=by_key, unmatched=unmatched)


def _match_visemes(names: list[str], overrides: Mapping[str, str | None],
                   by_key: dict[str, int]) -> None:
    """Add the rig's viseme keys to `by_key`: one key per viseme channel that no override has
    claimed (the lower rank, then the first key), none that overrides or ARKit took. Keys with
    overrides still count towards recognising the set."""
    candidates = [name for name in names if name in overrides or name not in by_key]
    position = {name: i for i, name in enumerate(names)}
    claimed = set(by_key.values())
    best: dict[int, tuple[int, int, str]] = {}
    for name, (index, rank) in visemes.match_names(candidates).items():
        if name in overrides or index in claimed:
            continue
        order = position[name]
        if index not in best or (rank, order) < best[index][:2]:
            best[index] = (rank, order, name)
    for index, (_, _, name) in best.items():
        by_key[name] = index
