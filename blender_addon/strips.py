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

from . import transcripts
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


def selected_sound_strips(scene: bpy.types.Scene) -> list:
    strips = strip_collection(scene)
    if strips is None:
        return []
    found = [s for s in strips if s.type == "SOUND" and s.select]
    return sorted(found, key=lambda s: left_handle(s))


def active_sound_strip(scene: bpy.types.Scene):
    """The sequencer's active strip when it is a sound strip, else None."""
    editor = scene.sequence_editor
    strip = getattr(editor, "active_strip", None) if editor is not None else None
    return strip if strip is not None and strip.type == "SOUND" else None


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
