"""The ONE place that writes shape-key curves.

Keys go into the active action of the shape-key datablock (`mesh.shape_keys`), or, one action
per sound strip, into NLA strips on its "EmoTalk" track (`write_line_action`). For each mapped
channel the keys inside the baked frame ranges are replaced; every other key of that curve keeps
all its attributes (handles, interpolation, easing, type, selection); other curves are untouched.
Writing is in bulk: `keyframe_points.add(n)` + `foreach_set`, one `fcurve.update()` per curve.

Blender API differences handled here: slotted actions with channelbag F-curves (4.4+, the only
way in 5.0, where `Action.fcurves` is gone) and plain `action.fcurves` (4.2, 4.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import bpy
import numpy as np

from .keys import NLA_TRACK, nla_strip_name, reduce_keys

GROUP = "EmoTalk"

# Keyframe attributes as (name, values per key, dtype) for foreach_get / foreach_set; enums are
# read and written as their integer values.
_ATTRS: tuple[tuple[str, int, type], ...] = (
    ("co", 2, np.float32), ("handle_left", 2, np.float32), ("handle_right", 2, np.float32),
    ("interpolation", 1, np.int32), ("handle_left_type", 1, np.int32),
    ("handle_right_type", 1, np.int32), ("easing", 1, np.int32), ("type", 1, np.int32),
    ("back", 1, np.float32), ("amplitude", 1, np.float32), ("period", 1, np.float32),
    ("select_control_point", 1, bool), ("select_left_handle", 1, bool),
    ("select_right_handle", 1, bool),
)  # fmt: skip


def _enum_value(prop: str, identifier: str) -> int:
    return bpy.types.Keyframe.bl_rna.properties[prop].enum_items[identifier].value


def data_path(shape_key_name: str) -> str:
    return f'key_blocks["{bpy.utils.escape_identifier(shape_key_name)}"].value'


def ensure_fcurves(key: bpy.types.Key):
    """The F-curve collection that animates `key`, creating action, slot and channelbag as
    needed; an existing action (and its other curves) is reused."""
    anim = key.animation_data or key.animation_data_create()
    if anim.action is None:
        anim.action = bpy.data.actions.new(f"{key.name}Action")
    action = anim.action
    if not hasattr(anim, "action_slot"):  # before 4.4: one flat list of curves per action
        return action.fcurves
    if anim.action_slot is None:
        slot = next(iter(getattr(anim, "action_suitable_slots", ()) or ()), None)
        anim.action_slot = slot or action.slots.new(id_type="KEY", name=key.name)
    return _channelbag(action, anim.action_slot).fcurves


def _channelbag(action: bpy.types.Action, slot):
    try:
        from bpy_extras.anim_utils import action_ensure_channelbag_for_slot
    except ImportError:  # 4.4 has the layered API without this helper
        layer = action.layers[0] if action.layers else action.layers.new("Layer")
        strip = layer.strips[0] if layer.strips else layer.strips.new(type="KEYFRAME")
        return strip.channelbag(slot, ensure=True)
    return action_ensure_channelbag_for_slot(action, slot)


def _find_or_new(fcurves, path: str):
    """The curve for `path`; new ones go into the "EmoTalk" group (the keyword differs:
    `group_name` on channelbags, `action_group` on legacy actions)."""
    curve = fcurves.find(path)
    if curve is not None:
        return curve
    for group in ({"group_name": GROUP}, {"action_group": GROUP}, {}):
        try:
            return fcurves.new(path, index=0, **group)
        except TypeError:
            continue
    raise RuntimeError(f"cannot create an F-curve for {path}")


def _read(points, count: int) -> dict[str, np.ndarray]:
    data = {}
    for name, width, dtype in _ATTRS:
        flat = np.zeros(count * width, dtype=dtype)
        points.foreach_get(name, flat)
        data[name] = flat.reshape(count, width)
    return data


def _write(points, data: dict[str, np.ndarray]) -> None:
    for name, _, _ in _ATTRS:
        points.foreach_set(name, data[name].ravel())


def _write_fresh(points, frames: np.ndarray, values: np.ndarray) -> None:
    """An empty curve: only the attributes that differ from a new key's defaults are set, which
    halves the time of a first bake."""
    points.add(len(frames))
    co = np.stack([frames, values], axis=1).astype(np.float32).ravel()
    for name in ("co", "handle_left", "handle_right"):
        points.foreach_set(name, co)
    linear = np.full(len(frames), _enum_value("interpolation", "LINEAR"), dtype=np.int32)
    points.foreach_set("interpolation", linear)


def replace_keys(fcurve, frames: np.ndarray, values: np.ndarray,
                 spans: Sequence[tuple[int, int]]) -> None:
    """Put keys (frames[i], values[i]) on `fcurve`, dropping only its keys inside `spans`
    (half-open frame ranges). Kept keys keep every attribute; new keys are linear."""
    points = fcurve.keyframe_points
    if not len(points):
        _write_fresh(points, frames, values)
        fcurve.update()
        return
    old = _read(points, len(points))
    x = old["co"][:, 0]
    inside = np.zeros(x.shape[0], dtype=bool)
    for lo, hi in spans:
        inside |= (x >= lo) & (x < hi)
    keep = ~inside
    points.clear()
    total = len(frames) + int(keep.sum())
    points.add(total)
    fresh = _read(points, total)  # Blender's defaults for new keys
    new = {name: fresh[name][: len(frames)].copy() for name, _, _ in _ATTRS}
    co = np.stack([frames, values], axis=1).astype(np.float32)
    new["co"], new["handle_left"], new["handle_right"] = co, co.copy(), co.copy()
    new["interpolation"][:] = _enum_value("interpolation", "LINEAR")
    merged = new
    if keep.any():
        merged = {k: np.concatenate([old[k][keep], new[k]]) for k in new}
    order = np.argsort(merged["co"][:, 0], kind="stable")
    _write(points, {k: v[order] for k, v in merged.items()})
    fcurve.update()


def write_shape_key_curves(
    key: bpy.types.Key,
    by_key: dict[str, int],
    blocks: Sequence[tuple[int, np.ndarray]],
    clear: dict[str, list[tuple[int, int]]] | None = None,
    tolerance: float = 0.0,
) -> int:
    """Key every mapped shape key from `blocks` = [(first frame, (n, 52) values), ...] in the
    active action, first removing each shape key's keys inside the blocks and inside its
    `clear` spans (what earlier bakes of these strips wrote elsewhere). `tolerance` > 0 keys
    only the frames that keys.reduce_keys keeps.

    Returns the number of keyframes written. Other shape keys and frames are not touched.
    """
    clear = clear or {}
    if not blocks and not clear:
        return 0
    spans = [(first, first + values.shape[0]) for first, values in blocks]
    fcurves = ensure_fcurves(key)
    written = 0
    for name, channel in by_key.items():
        if name not in key.key_blocks:
            continue
        frames, column = _keyed(blocks, channel, tolerance)
        replace_keys(_find_or_new(fcurves, data_path(name)), frames, column,
                     spans + clear.get(name, []))
        written += column.shape[0]
    for name, old in clear.items():  # shape keys this bake no longer writes
        curve = fcurves.find(data_path(name))
        if name not in by_key and curve is not None:
            replace_keys(curve, np.zeros(0, np.float32), np.zeros(0, np.float32), old)
    return written


def _keyed(blocks: Sequence[tuple[int, np.ndarray]], channel: int,
           tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames, values) of one channel over all blocks, reduced within `tolerance`."""
    frames, values = [], []
    for first, block in blocks:
        column = block[:, channel]
        kept = reduce_keys(column, tolerance)
        frames.append(first + kept.astype(np.float32))
        values.append(column[kept].astype(np.float32))
    if not frames:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(frames), np.concatenate(values)


def write_line_action(
    key: bpy.types.Key,
    by_key: dict[str, int],
    strip: str,
    first: int,
    values: np.ndarray,
    tolerance: float = 0.0,
) -> int:
    """One sound strip's line as an action of its own, in an NLA strip on the "EmoTalk" track
    of the shape keys (so lines can be moved, blended and muted, and hand keys in the active
    action play on top). A line baked before is replaced. Returns the keyframes written."""
    remove_line_action(key, strip)
    name = nla_strip_name(strip)
    action = bpy.data.actions.new(name)
    fcurves = _action_fcurves(action, key)
    written = 0
    for shape_key, channel in by_key.items():
        if shape_key not in key.key_blocks:
            continue
        frames, column = _keyed([(first, values)], channel, tolerance)
        replace_keys(_find_or_new(fcurves, data_path(shape_key)), frames, column, [])
        written += column.shape[0]
    anim = key.animation_data or key.animation_data_create()
    track = anim.nla_tracks.get(NLA_TRACK) or anim.nla_tracks.new()
    track.name = NLA_TRACK
    nla_strip = track.strips.new(name, first, action)
    nla_strip.name = name
    return written


def remove_line_action(key: bpy.types.Key, strip: str) -> None:
    """Remove a strip's NLA line (its NLA strip and, when nothing else uses it, its action)."""
    anim = key.animation_data
    track = anim.nla_tracks.get(NLA_TRACK) if anim is not None else None
    found = track.strips.get(nla_strip_name(strip)) if track is not None else None
    if found is None:
        return
    action = found.action
    track.strips.remove(found)
    if action is not None and action.users == 0:
        bpy.data.actions.remove(action)


def _action_fcurves(action: bpy.types.Action, key: bpy.types.Key):
    """The F-curves of a new action for `key`, in a slot of its own where actions have slots."""
    if not hasattr(action, "slots"):  # before 4.4
        return action.fcurves
    slot = action.slots.new(id_type="KEY", name=key.name)
    return _channelbag(action, slot).fcurves
