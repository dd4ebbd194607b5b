"""The 52 ARKit blendshape channels in EmoTalk's order, and name normalisation.

EmoTalk's channel order is alphabetical (index 8/9 are the blinks, 24 is jawOpen). Other tools
use other orders (Live Link Face CSV, Unreal's enum), so curves are always exchanged by name.
"""

from __future__ import annotations

import re

CHANNELS: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)  # fmt: skip

NUM_CHANNELS = len(CHANNELS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

BLINK_CHANNELS = (INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"])
JAW_OPEN = INDEX["jawOpen"]

# Channels driven by speech articulation; the mouth-amplitude control scales these.
MOUTH_CHANNELS: tuple[int, ...] = tuple(
    i for i, n in enumerate(CHANNELS) if n.startswith(("mouth", "jaw", "tongue", "cheekPuff"))
)
_SIDE_SUFFIX = re.compile(r"(?:[._\-\s]?)(left|right|l|r)$", re.IGNORECASE)


def normalize(name: str) -> str:
    """Reduce a shape-key or channel name to a comparable key.

    Case, separators (`_`, `.`, `-`, spaces) and the spelling of the side (`_L`, `.R`, `Left`)
    are ignored: `eyeBlink_L`, `EyeBlinkLeft`, `eye_blink_left` and `eyeBlinkLeft` all give
    `eyeblinkleft`.
    """
    stem = name.strip()
    side = ""
    match = _SIDE_SUFFIX.search(stem)
    if match and len(stem) > len(match.group(0)):
        token = match.group(1).lower()
        # A bare trailing l/r is a side only when set off by a separator or a capital letter,
        # so that names such as "mouthRollLower" keep their last letter.
        sep = match.group(0)[0] in "._- "
        single = token in ("l", "r")
        if not single or sep or match.group(1).isupper():
            side = "left" if token.startswith("l") else "right"
            stem = stem[: match.start()]
    return re.sub(r"[^0-9a-z]", "", stem.lower()) + side


NORMALIZED_INDEX: dict[str, int] = {normalize(n): i for i, n in enumerate(CHANNELS)}


def channel_index(name: str) -> int | None:
    """Index of the ARKit channel that `name` spells, or None."""
    return NORMALIZED_INDEX.get(normalize(name))


def aperture(curves):  # noqa: ANN001, ANN201 (numpy arrays or torch tensors alike)
    """(..., T, 52) -> (..., T) how far the lips are apart (DESIGN.md section 8): the jaw's
    opening less the lips pressed together over it, plus the lips' own parting."""
    c = curves
    return (c[..., INDEX["jawOpen"]] - c[..., INDEX["mouthClose"]]
            + 0.5 * (c[..., INDEX["mouthLowerDownLeft"]] + c[..., INDEX["mouthLowerDownRight"]])
            / 2
            + 0.25 * (c[..., INDEX["mouthUpperUpLeft"]] + c[..., INDEX["mouthUpperUpRight"]]) / 2)
