"""Sound strips of the scene's sequencer -> audio windows (`timing.StripTiming`) and files.

Thin bpy code: property names differ between Blender versions (`sequences` until 4.x, `strips`
from 4.4 and only that in 5.0; `frame_final_start` until 5.1, `left_handle` from 5.2), so every
read goes through a getattr fallback, and the arithmetic lives in `timing.py`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import bpy

from . import checks, transcripts
from .backend import BakeError
from .timing import StripTiming


def _first(obj: object, names: tuple[str, ...], default: object = None) -> object:
    """The first of `names` that `obj` has (newer spelling first)."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def strip_collection(scene: bpy.types.Scene):
    """The top-level strips, or None when the scene has no sequencer."""
    editor = scene.sequence_editor
    if editor is None:
        return None
    return _first(editor, ("strips", "sequences"))


def sequencer_scene(context: bpy.types.Context) -> bpy.types.Scene | None:
    """The scene whose strips the Video Sequencer shows: from Blender 5.0 the workspace's
    sequencer scene, which may differ from the window's scene; else (or when unset) the scene."""
    workspace = getattr(context, "workspace", None)
    return getattr(workspace, "sequencer_scene", None) or context.scene


def sound_selection(scene: bpy.types.Scene | None) -> checks.SoundSelection:
    """The sound strips to bake among those the sequencer shows: at the top level, or inside
    the meta strips the user has opened (`meta_stack`), whose handles clip what they play."""
    editor = scene.sequence_editor if scene is not None else None
    if editor is None:
        return checks.SoundSelection()
    container, channels = editor, getattr(editor, "channels", None)
    span, silenced_by = checks.FULL_SPAN, None
    for meta in getattr(editor, "meta_stack", ()) or ():  # outermost first
        if silenced_by is None and _mute_reason(meta, channels):
            silenced_by = meta.name
        span = (max(span[0], left_handle(meta)), min(span[1], right_handle(meta)))
        container, channels = meta, getattr(meta, "channels", None)
    level = [_node(s, channels, deep=False) for s in _children(container)]
    return checks.select_sounds(level, span, silenced_by)


def selected_sound_strips(scene: bpy.types.Scene | None) -> list:
    """The sound strips a bake would hear, in timeline order (muted ones left out)."""
    return [pick.ref for pick in sound_selection(scene).picks]


def active_sound_strip(scene: bpy.types.Scene | None):
    """The sequencer's active strip when it is a sound strip, else None."""
    editor = scene.sequence_editor if scene is not None else None
    strip = getattr(editor, "active_strip", None) if editor is not None else None
    return strip if strip is not None and strip.type == "SOUND" else None


def _children(container) -> list:
    """The strips directly inside the sequencer or a meta strip."""
    return list(_first(container, ("strips", "sequences"), ()) or ())


def _node(strip, channels, deep: bool) -> checks.StripNode:
    """A strip for `checks.select_sounds`; a meta strip's contents are read only when they can
    matter (it is selected, or inside a selected one), since the panel asks on every redraw."""
    children: tuple[checks.StripNode, ...] = ()
    if strip.type == "META" and (deep or strip.select):
        inner = getattr(strip, "channels", None)
        children = tuple(_node(s, inner, deep=True) for s in _children(strip))
    return checks.StripNode(strip, strip.name, strip.type, bool(strip.select), left_handle(strip),
                            right_handle(strip), _mute_reason(strip, channels), children)


def _mute_reason(strip, channels) -> str | None:
    """Why the strip is silent (itself or its channel muted); None when it plays."""
    if getattr(strip, "mute", False):
        return checks.MUTED
    number = int(getattr(strip, "channel", 0))
    if channels is not None and 0 <= number < len(channels) and channels[number].mute:
        return f"its channel {number} is muted"
    return None


def left_handle(strip) -> int:
    return int(_first(strip, ("left_handle", "frame_final_start")))


def right_handle(strip) -> int:
    return int(_first(strip, ("right_handle", "frame_final_end")))


def strip_timing(strip, audio_path: str | None) -> StripTiming:
    """The strip's numbers; the sound's duration comes from audaspace when it can read it."""
    content_start = float(_first(strip, ("content_start", "frame_start")))
    length = _first(strip, ("content_duration", "frame_duration"))
    return StripTiming(
        name=strip.name,
        content_start=content_start,
        left_handle=left_handle(strip),
        right_handle=right_handle(strip),
        sound_offset=float(getattr(strip, "sound_offset", 0.0) or 0.0),
        sound_duration=sound_duration(audio_path) if audio_path else None,
        content_end=content_start + float(length) if length is not None else None,
    )


def check_speed(strip) -> None:
    """Retimed strips play the sound at another speed; their keys would not match the audio."""
    keys = getattr(strip, "retiming_keys", None)
    if keys is not None and len(keys) > 0:
        raise BakeError(f"strip '{strip.name}' is retimed (its speed changed); EmoTalk animates "
                        "sound at its original speed: reset the strip's retiming first")


def sound_file_glob() -> str:
    """The file browser's filter for files a sound strip can use: Blender's own audio and movie
    extensions (audaspace reads a movie's sound; the backend reads both through FFmpeg)."""
    extensions = set(bpy.path.extensions_audio) | set(bpy.path.extensions_movie)
    return ";".join(f"*{ext}" for ext in sorted(extensions))


def sound_duration(path: str) -> float | None:
    """Seconds of audio in `path`, or None if audaspace cannot say (the backend then reads to
    the file's end)."""
    try:
        import aud

        sound = aud.Sound(path)
        rate = float(sound.specs[0])
        return float(sound.length) / rate if rate > 0 else None
    except Exception:  # audaspace raises plain errors for unreadable files; the backend reports
        return None


def audio_file(strip, temp_dir: str) -> str:
    """A readable file with the strip's sound. A packed sound is written to `temp_dir` first,
    so the backend (another process) can read it. Raises BakeError naming the strip."""
    sound = getattr(strip, "sound", None)
    if sound is None:
        raise BakeError(f"strip '{strip.name}' has no sound")
    packed = getattr(sound, "packed_file", None)
    if packed is not None:
        suffix = Path(sound.filepath).suffix or ".wav"
        path = Path(temp_dir) / f"{bpy.path.clean_name(sound.name)}{suffix}"
        path.write_bytes(bytes(packed.data))
        return str(path)
    path = bpy.path.abspath(sound.filepath, library=sound.library)
    if not path or not os.path.isfile(path):
        raise BakeError(f"strip '{strip.name}': sound file not found: {path or '(no path)'}")
    if not os.access(path, os.R_OK):
        raise BakeError(f"strip '{strip.name}': sound file is not readable: {path}")
    return os.path.normpath(path)


def sound_path(strip) -> str | None:
    """The absolute path Blender records for the strip's sound, whether or not the file exists
    or the sound is packed: where its transcript's .txt file would be."""
    sound = getattr(strip, "sound", None)
    if sound is None or not sound.filepath:
        return None
    return os.path.normpath(bpy.path.abspath(sound.filepath, library=sound.library))


def transcript_text(strip) -> str:
    """The strip's Transcript field ("" when empty)."""
    return str(getattr(strip, transcripts.PROPERTY, "") or "")


def set_transcript(strip, text: str) -> None:
    setattr(strip, transcripts.PROPERTY, text)


def strip_transcript(strip) -> transcripts.Transcript:
    """What the strip's animate request carries: its field, else the .txt beside its sound."""
    return transcripts.choose(transcript_text(strip), sound_path(strip))


def make_temp_dir() -> str:
    return tempfile.mkdtemp(prefix="emotalk-")


def remove_temp_dir(path: str | None) -> None:
    """The one cleanup of packed-sound copies, whatever way the bake ended."""
    if not path:
        return
    for child in Path(path).glob("*"):
        with contextlib.suppress(OSError):
            child.unlink()
    with contextlib.suppress(OSError):
        Path(path).rmdir()


def add_sound_strip(scene: bpy.types.Scene, filepath: str, frame: int):
    """A new strip for `filepath` at `frame` on a free channel; it becomes the only selected
    strip, so the next Animate uses it."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = strip_collection(scene)
    channel = _free_channel(strips, frame)
    name = Path(filepath).stem or "audio"
    try:
        strip = strips.new_sound(name, filepath, channel, frame)
    except RuntimeError as exc:
        raise BakeError(f"cannot add {filepath} as a sound strip: {exc}") from exc
    for other in strips:
        other.select = False
    strip.select = True
    with contextlib.suppress(AttributeError, TypeError):
        editor.active_strip = strip
    return strip


def _free_channel(strips, frame: int) -> int:
    """The lowest channel with nothing at `frame` or later that could overlap."""
    busy = {s.channel for s in strips if right_handle(s) > frame}
    channel = 1
    while channel in busy and channel < 128:
        channel += 1
    return channel
