"""Which transcript a strip's animate request carries.

The text typed into the strip's Transcript field wins; without one, a UTF-8 `.txt` file named
like the audio file, in the same folder (`line04.wav` -> `line04.txt`), as dialogue pipelines
often keep them; else none. A transcript only refines the phone timing of models with a
phonetic input, so a sidecar file that cannot be read is a warning and the strip is animated
from its audio alone, never an error.

bpy-free (standard library only), so it is tested without Blender.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROPERTY = "emotalk_transcript"  # the StringProperty registered on sequencer strips
SIDECAR_SUFFIX = ".txt"
# A line of dialogue is a few hundred bytes; a larger file beside the audio is something else
# (a log, a script of the whole scene) and would only make the request huge.
MAX_SIDECAR_BYTES = 64 * 1024

SOURCE_STRIP = "strip"
SOURCE_FILE = "file"


@dataclass(frozen=True)
class Transcript:
    """The chosen text (None: no transcript), where it came from, and notes for the user."""

    text: str | None = None
    source: str | None = None  # SOURCE_STRIP, SOURCE_FILE or None
    path: Path | None = None  # the sidecar file, when it was read
    warnings: tuple[str, ...] = ()


def sidecar_path(audio_path: str | os.PathLike[str]) -> Path:
    """`dir/line04.wav` -> `dir/line04.txt`."""
    return Path(audio_path).with_suffix(SIDECAR_SUFFIX)


def choose(strip_text: str | None, audio_path: str | os.PathLike[str] | None) -> Transcript:
    """The strip's own text when it has any, else the sidecar file of `audio_path` (the
    sound's original file, not a temporary copy of a packed sound), else none."""
    if strip_text and strip_text.strip():
        return Transcript(strip_text.strip(), SOURCE_STRIP)
    if not audio_path:
        return Transcript()
    path = sidecar_path(audio_path)
    if not path.is_file():
        return Transcript()
    return read_sidecar(path)


def read_sidecar(path: Path) -> Transcript:
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            return _ignored(path, f"it is {size // 1024} KiB, more than a line's transcript")
        text = path.read_text(encoding="utf-8-sig").strip()  # Notepad writes a byte-order mark
    except UnicodeDecodeError as exc:
        return _ignored(path, f"it is not UTF-8 text (byte {exc.start}); save it as UTF-8")
    except OSError as exc:
        return _ignored(path, f"it cannot be read ({exc.strerror or exc})")
    if not text:
        return Transcript()
    return Transcript(text, SOURCE_FILE, path)


def _ignored(path: Path, why: str) -> Transcript:
    return Transcript(warnings=(f"transcript file {path} was not used: {why}",))


def panel_hint(strip_text: str | None, audio_path: str | os.PathLike[str] | None) -> str:
    """One line under the active strip's Transcript field: what a bake will use when the field
    is empty ("" when it is filled). Only checks that the file exists: the panel redraws often."""
    if strip_text and strip_text.strip():
        return ""
    if not audio_path:
        return "No transcript: phones come from the audio alone"
    name = sidecar_path(audio_path).name
    if sidecar_path(audio_path).is_file():
        return f"Empty: {name} beside the audio is used"
    return f"Empty: type it, or put {name} beside the audio"
