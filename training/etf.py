"""The 3D-ETF dataset (RAVDESS and HDTF clips with blendshape curves) as manifest entries.

`python -m training.data build-3detf` writes the manifest; training then reads 3D-ETF like any
other source. The synthetic corpus (`training.synth`) and real speech (`training.real_speech`)
are the other sources.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotalk_core.controls import NUM_STYLES, PRESET_NAMES
from emotalk_core.manifest import ManifestEntry

from .clips import DataError, Skipped

RAVDESS_STEM = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


@dataclass
class BuildReport:
    entries: list[ManifestEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def parse_ravdess_stem(stem: str) -> dict[str, Any]:
    """`MM-VV-EE-II-SS-RR-AA` -> emotion, intensity, content_id, person. Raises ValueError."""
    match = RAVDESS_STEM.match(stem)
    if not match:
        raise ValueError("name is not a RAVDESS stem MM-VV-EE-II-SS-RR-AA")
    _, vocal, emotion, intensity, statement, repetition, actor = (int(g) for g in match.groups())
    if not 1 <= emotion <= len(PRESET_NAMES):
        raise ValueError(f"emotion code {emotion:02d} is not 01..08")
    if intensity not in (1, 2):
        raise ValueError(f"intensity code {intensity:02d} is not 01 or 02")
    if not 1 <= actor <= NUM_STYLES:  # RAVDESS's 24 actors are the 24 styles
        raise ValueError(f"actor {actor:02d} is not 01..{NUM_STYLES}")
    kind = "song" if vocal == 2 else "speech"
    return {
        "emotion": PRESET_NAMES[emotion - 1],
        "intensity": intensity - 1,
        "content_id": f"ravdess-{kind}-s{statement:02d}-r{repetition:02d}",
        "person": actor - 1,
        "statement": statement,
        "actor": actor,
    }


def hdtf_speaker(stem: str) -> str:
    """HDTF stems are `<speaker>_<number>` (e.g. WDA_BarackObama_000): the speaker part."""
    return re.sub(r"_\d+$", "", stem)


def _paired_files(folder: Path, report: BuildReport, prefix: str) -> list[tuple[str, Path, Path]]:
    """(stem, wav, npy) for stems with both files; the others reported."""
    wavs = {p.stem: p for p in sorted((folder / "audio").glob("*.wav"))}
    npys = {p.stem: p for p in sorted((folder / "blendshape").glob("*.npy"))}
    for stem in sorted(set(wavs) - set(npys)):
        report.skipped.append(Skipped(f"{prefix}-{stem}",
                                      f"{wavs[stem]} has no blendshape/{stem}.npy"))
    for stem in sorted(set(npys) - set(wavs)):
        report.skipped.append(Skipped(f"{prefix}-{stem}", f"{npys[stem]} has no audio/{stem}.wav"))
    return [(s, wavs[s], npys[s]) for s in sorted(set(wavs) & set(npys))]


def build_3detf(
    root: str | Path,
    val_actors: Sequence[int] = (23, 24),
    test_actors: Sequence[int] = (21, 22),
    hdtf_val_fraction: float = 0.05,
    hdtf_test_fraction: float = 0.05,
    hdtf_emotion: str | None = None,
) -> BuildReport:
    """Manifest entries for a 3D-ETF folder (`<root>/{RAVDESS,HDTF}/{audio,blendshape}`).

    RAVDESS splits hold out *statement 02* of the val/test actors: their statement-01 clips stay
    in training, so their person embedding is trained and held-out clips still find emotion
    donors for cross pairs. HDTF clips (one speaker each, no emotion labels) go to val/test by a
    hash of the name, so the split never changes when files are added. HDTF speakers get person
    ids 0..23 round-robin in sorted order (HDTF has hundreds of speakers; the style embedding has
    24 slots, shared with RAVDESS actors). Their emotion is `hdtf_emotion` (default null: HDTF is
    not acted emotion, and labelling hours of it "neutral" would swamp the classifier's classes
    and the neutral preset).
    """
    root = Path(root)
    if not (root / "RAVDESS").is_dir() and not (root / "HDTF").is_dir():
        raise DataError(f"{root} holds neither RAVDESS/ nor HDTF/",
                        "pass --root the 3D-ETF folder (with RAVDESS/audio, RAVDESS/blendshape)")
    report = BuildReport()
    if (root / "RAVDESS").is_dir():
        for stem, wav, npy in _paired_files(root / "RAVDESS", report, "ravdess"):
            try:
                info = parse_ravdess_stem(stem)
            except ValueError as exc:
                report.skipped.append(Skipped(f"ravdess-{stem}", f"{wav}: {exc}"))
                continue
            split = "train"
            if info["statement"] == 2 and info["actor"] in val_actors:
                split = "val"
            elif info["statement"] == 2 and info["actor"] in test_actors:
                split = "test"
            report.entries.append(ManifestEntry(
                clip_id=f"ravdess-{stem}", audio=wav, blendshapes=npy, split=split,
                emotion=info["emotion"], intensity=info["intensity"], person=info["person"],
                content_id=info["content_id"],
            ))  # fmt: skip
    if (root / "HDTF").is_dir():
        files = _paired_files(root / "HDTF", report, "hdtf")
        speakers = sorted({hdtf_speaker(stem) for stem, _, _ in files})
        person = {name: i % NUM_STYLES for i, name in enumerate(speakers)}
        for stem, wav, npy in files:
            u = int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) / 2**32
            split = ("val" if u < hdtf_val_fraction
                     else "test" if u < hdtf_val_fraction + hdtf_test_fraction else "train")
            report.entries.append(ManifestEntry(
                clip_id=f"hdtf-{stem}", audio=wav, blendshapes=npy, split=split,
                emotion=hdtf_emotion, intensity=0, person=person[hdtf_speaker(stem)],
            ))  # fmt: skip
    return report

