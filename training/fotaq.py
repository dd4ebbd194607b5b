"""Flight of the Amazon Queen's voice acting: real English speech with transcripts.

The freeware adventure game (Debian package `flight-of-the-amazon-queen`, the CD version with
speech) keeps everything in one archive, `queen.1c`: a table of named resources, then their
bytes. Its speech clips (`*.SB`, MP3 in the Debian build) are named after the dialogue line they
voice, and the dialogue files (`*.DOG`) hold those lines' text, so every voiced dialogue line
gets its transcript. About 3 hours of speech by a cast of voice actors (many male voices, a few
female ones), at 11 kHz.

Formats (integers big-endian):

- archive: b"QTBL", a 6-byte version, 2 reserved bytes, the compression of the speech clips
  (1 byte: 0 raw, 1 MP3, 2 Ogg Vorbis, 3 FLAC), the number of resources (uint16); then per
  resource its name (12 bytes, NUL-padded), a bundle number (1 byte), offset and size (uint32).
- dialogue file: a 20-byte container header, then the dialogue: level count (int16, sign
  ignored), unique key, talk key, Joe's line count, the other person's line count (int16 each);
  at byte 22 the offset of the person's lines (uint16). Joe's lines start at 32 + 96 * levels.
  A line: 2 bytes, its id (int16), its text (1 length byte, then the characters); after a
  non-empty text the position is rounded up to a multiple of 4.
- a line's text may hold stage commands, `*` and two letters (`*XY` has 11 more characters:
  coordinates). They cut the text into segments, each voiced by its own clip; the text before a
  `*GD` or `*GM` command is not voiced.
- the clip of segment s of line i in a dialogue with talk key k said by the other person:
  `"%2d%4xP%1x" % (k, i, s + 1)` with spaces as zeros, upper case (`J` instead of `P` for Joe).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ARCHIVE_MAGIC = b"QTBL"
SPEECH_SUFFIX = ".SB"
AUDIO_EXTENSIONS = {0: ".sb", 1: ".mp3", 2: ".ogg", 3: ".flac"}
_HEADER = struct.Struct(">4s6s2xBH")
_ENTRY = struct.Struct(">12sBII")
_CONTAINER_HEADER = 20
_LEVEL_BYTES = 96
_UNVOICED = ("GD", "GM")  # commands whose preceding text has no clip
JOE = "joe"


class FormatError(ValueError):
    """Data that does not follow the game's formats."""


@dataclass(frozen=True)
class Resource:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class VoicedLine:
    clip: str  # the speech resource's name without ".SB"
    speaker: str  # "joe", or the dialogue partner (the dialogue file's name without digits)
    text: str


def read_table(archive: Path) -> tuple[int, list[Resource]]:
    """(speech compression, resources) of a queen.1c archive."""
    with open(archive, "rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise FormatError(f"{archive} is too short to be a game archive")
        magic, _version, compression, count = _HEADER.unpack(head)
        if magic != ARCHIVE_MAGIC:
            raise FormatError(f"{archive} is not a game archive (no {ARCHIVE_MAGIC!r} header)")
        table = f.read(_ENTRY.size * count)
    if len(table) < _ENTRY.size * count:
        raise FormatError(f"{archive}: the resource table is cut short")
    resources = []
    for raw_name, _bundle, offset, size in _ENTRY.iter_unpack(table):
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        resources.append(Resource(name, offset, size))
    return compression, resources


def read_resource(archive: Path, resource: Resource) -> bytes:
    with open(archive, "rb") as f:
        f.seek(resource.offset)
        data = f.read(resource.size)
    if len(data) != resource.size:
        raise FormatError(f"{archive}: {resource.name} runs past the end of the file")
    return data


def segments(text: str) -> Iterator[tuple[int, str]]:
    """(index, text) of each voiced segment of a dialogue line."""
    index, start, i = 0, 0, 0
    while i < len(text):
        if text[i] != "*":
            i += 1
            continue
        command = text[i + 1: i + 3]
        if command not in _UNVOICED:
            yield index, text[start:i]
        index += 1
        i += 3 + (11 if command == "XY" else 0)
        start = i
    if start < len(text):
        yield index, text[start:]


def clip_name(talk_key: int, line_id: int, who: str, segment: int) -> str:
    return f"{talk_key:2d}{line_id:4x}{who}{segment + 1:1x}".replace(" ", "0").upper()


def _lines(body: bytes, offset: int, count: int) -> list[tuple[int, str]]:
    lines = []
    for _ in range(count):
        (line_id,) = struct.unpack_from(">h", body, offset + 2)
        length = body[offset + 4]
        text = body[offset + 5: offset + 5 + length].decode("latin-1")
        offset += 5 + length
        if length:
            offset = (offset + 3) & ~3
        lines.append((line_id, text))
    return lines


def dialogue_lines(name: str, data: bytes) -> list[VoicedLine]:
    """The voiced segments of one dialogue file (`name`: e.g. "BOB3.DOG")."""
    body = data[_CONTAINER_HEADER:]
    try:
        levels, _unique, talk_key, joe_count, person_count = struct.unpack_from(">5h", body, 0)
        (person_offset,) = struct.unpack_from(">H", body, 22)
        partner = re.sub(r"\d+$", "", name.rsplit(".", 1)[0]).lower()
        said = [("P", partner, _lines(body, person_offset, person_count)),
                ("J", JOE, _lines(body, 32 + _LEVEL_BYTES * abs(levels), joe_count))]
    except (struct.error, IndexError) as exc:
        raise FormatError(f"dialogue {name} is damaged: {exc}") from exc
    out = []
    for who, speaker, lines in said:
        for line_id, text in lines:
            for segment, words in segments(text):
                if words.strip():
                    out.append(VoicedLine(clip_name(talk_key, line_id, who, segment), speaker,
                                          words.strip()))
    return out


def voiced_lines(archive: Path) -> tuple[str, list[tuple[Resource, VoicedLine]]]:
    """(audio file extension, [(speech resource, its line)]) for every voiced dialogue line
    whose clip the archive holds, in archive order."""
    compression, resources = read_table(archive)
    speech = {r.name[: -len(SPEECH_SUFFIX)]: r for r in resources
              if r.name.endswith(SPEECH_SUFFIX)}
    lines: dict[str, VoicedLine] = {}
    for resource in resources:
        if resource.name.endswith(".DOG"):
            for line in dialogue_lines(resource.name, read_resource(archive, resource)):
                lines.setdefault(line.clip, line)
    found = [(speech[clip], line) for clip, line in lines.items() if clip in speech]
    found.sort(key=lambda pair: pair[0].offset)
    return AUDIO_EXTENSIONS.get(compression, ".sb"), found
