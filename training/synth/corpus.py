"""Build the synthetic corpus: groups of clips (one sentence, one person, several emotions).

Layout of DIR (the same as the real-speech corpus, so training reads both through one path):

    manifest.jsonl          emotalk_core.manifest entries, in group order
    audio/<clip>.wav        16 kHz mono PCM-16
    blendshape/<clip>.npy   (T, 52) float32 at 30 fps, T = ceil(samples / 16000 * 30)
    phones/<clip>.json      [[phone, start s, end s], ...]: the teacher's input, and what
                            training.evaluate reads for the lip-closure metric
    transcripts/<clip>.txt  the sentence
    groups/<group>.json     one record per finished group: resuming skips those groups
    synth.json              seed and settings; a rerun with other settings is refused

A group is the unit of work, of resuming and of the split: all renditions of a sentence share
its content_id and split, so val/test sentences are never heard in training, and training can
form the paper's cross-reconstruction pairs (same person and content, different emotion).

Reproducibility: a group is a pure function of (seed, group index). espeak-ng keeps hidden
state between utterances, so every group is rendered in a fresh process forked from a
forkserver that never synthesises: the bytes do not depend on --jobs or on what the calling
process did before. The corpus grows until its audio reaches --minutes; groups past that point
(from an earlier, longer run) are removed, so a directory always matches its last command.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emotalk_core.audio import num_frames
from emotalk_core.errors import EmoTalkError, report_error
from emotalk_core.files import atomic_path, atomic_write, partial_pattern
from emotalk_core.manifest import ManifestEntry, write_manifest
from emotalk_core.phonetics.espeak import SAMPLE_RATE, synthesize
from emotalk_core.phonetics.phonemes import TimedPhone

from . import teacher
from .features import analyse
from .sentences import sentences
from .styles import EMOTIONS, NUM_PERSONS, PERSONS, voice_effect, voice_settings

FORMAT_VERSION = 1
_EST_CLIP_SECONDS = 3.2  # planning estimate only: batch sizes, never the output
_CLIP_FILES = (("audio", "wav"), ("blendshape", "npy"), ("phones", "json"), ("transcripts", "txt"))
_SPLIT_PERIOD = 20  # group g % 20 == 1 -> val, == 2 -> test: 5 % each, present from 3 groups


@dataclass(frozen=True)
class ClipPlan:
    clip_id: str
    emotion: str
    intensity: int
    lead_s: float
    tail_s: float
    seed: int


@dataclass(frozen=True)
class GroupPlan:
    index: int
    group_id: str
    content_id: str
    text: str
    person: int
    split: str
    clips: tuple[ClipPlan, ...]


def split_of(group: int) -> str:
    """Split of group `group`: whole sentences go to val/test, never parts of a group."""
    remainder = group % _SPLIT_PERIOD
    return "val" if remainder == 1 else "test" if remainder == 2 else "train"


def plan_group(seed: int, index: int, text: str, renditions: int) -> GroupPlan:
    """Everything random about group `index`, drawn from (seed, index) alone."""
    rng = np.random.default_rng([seed, index, 0xC0])
    person = int(rng.integers(NUM_PERSONS))
    emotions = rng.choice(len(EMOTIONS), size=min(renditions, len(EMOTIONS)), replace=False)
    group_id = f"synth{seed}-g{index:06d}"
    clips = []
    for k in sorted(int(e) for e in emotions):
        emotion = EMOTIONS[k]
        intensity = 0 if emotion == "neutral" else int(rng.integers(2))
        clips.append(ClipPlan(
            clip_id=f"{group_id}-{emotion}-{intensity}", emotion=emotion, intensity=intensity,
            lead_s=round(float(rng.uniform(0.12, 0.45)), 3),
            tail_s=round(float(rng.uniform(0.15, 0.5)), 3),
            seed=int(rng.integers(2**31 - 1)),
        ))  # fmt: skip
    return GroupPlan(
        index=index,
        group_id=group_id,
        content_id=f"synth{seed}-s{index:06d}",
        text=text,
        person=person,
        split=split_of(index),
        clips=tuple(clips),
    )


# ---------------------------------------------------------------------------------------------
# Rendering one group (runs in a fresh process)


def render_clip(
    plan: ClipPlan, text: str, person_index: int
) -> tuple[np.ndarray, list, np.ndarray]:
    """(16 kHz float32 audio, phones, (T, 52) curves) of one clip."""
    person = PERSONS[person_index]
    settings = voice_settings(person, plan.emotion, plan.intensity)
    utterance = synthesize(text, settings, plan.lead_s, plan.tail_s, seed=plan.seed % 65536)
    rng = np.random.default_rng(plan.seed)
    audio = voice_effect(utterance.audio, plan.emotion, plan.intensity, float(rng.uniform()))
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio = audio * np.float32(0.99 / peak)
    # Quantise first so that the teacher sees exactly the samples that are stored.
    audio = (np.round(audio * 32767.0) / 32767.0).astype(np.float32)
    frames = num_frames(audio.size)
    curves = teacher.curves(utterance.phones, frames, analyse(audio), person.style,
                            plan.emotion, plan.intensity, seed=[plan.seed, 1])  # fmt: skip
    return audio, utterance.phones, curves


def render_group(job: tuple[str, GroupPlan]) -> dict:
    """Write one group's files, then its record (the record marks the group as done)."""
    root_text, plan = job
    root = Path(root_text)
    clips = []
    for clip in plan.clips:
        audio, phones, curves = render_clip(clip, plan.text, plan.person)
        write_wav(root / "audio" / f"{clip.clip_id}.wav", audio)
        write_npy(root / "blendshape" / f"{clip.clip_id}.npy", curves)
        write_text(root / "phones" / f"{clip.clip_id}.json", phones_json(phones))
        write_text(root / "transcripts" / f"{clip.clip_id}.txt", plan.text + "\n")
        clips.append({**asdict(clip), "seconds": audio.size / SAMPLE_RATE})
    record = {"version": FORMAT_VERSION, **asdict(plan), "clips": clips}
    write_text(root / "groups" / f"{plan.group_id}.json", json.dumps(record, indent=1) + "\n")
    return record


def phones_json(phones: list[TimedPhone]) -> str:
    """The phone file format training.evaluate reads: [[phone, start s, end s], ...]."""
    rows = [[p.phone, round(p.start, 4), round(p.end, 4)] for p in phones]
    return json.dumps(rows) + "\n"


def write_wav(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        sf.write(partial, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        np.save(handle, np.ascontiguousarray(array, dtype=np.float32))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(data)


# ---------------------------------------------------------------------------------------------
# The whole corpus


@dataclass(frozen=True)
class CorpusSettings:
    seed: int
    renditions: int = 3
    version: int = FORMAT_VERSION


def build(
    out: str | os.PathLike[str],
    minutes: float,
    seed: int = 0,
    jobs: int = 1,
    renditions: int = 3,
    progress: bool = True,
) -> list[ManifestEntry]:
    """Generate (or complete) the corpus in `out` and return its manifest entries."""
    if minutes <= 0:
        raise ValueError("--minutes must be positive")
    if not 2 <= renditions <= len(EMOTIONS):
        raise ValueError(f"--renditions must be 2..{len(EMOTIONS)} (pairs need two emotions)")
    root = Path(out)
    settings = CorpusSettings(seed=seed, renditions=renditions)
    _check_settings(root, settings)
    records = _render_until(root, settings, minutes * 60.0, max(1, jobs), progress)
    _remove_unlisted(root, records)
    entries = [entry for record in records for entry in _entries(record)]
    write_manifest(root / "manifest.jsonl", entries)
    return entries


def _check_settings(root: Path, settings: CorpusSettings) -> None:
    path = root / "synth.json"
    wanted = asdict(settings)
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            raise SystemExit(
                f"{root} holds a corpus made with {found}, not {wanted}: "
                "use another --out folder or delete this one"
            )
    else:
        write_text(path, json.dumps(wanted, indent=1) + "\n")


def _render_until(
    root: Path, settings: CorpusSettings, target_s: float, jobs: int, progress: bool
) -> list[dict]:
    """Render groups 0, 1, ... in batches until their audio reaches `target_s`; return the
    records of the groups that make up the corpus (the shortest prefix reaching the target)."""
    records: dict[int, dict] = {}
    planned = 0
    texts: list[str] = []
    bar = _progress_bar(target_s, progress)
    try:
        while True:
            total, needed = _prefix(records, target_s)
            if needed is not None:
                return [records[g] for g in range(needed)]
            remaining = target_s - total
            batch = math.ceil(remaining / (settings.renditions * _EST_CLIP_SECONDS)) + 1
            texts = sentences(settings.seed, planned + batch)
            plans = [plan_group(settings.seed, g, texts[g], settings.renditions)
                     for g in range(planned, planned + batch)]  # fmt: skip
            planned += batch
            for record in _render_batch(root, plans, jobs):
                records[record["index"]] = record
                bar.update(sum(c["seconds"] for c in record["clips"]))
    finally:
        bar.close()


def _prefix(records: dict[int, dict], target_s: float) -> tuple[float, int | None]:
    """Audio seconds of the contiguous prefix of groups, and the group count reaching
    `target_s` (None if it does not yet)."""
    total = 0.0
    g = 0
    while g in records:
        total += sum(c["seconds"] for c in records[g]["clips"])
        g += 1
        if total >= target_s:
            return total, g
    return total, None


def _render_batch(root: Path, plans: list[GroupPlan], jobs: int) -> Iterator[dict]:
    """Records of `plans`: read back for finished groups, rendered (in fresh processes) for
    the rest."""
    todo = []
    for plan in plans:
        record = _read_record(root, plan)
        if record is not None:
            yield record
        else:
            todo.append((str(root), plan))
    if not todo:
        return
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(processes=min(jobs, len(todo)), maxtasksperchild=1) as pool:
        yield from pool.imap_unordered(render_group, todo)


def _read_record(root: Path, plan: GroupPlan) -> dict | None:
    """The finished group's record if it matches the plan (else it is rendered again)."""
    path = root / "groups" / f"{plan.group_id}.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    expected = {"version": FORMAT_VERSION, **asdict(plan)}
    same = all(record.get(k) == json.loads(json.dumps(v)) for k, v in expected.items()
               if k != "clips")  # fmt: skip
    files = all((root / sub / f"{c.clip_id}.{ext}").exists()
                for c in plan.clips for sub, ext in _CLIP_FILES)  # fmt: skip
    return record if same and files else None


def _remove_unlisted(root: Path, records: list[dict]) -> None:
    """Delete our files that the corpus no longer lists (groups past the target, leftovers
    of an interrupted run), so the folder is a function of the command alone."""
    keep = {r["group_id"] for r in records} | {c["clip_id"] for r in records for c in r["clips"]}
    for sub in [sub for sub, _ in _CLIP_FILES] + ["groups"]:
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            leftover = partial_pattern().match(path.name) is not None
            stem = path.name.split(".")[0]
            if leftover or (stem.startswith("synth") and stem not in keep):
                path.unlink()


def _entries(record: dict) -> list[ManifestEntry]:
    return [
        ManifestEntry(
            clip_id=clip["clip_id"],
            audio=Path("audio") / f"{clip['clip_id']}.wav",
            blendshapes=Path("blendshape") / f"{clip['clip_id']}.npy",
            phones=Path("phones") / f"{clip['clip_id']}.json",
            emotion=clip["emotion"],
            intensity=clip["intensity"],
            person=record["person"],
            content_id=record["content_id"],
            split=record["split"],
        )
        for clip in record["clips"]
    ]


class _NoBar:
    def update(self, n: float) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(target_s: float, enabled: bool):  # noqa: ANN202 (tqdm or a stand-in)
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=round(target_s),
        unit="s audio",
        desc="synth corpus",
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}]",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synth",
        description="Generate the synthetic EmoTalk corpus (espeak-ng speech + procedural "
        "ARKit teacher curves) with a manifest.",
    )
    parser.add_argument("--out", required=True, help="output folder (created or completed)")
    parser.add_argument("--minutes", type=float, required=True, help="minutes of audio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel processes (the output does not depend on it)",
    )
    parser.add_argument(
        "--renditions", type=int, default=3, help="emotions per sentence (same person and sentence)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        entries = build(args.out, args.minutes, args.seed, args.jobs, args.renditions,
                        progress=not args.quiet)  # fmt: skip
    except EmoTalkError as exc:
        return report_error(exc, parser.prog)
    counts = {s: sum(e.split == s for e in entries) for s in ("train", "val", "test")}
    print(f"{len(entries)} clips in {args.out} ({counts})")
    return 0
