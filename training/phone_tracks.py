"""Phone-loop tracks of training clips, cached next to the manifest.

Models with a phonetic input read, at inference, the phones that pocketsphinx's phone loop
decodes from the audio (`emotalk_core.phonetics.loop`). Training must show them the same
decoder's output, errors included, so every clip's loop phones are decoded once with the very
function inference calls and stored as `<manifest folder>/phone_loop/<clip id>.json` (the phone
file format of the manifest's `phones` key). Training makes missing ones on first use;
`python -m training.data phone-loop --manifest FILE` makes them ahead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from emotalk_core.audio import load_audio
from emotalk_core.errors import EmoTalkError
from emotalk_core.files import atomic_write
from emotalk_core.manifest import ManifestEntry

CACHE_FOLDER = "phone_loop"


def cache_dir(manifest: Path) -> Path:
    return manifest.parent / CACHE_FOLDER


def cache_path(folder: Path, clip_id: str) -> Path:
    """The track file of a clip: its id with characters unsafe in file names replaced."""
    return folder / (re.sub(r"[^A-Za-z0-9._-]", "_", clip_id) + ".json")


def decode_clip(audio: str) -> list[list[float | str]]:
    """[[phone, start s, end s], ...] of one audio file, as inference decodes it."""
    from emotalk_core.phonetics import loop

    phones = loop.decode(load_audio(audio), workers=1)
    return [[p, round(a, 3), round(b, 3)] for p, a, b in phones]


def _decode_to(item: tuple[str, str]) -> str | None:
    audio, out = item
    try:
        phones = decode_clip(audio)
    except EmoTalkError as exc:
        return f"{audio}: {exc.message}"
    with atomic_write(out, "w") as handle:
        handle.write(json.dumps({"phones": phones}))
    return None


def build(manifest: Path, entries: Sequence[ManifestEntry], jobs: int = 2) -> list[str]:
    """Decode the clips of `entries` whose track is not cached yet; returns the problems (one
    line per clip that could not be decoded: training then gives it no track)."""
    folder = cache_dir(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(str(e.audio), str(cache_path(folder, e.clip_id))) for e in entries
            if not cache_path(folder, e.clip_id).is_file()]
    if not todo:
        return []
    problems = []
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        for problem in tqdm(pool.map(_decode_to, todo, chunksize=4), total=len(todo),
                            desc="phone loop", unit="clip"):
            if problem:
                problems.append(problem)
    return problems
