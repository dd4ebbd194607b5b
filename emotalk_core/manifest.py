"""The training-data manifest: JSON Lines, one clip per line.

3D-ETF, the synthetic corpus and any other source are described by the same manifest, so
training and the `emotalk presets` command load every source through one path. A line reads:

    {"clip_id": "ravdess-03-01-05-02-01-01-12", "audio": "audio/x.wav",
     "blendshapes": "blendshape/x.npy", "emotion": "angry", "intensity": 1, "person": 11,
     "content_id": "ravdess-s01", "split": "train"}

Required keys: clip_id, audio, split. Optional keys (null or absent): blendshapes, emotion,
intensity (0 normal, 1 strong; default 0), person (0..23), content_id, phones (a JSON file of
timed ARPAbet phones, `[["SIL", 0.0, 0.21], ["AY", 0.21, 0.35], ...]`, which trains a model's
phone head and scores lip closure). Relative paths resolve against the manifest's folder, so a
dataset folder can be moved as a whole.

Reading is strict: a typo in a key or an emotion name would otherwise silently drop labels from
training. Every error names the file and the line. Standard library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controls import NUM_STYLES, PRESET_NAMES
from .errors import EmoTalkError
from .files import atomic_write
from .protocol import INVALID_PARAMS

SPLITS = ("train", "val", "test")
INTENSITIES = (0, 1)
REQUIRED_KEYS = ("clip_id", "audio", "split")
KEYS = (
    "clip_id", "audio", "blendshapes", "emotion", "intensity", "person", "content_id", "split",
    "phones",
)  # fmt: skip
PATH_KEYS = ("blendshapes", "phones")  # optional paths


class ManifestError(EmoTalkError):
    """A manifest that cannot be read or written, or an entry that breaks its rules."""

    code = INVALID_PARAMS

    def __init__(
        self,
        message: str,
        detail: str | None = None,
        path: Path | None = None,
        line: int | None = None,
    ):
        super().__init__(message, detail)
        self.path = path
        self.line = line


@dataclass(frozen=True)
class ManifestEntry:
    """One clip. `audio` and `blendshapes` are absolute once read from a manifest; an entry
    built in code may hold relative paths, which `write_manifest` keeps relative to the
    manifest's folder."""

    clip_id: str
    audio: Path
    split: str
    blendshapes: Path | None = None
    emotion: str | None = None
    intensity: int = 0
    person: int | None = None
    content_id: str | None = None
    phones: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio", _as_path(self.audio, "audio"))
        for key in PATH_KEYS:
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _as_path(getattr(self, key), key))
        problem = _value_problem(self.__dict__)
        if problem:
            raise ManifestError(f"manifest entry {self.clip_id!r}: {problem}")


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """All entries of the manifest at `path`, in file order. Blank lines are skipped."""
    source = Path(os.path.abspath(path))
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {source}: {exc}", path=source) from exc
    entries: list[ManifestEntry] = []
    first_line: dict[str, int] = {}
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other characters that
    # splitlines() treats as line breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        entry = _parse_line(line, source, number)
        if entry.clip_id in first_line:
            raise _line_error(
                source, number,
                f"clip_id {entry.clip_id!r} is already used on line {first_line[entry.clip_id]}",
            )  # fmt: skip
        first_line[entry.clip_id] = number
        entries.append(entry)
    return entries


def write_manifest(path: str | os.PathLike[str], entries: Iterable[ManifestEntry]) -> None:
    """Write `entries` to `path` atomically: readers (a training run, a preset build) never see
    a half-written manifest. Paths inside the manifest's folder are written relative to it."""
    target = Path(os.path.abspath(path))
    items = list(entries)
    _check_unique(items, target)
    lines = [json.dumps(_record(e, target.parent), ensure_ascii=False) + "\n" for e in items]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"cannot write manifest {target}: {exc}", path=target) from exc
    with atomic_write(target, "w", error=ManifestError) as handle:
        handle.write("".join(lines))


def entries_by_split(entries: Iterable[ManifestEntry]) -> dict[str, list[ManifestEntry]]:
    """Entries grouped by split, in manifest order. Every split is present (maybe empty), so
    callers can index "val" without checking."""
    groups: dict[str, list[ManifestEntry]] = {split: [] for split in SPLITS}
    for entry in entries:
        groups[entry.split].append(entry)
    return groups


def _parse_line(line: str, source: Path, number: int) -> ManifestEntry:
    """One line as an entry; every problem becomes a ManifestError naming file and line."""
    try:
        record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:
        raise _line_error(source, number, f"not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise _line_error(source, number, f"expected a JSON object, got {_json_type(record)}")
    problem = _record_problem(record)
    if problem:
        raise _line_error(source, number, problem)
    values = {key: record.get(key) for key in KEYS}
    if values["intensity"] is None:
        values["intensity"] = 0
    problem = _value_problem(values)
    if problem:
        raise _line_error(source, number, problem)
    values["audio"] = _resolve(record["audio"], source.parent)
    for key in PATH_KEYS:
        if values[key] is not None:
            values[key] = _resolve(values[key], source.parent)
    return ManifestEntry(**values)


def _record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with the keys and JSON types of a line, or None."""
    unknown = sorted(set(record) - set(KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(KEYS)})"
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        return f"missing required key(s) {', '.join(map(repr, missing))}"
    for key in ("clip_id", "audio", "split"):
        if not isinstance(record[key], str):
            return f"{key!r} must be a string, got {_json_type(record[key])}"
    for key in ("emotion", "content_id", *PATH_KEYS):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key!r} must be a string or null, got {_json_type(record[key])}"
    for key in ("audio", *PATH_KEYS):
        if record.get(key) is not None and not record[key].strip():
            return f"{key!r} must not be an empty path"
    for key in ("intensity", "person"):
        value = record.get(key)
        if value is not None and not _is_int(value):
            return f"{key!r} must be an integer or null, got {json.dumps(value)}"
    return None


def _value_problem(values: Mapping[str, Any]) -> str | None:
    """What breaks the value rules of an entry's fields, or None. Shared by reading and by
    entries built in code (the synthetic corpus), so both obey the same rules."""
    clip_id, split, emotion = values["clip_id"], values["split"], values["emotion"]
    intensity, person, content_id = values["intensity"], values["person"], values["content_id"]
    if not isinstance(clip_id, str) or not clip_id.strip():
        return f"clip_id must be a non-empty string, got {clip_id!r}"
    if split not in SPLITS:
        return f"split must be one of {', '.join(SPLITS)}, got {split!r}"
    if emotion is not None and emotion not in PRESET_NAMES:
        return f"unknown emotion {emotion!r} (expected one of {', '.join(PRESET_NAMES)} or null)"
    if not _is_int(intensity) or intensity not in INTENSITIES:
        return f"intensity must be 0 (normal) or 1 (strong), got {intensity!r}"
    if person is not None and (not _is_int(person) or not 0 <= person < NUM_STYLES):
        return f"person must be an integer from 0 to {NUM_STYLES - 1} or null, got {person!r}"
    if content_id is not None and (not isinstance(content_id, str) or not content_id):
        return f"content_id must be a non-empty string or null, got {content_id!r}"
    return None


def _is_int(value: Any) -> bool:
    """A real integer: JSON's true/false are Python ints too, and must not pass as 1/0."""
    return isinstance(value, int) and not isinstance(value, bool)


def _as_path(value: Any, key: str) -> Path:
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str | os.PathLike):
        path = Path(value)
    else:
        raise ManifestError(f"{key} must be a path, got {type(value).__name__}")
    if not str(path) or str(path) == ".":
        raise ManifestError(f"{key} must not be an empty path")
    return path


def _resolve(text: str, folder: Path) -> Path:
    """Absolute path of `text`, relative ones taken against the manifest's folder. Not
    `Path.resolve()`: symlinked dataset folders keep the names the user gave them."""
    return Path(os.path.abspath(folder / text))


def _record(entry: ManifestEntry, folder: Path) -> dict[str, Any]:
    blendshapes, phones = entry.blendshapes, entry.phones
    return {
        "clip_id": entry.clip_id,
        "audio": _relative(entry.audio, folder),
        "blendshapes": None if blendshapes is None else _relative(blendshapes, folder),
        "emotion": entry.emotion,
        "intensity": entry.intensity,
        "person": entry.person,
        "content_id": entry.content_id,
        "split": entry.split,
        "phones": None if phones is None else _relative(phones, folder),
    }


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to `folder` (with forward slashes, portable across systems) when inside
    it; otherwise absolute. Relative entry paths already mean "relative to the manifest"."""
    if not path.is_absolute():
        return path.as_posix()
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(folder).as_posix()
    except ValueError:
        return str(absolute)


def _check_unique(entries: list[ManifestEntry], target: Path) -> None:
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, ManifestEntry):
            raise ManifestError(
                f"manifest {target}: entries must be ManifestEntry, got {type(entry).__name__}",
                path=target,
            )
        if entry.clip_id in seen:
            raise ManifestError(
                f"manifest {target}: clip_id {entry.clip_id!r} appears twice", path=target
            )
        seen.add(entry.clip_id)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key(s) {', '.join(map(repr, repeated))} appear more than once")
    return dict(pairs)


def _line_error(source: Path, number: int, problem: str) -> ManifestError:
    return ManifestError(f"manifest {source}, line {number}: {problem}", path=source, line=number)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)
