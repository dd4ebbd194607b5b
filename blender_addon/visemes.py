"""Viseme rigs (bpy-free, tested without Blender): the 52 ARKit channels -> viseme weights.

Many game and VTuber rigs have no ARKit mouth, only visemes: one shape key per mouth position of
a set of speech sounds. EmoTalk drives them through virtual channels after the 52 ARKit ones
(index 52 on), computed from each frame's ARKit coefficients by `extend`. The canonical set is
the 15 visemes of Oculus / Meta lip sync, also VRChat's and Ready Player Me's; the other rig
families' keys map onto it (`match_names`):

| family | shape keys (any case; also after `vrc.v_`, `vrc.`, `v_`, `viseme_`, `Fcl_MTH_`) |
|---|---|
| Oculus, VRChat, Ready Player Me | sil PP FF TH DD kk CH SS nn RR aa E ih oh ou (or I O U) |
| VRM 1.0 | aa ih ou ee oh (ee is E) |
| VRM 0.x, VRoid, MMD | A I U E O (`Fcl_MTH_A`, ...), あ い う え お |
| Preston Blair | AI E O U WQ L MBP FV etc rest |

A frame becomes viseme weights as follows. Each viseme is a mouth pose, written as ARKit
coefficients (`POSES`: the targets EmoTalk's training teacher gives that viseme's phones, lip
contact included). Frames and poses are compared by `features`, what a viseme shows of the
mouth: the lip gap the jaw makes (jawOpen - mouthClose), lips held shut (mouthClose), pressed
and rolled in, the upper lip raised and the lower lowered, rounding (funnel, pucker), spreading
(stretch) and the tongue. mouthSmile is left out: it is mostly emotion, and a smiling silence is
no "ee". For each viseme v with pose p and a frame f:

    projection_v = max(0, f.p / p.p)                       how much of the pose the frame holds
    unexplained_v = |f - min(projection_v, MAX_FIT) p|^2 / (|f|^2 + eps)
    share = softmax(-unexplained / SHARPNESS) over the 14   one viseme leads at a time
    weight_v = share_v * min(1, projection_v / FULL)        sil = 1 - the sum of the others

so every weight is in [0, 1] and the 15 sum to 1, as viseme rigs expect: an open jaw gives aa,
shut lips PP, a pucker ou, a resting face sil.

The 52 channels carry the lips, the jaw and tongueOut, not where the tongue touches: DD (t, d),
kk (k, g), nn (n, l), SS (s, z), CH (sh, ch), RR (r) and TH are told apart only by the lips and
jaw they come with, so they are approximations, and the similar DD, kk and nn share frames.

Preston Blair's coarser set gets two derived channels, sums of the canonical ones:
`viseme_etc` (its teeth-together consonants C D G K N R S TH Y Z: DD + kk + SS + TH + CH + RR)
and `viseme_E_ih` (its E mouth serves both "bed" and "see").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

try:  # the installed extension carries a verbatim copy of emotalk_core/arkit.py
    from . import arkit
except ImportError:  # running from the source tree: the one original
    from emotalk_core import arkit

# The canonical 15 in Oculus order, with the sounds each stands for (Oculus' examples).
SOUNDS: dict[str, str] = {
    "sil": "silence", "PP": "p, b, m", "FF": "f, v", "TH": "th", "DD": "t, d", "kk": "k, g",
    "CH": "ch, j, sh", "SS": "s, z", "nn": "n, l", "RR": "r", "aa": "a as in car",
    "E": "e as in bed", "ih": "i as in tip, see", "oh": "o as in toe", "ou": "u as in book",
}  # fmt: skip
OCULUS: tuple[str, ...] = tuple(SOUNDS)
DERIVED: dict[str, tuple[str, ...]] = {
    "etc": ("DD", "kk", "SS", "TH", "CH", "RR"),
    "E_ih": ("E", "ih"),
}
# Virtual channel names; channel index = arkit.NUM_CHANNELS + position.
CHANNELS: tuple[str, ...] = tuple(f"viseme_{v}" for v in (*OCULUS, *DERIVED))
FIRST = arkit.NUM_CHANNELS
INDEX: dict[str, int] = {name: FIRST + i for i, name in enumerate(CHANNELS)}
_SLOT = {v: i for i, v in enumerate(OCULUS)}


def describe(channel: str) -> str:
    """What a virtual channel stands for, for the override menu."""
    viseme = channel.removeprefix("viseme_")
    if viseme in DERIVED:
        return f"Viseme {' + '.join(DERIVED[viseme])} (Preston Blair's {viseme.split('_')[0]})"
    return f"Viseme {viseme} ({SOUNDS[viseme]}), from the ARKit mouth"


# ARKit poses of the 14 spoken visemes (sil is what is left); a sided name sets both sides.
POSES: dict[str, dict[str, float]] = {
    "PP": {"jawOpen": 0.10, "mouthClose": 0.28, "mouthPress": 0.35, "mouthRollLower": 0.08,
           "mouthRollUpper": 0.05},
    "FF": {"jawOpen": 0.10, "mouthRollLower": 0.45, "mouthUpperUp": 0.22,
           "mouthShrugUpper": 0.10, "mouthFunnel": 0.05},
    "TH": {"jawOpen": 0.14, "tongueOut": 0.30, "mouthLowerDown": 0.12, "mouthUpperUp": 0.08},
    "DD": {"jawOpen": 0.12, "mouthLowerDown": 0.08, "mouthUpperUp": 0.05},
    "kk": {"jawOpen": 0.16},
    "CH": {"jawOpen": 0.10, "mouthFunnel": 0.45, "mouthPucker": 0.25, "mouthUpperUp": 0.18,
           "mouthLowerDown": 0.18, "mouthShrugUpper": 0.10},
    "SS": {"jawOpen": 0.06, "mouthStretch": 0.22, "mouthUpperUp": 0.12, "mouthLowerDown": 0.12},
    "nn": {"jawOpen": 0.20, "mouthLowerDown": 0.10, "tongueOut": 0.04},
    "RR": {"jawOpen": 0.12, "mouthPucker": 0.35, "mouthFunnel": 0.25},
    "aa": {"jawOpen": 0.55, "mouthLowerDown": 0.30, "mouthUpperUp": 0.10, "mouthFunnel": 0.05},
    "E": {"jawOpen": 0.33, "mouthLowerDown": 0.25, "mouthUpperUp": 0.10, "mouthStretch": 0.20},
    "ih": {"jawOpen": 0.18, "mouthStretch": 0.30, "mouthLowerDown": 0.10, "mouthUpperUp": 0.05},
    "oh": {"jawOpen": 0.45, "mouthLowerDown": 0.20, "mouthFunnel": 0.35, "mouthPucker": 0.20},
    "ou": {"jawOpen": 0.13, "mouthPucker": 0.70, "mouthFunnel": 0.35},
}  # fmt: skip
# The model's curves are smoothed, so its clear phones peak at about 3/4 of the teacher's targets:
# that much of a pose already shows the viseme fully.
FULL = 0.75
# A frame up to this multiple of a pose (the teacher's loudest stressed phones) still has the
# pose's shape; a pose is not stretched further to explain a bigger frame.
MAX_FIT = 1.4
SHARPNESS = 0.05  # softmax temperature: lower, fewer visemes share a frame
_EPS = 1e-4  # a frame's squared feature length below which it is at rest


def features(values: np.ndarray) -> np.ndarray:
    """(..., 52) coefficients -> (..., 12) what a viseme shows of the mouth (see the module)."""
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)

    def get(name: str) -> np.ndarray:
        if name in arkit.INDEX:
            return c[..., arkit.INDEX[name]]
        return 0.5 * (c[..., arkit.INDEX[name + "Left"]] + c[..., arkit.INDEX[name + "Right"]])

    gap = np.clip(get("jawOpen") - get("mouthClose"), 0.0, 1.0)
    return np.stack([gap] + [get(n) for n in (
        "mouthClose", "mouthPress", "mouthRollLower", "mouthRollUpper", "mouthLowerDown",
        "mouthUpperUp", "mouthShrugUpper", "mouthFunnel", "mouthPucker", "mouthStretch",
        "tongueOut")], axis=-1)


def _pose_row(pose: dict[str, float]) -> np.ndarray:
    row = np.zeros(arkit.NUM_CHANNELS)
    for name, value in pose.items():
        for channel in (name, name + "Left", name + "Right"):
            if channel in arkit.INDEX:
                row[arkit.INDEX[channel]] = value
    return row


_POSES = features(np.stack([_pose_row(POSES[v]) for v in OCULUS[1:]]))  # (14, 12)
_POSE_NORM = np.sum(_POSES * _POSES, axis=1)  # (14,)


def weights(values: np.ndarray) -> np.ndarray:
    """(T, 52) ARKit coefficients -> (T, 15) weights of the canonical visemes, OCULUS order."""
    f = features(values)
    dot = f @ _POSES.T  # (T, 14)
    projection = np.maximum(dot / _POSE_NORM, 0.0)
    scale = np.minimum(projection, MAX_FIT)
    length = np.sum(f * f, axis=1, keepdims=True)
    # |f - scale p|^2 expanded, so no (T, 14, 12) array is made for long lines
    residual = np.maximum(length - 2 * scale * dot + scale * scale * _POSE_NORM, 0.0)
    logits = -residual / (length + _EPS) / SHARPNESS
    share = np.exp(logits - logits.max(axis=1, keepdims=True))
    share /= share.sum(axis=1, keepdims=True)
    spoken = share * np.minimum(projection / FULL, 1.0)
    sil = np.clip(1.0 - spoken.sum(axis=1, keepdims=True), 0.0, 1.0)
    return np.concatenate([sil, spoken], axis=1)


def extend(values: np.ndarray) -> np.ndarray:
    """(T, 52) -> (T, 52 + len(CHANNELS)) float32: the ARKit columns unchanged, then every
    virtual channel (the canonical visemes, then the derived ones)."""
    values = np.asarray(values, dtype=np.float32)
    canon = weights(values)
    derived = [canon[:, [_SLOT[v] for v in parts]].sum(axis=1) for parts in DERIVED.values()]
    return np.concatenate([values[:, :FIRST], canon, np.stack(derived, axis=1)],
                          axis=1).astype(np.float32)


# -- shape-key names ------------------------------------------------------------------------------
_PREFIX = re.compile(r"^(?:vrc[._]v_|vrc[._]|fcl_mth_|viseme[._]?|v_)", re.IGNORECASE)
# Spellings (lower case, prefix removed) of every family but Preston Blair's -> viseme.
_SPELLINGS: dict[str, str] = {
    **{v.lower(): v for v in OCULUS},
    "i": "ih", "o": "oh", "u": "ou",  # Ready Player Me, VRM 0.x, VRoid
    "a": "aa", "ee": "E",  # VRM 0.x; VRM 1.0's ee is the e of "bed"
    "あ": "aa", "い": "ih", "う": "ou", "え": "E", "お": "oh",  # MMD
    "ア": "aa", "イ": "ih", "ウ": "ou", "エ": "E", "オ": "oh",
}  # fmt: skip
# Preston Blair's names; a set is his when it has one of the names no other family uses.
_BLAIR: dict[str, str] = {
    "ai": "aa", "e": "E_ih", "o": "oh", "u": "ou", "wq": "ou", "l": "nn", "mbp": "PP",
    "fv": "FF", "etc": "etc", "rest": "sil",
}  # fmt: skip
_BLAIR_ONLY = frozenset({"ai", "wq", "mbp", "fv", "etc"})
_SECOND_CHOICE = frozenset({"wq"})  # W's mouth takes ou only in a set without U
# Fewer visemes than this are no viseme set: a key named "A" or "E" alone is something else.
MIN_SET = 3


def spelling(name: str) -> str:
    """The part of a shape-key name that names a viseme, lower case."""
    stem = name.strip()
    return (_PREFIX.sub("", stem, count=1) or stem).lower()


def match_names(names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Shape-key name -> (virtual channel index, rank: 0, or 1 for a second choice) for the
    names that spell a viseme, when they make a set of at least MIN_SET visemes; else {}."""
    spelled = {name: spelling(name) for name in names}
    table = _BLAIR if _BLAIR_ONLY & set(spelled.values()) else _SPELLINGS
    found = {name: (INDEX[f"viseme_{table[s]}"], int(s in _SECOND_CHOICE))
             for name, s in spelled.items() if s in table}
    if len({index for index, _ in found.values()}) < MIN_SET:
        return {}
    return found
