"""Flight of the Amazon Queen's archive and dialogue formats (training.fotaq), on a small archive
built here in the same layout, and the real-speech source that uses it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import fotaq


def dialogue_file(talk_key: int, levels: int, person: list[tuple[int, str]],
                  joe: list[tuple[int, str]]) -> bytes:
    """A .DOG file: container header, counts, the offset table, then both line lists."""
    def lines(items: list[tuple[int, str]], start: int) -> bytes:
        out = b""
        for line_id, text in items:
            raw = text.encode("latin-1")
            out += struct.pack(">hhB", 0, line_id, len(raw)) + raw
            if raw:
                out += b"\0" * (-(start + len(out)) % 4)
        return out

    joe_offset = 32 + 96 * levels
    joe_bytes = lines(joe, joe_offset)
    person_offset = joe_offset + len(joe_bytes) + (-len(joe_bytes) % 4)
    body = bytearray(person_offset)
    struct.pack_into(">5h", body, 0, -levels, 7, talk_key, len(joe), len(person))
    struct.pack_into(">HHH", body, 22, person_offset, 0, 0)
    body[joe_offset: joe_offset + len(joe_bytes)] = joe_bytes
    body += lines(person, person_offset)
    return b"AmBk" + b"\0" * 16 + bytes(body)


def archive(path: Path, resources: dict[str, bytes], compression: int = 1) -> Path:
    table_size = 4 + 6 + 2 + 1 + 2 + 21 * len(resources)
    head = b"QTBL" + b"CEM10\0" + b"\0\0" + struct.pack(">BH", compression, len(resources))
    table, blobs, offset = b"", b"", table_size
    for name, data in resources.items():
        table += struct.pack(">12sBII", name.encode(), 1, offset, len(data))
        blobs += data
        offset += len(data)
    path.write_bytes(head + table + blobs)
    return path


def test_segments_follow_the_stage_commands():
    text = "*FLYou again?*02Not voiced*GDGo away.*XY0123456789ALast words."
    assert list(fotaq.segments(text)) == [(0, ""), (1, "You again?"), (3, "Go away."),
                                          (4, "Last words.")]
    assert list(fotaq.segments("Plain.")) == [(0, "Plain.")]
    assert fotaq.clip_name(2, 1, "P", 1) == "020001P2"
    assert fotaq.clip_name(12, 0x1AB, "J", 0) == "1201ABJ1"


def test_voiced_lines_pair_every_clip_with_its_text(tmp_path):
    dog = dialogue_file(3, 2, person=[(0, "0"), (1, "*FLHello, King.*02"), (5, "")],
                        joe=[(1, "Hi!*02Who are you?"), (2, "Silent*GDSpoken.")])
    clips = {"030001P2.SB": b"p-hello", "030001J1.SB": b"j-hi", "030001J2.SB": b"j-who",
             "030002J2.SB": b"j-spoken", "039999J1.SB": b"no line"}
    path = archive(tmp_path / "queen.1c", {"BOB2.DOG": dog, **clips, "ROOM.LUM": b"x"})
    extension, found = fotaq.voiced_lines(path)
    assert extension == ".mp3"
    got = {line.clip: (line.speaker, line.text, fotaq.read_resource(path, resource))
           for resource, line in found}
    assert got == {"030001P2": ("bob", "Hello, King.", b"p-hello"),
                   "030001J1": ("joe", "Hi!", b"j-hi"),
                   "030001J2": ("joe", "Who are you?", b"j-who"),
                   "030002J2": ("joe", "Spoken.", b"j-spoken")}
    assert [r.offset for r, _ in found] == sorted(r.offset for r, _ in found)


def test_damaged_archives_are_reported(tmp_path):
    bad = tmp_path / "bad.1c"
    bad.write_bytes(b"RIFF" + b"\0" * 40)
    with pytest.raises(fotaq.FormatError, match="not a game archive"):
        fotaq.voiced_lines(bad)
    short = archive(tmp_path / "short.1c", {"A.SB": b"123"})
    short.write_bytes(short.read_bytes()[:-2])
    _, [resource] = fotaq.read_table(short)
    with pytest.raises(fotaq.FormatError, match="runs past the end"):
        fotaq.read_resource(short, resource)
    cut = archive(tmp_path / "cut.1c", {"A.DOG": b"AmBk" + b"\0" * 22})
    with pytest.raises(fotaq.FormatError, match="dialogue A.DOG is damaged"):
        fotaq.voiced_lines(cut)


def test_fotaq_source_writes_each_clip_once(tmp_path):
    from training import real_speech as R

    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    (cache / "debs" / "flight-of-the-amazon-queen_1.0.0-9_all.deb").write_bytes(b"")
    game = cache / "fotaq" / "deb" / "usr" / "share" / "scummvm"
    game.mkdir(parents=True)
    (cache / "fotaq" / "deb" / ".done").touch()  # as if downloaded and unpacked before
    tone = tmp_path / "tone.wav"
    sf.write(tone, 0.1 * np.sin(np.arange(8000) / 3.0), 16000)
    dog = dialogue_file(4, 1, person=[(3, "Take the banana.")], joe=[])
    archive(game / "queen.1c", {"SPARKY3.DOG": dog, "040003P1.SB": tone.read_bytes()},
            compression=0)
    (clip,) = R.fetch_fotaq(cache)
    assert (clip.source, clip.speaker, clip.key) == ("fotaq", "sparky", "040003P1")
    assert clip.transcript == "Take the banana." and clip.path.read_bytes() == tone.read_bytes()
    clip.path.write_bytes(b"kept")  # written once: a second call reuses the file
    assert R.fetch_fotaq(cache)[0].path.read_bytes() == b"kept"
    assert R.DEFAULT_SPLITS["fotaq"] == "train"
    assert R._entry({"clip_id": "fotaq-sparky-040003P1", "source": "fotaq", "key": "040003P1",
                     "person": 3, "split": "train"}).emotion == "neutral"
