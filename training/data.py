"""Dataset tools: the command line that prepares and checks training data, and the manifest
merge.

    python -m training.data build-3detf --root 3D-ETF --out data/manifest.jsonl [--check]
    python -m training.data check --data data [--config training/configs/compact.toml]
    python -m training.data merge --out OUT.jsonl A.jsonl B.jsonl:train[,val]
    python -m training.data phone-loop --manifest data/manifest.jsonl [--jobs N]

The 3D-ETF builder is `training.etf`, clip validation `training.clips`, the phone-loop cache
`training.phone_tracks`.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from emotalk_core.controls import PRESET_NAMES
from emotalk_core.errors import EmoTalkError, report_error
from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest

from . import phone_tracks
from .clips import DataError, Skipped, validate_entries
from .config import DataSection, load_config
from .etf import build_3detf


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-3detf", help="write a manifest for a 3D-ETF folder")
    b.add_argument("--root", required=True, help="3D-ETF folder holding RAVDESS/ and HDTF/")
    b.add_argument("--out", required=True, help="manifest.jsonl to write")
    b.add_argument("--val-actors", type=_int_list, default=[23, 24],
                   help="RAVDESS actors whose statement 02 is validation (default 23,24)")
    b.add_argument("--test-actors", type=_int_list, default=[21, 22],
                   help="RAVDESS actors whose statement 02 is test (default 21,22)")
    b.add_argument("--hdtf-val-fraction", type=float, default=0.05)
    b.add_argument("--hdtf-test-fraction", type=float, default=0.05)
    b.add_argument("--hdtf-emotion", choices=PRESET_NAMES, default=None,
                   help="emotion label for HDTF clips (default: none)")
    b.add_argument("--check", action="store_true", help="also validate every clip's files")
    c = sub.add_parser("check", help="validate every clip of a manifest")
    c.add_argument("--data", required=True, help="folder holding manifest.jsonl")
    c.add_argument("--config", default=None, help="training config (for data settings)")
    m = sub.add_parser("merge", help="combine manifests (e.g. synthetic + real speech)")
    m.add_argument("--out", required=True, help="manifest.jsonl to write")
    m.add_argument("sources", nargs="+", metavar="MANIFEST[:SPLIT,...]",
                   help="a manifest, optionally with the splits to take from it "
                   "(data/real_speech/manifest.jsonl:train keeps its held-out clips out)")
    p = sub.add_parser("phone-loop", help="decode and cache every clip's phone-loop track "
                       "(models with a phone input; training makes missing ones itself)")
    p.add_argument("--manifest", required=True, help="manifest.jsonl (the cache goes beside it)")
    p.add_argument("--jobs", type=int, default=2, help="decoding processes (default 2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build-3detf":
            return _cmd_build(args)
        if args.command == "merge":
            return _cmd_merge(args)
        if args.command == "phone-loop":
            return _cmd_phone_loop(args)
        return _cmd_check(args)
    except EmoTalkError as exc:
        return report_error(exc, parser.prog)


def merge_manifests(sources: Sequence[str]) -> list[ManifestEntry]:
    """Entries of several manifests; `PATH:train,val` keeps only those splits of PATH. Clip ids
    must stay unique across sources."""
    entries: list[ManifestEntry] = []
    origin: dict[str, str] = {}
    for source in sources:
        path, _, splits = source.partition(":")
        keep = {s for s in splits.split(",") if s} or None
        for entry in read_manifest(path):
            if keep is not None and entry.split not in keep:
                continue
            if entry.clip_id in origin:
                raise DataError(f"clip id {entry.clip_id!r} is in both {origin[entry.clip_id]} "
                                f"and {path}; clip ids must be unique across merged manifests")
            origin[entry.clip_id] = path
            entries.append(entry)
    if not entries:
        raise DataError("the merged manifest would be empty; check the paths and splits")
    return entries


def _cmd_merge(args: argparse.Namespace) -> int:
    entries = merge_manifests(args.sources)
    _write(args.out, entries)
    return 0


def _cmd_phone_loop(args: argparse.Namespace) -> int:
    manifest = Path(args.manifest)
    problems = phone_tracks.build(manifest, read_manifest(manifest), args.jobs)
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    print(f"phone-loop tracks in {phone_tracks.cache_dir(manifest)} "
          f"({len(problems)} clips could not be decoded)")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    built = build_3detf(args.root, args.val_actors, args.test_actors, args.hdtf_val_fraction,
                        args.hdtf_test_fraction, args.hdtf_emotion)
    skipped = list(built.skipped)
    entries = built.entries
    if args.check:
        good, bad = validate_entries(entries, DataSection())
        keep = {c.clip_id for c in good}
        entries = [e for e in entries if e.clip_id in keep]
        skipped += bad
    if not entries:
        raise DataError(f"no usable clip found under {args.root}")
    _write(args.out, entries)
    _print_skipped(skipped)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config).data if args.config else DataSection()
    manifest = Path(args.data) / cfg.manifest
    entries = read_manifest(manifest)
    good, bad = validate_entries(entries, cfg)
    seconds = sum(c.seconds for c in good)
    print(f"{manifest}: {len(good)} of {len(entries)} clips usable ({seconds / 3600:.2f} h)")
    for split in sorted({e.split for e in entries}):
        clips = [c for c in good if c.entry.split == split]
        print(f"  {split}: {len(clips)} clips, {sum(c.seconds for c in clips) / 60:.1f} min")
    _print_skipped(bad)
    return 1 if bad else 0


def _write(out: str, entries: Sequence[ManifestEntry]) -> None:
    """Write the manifest and say how many clips each split got."""
    write_manifest(out, entries)
    counts: dict[str, int] = defaultdict(int)
    for e in entries:
        counts[e.split] += 1
    print(f"wrote {out}: {len(entries)} clips ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")


def _print_skipped(skipped: Sequence[Skipped]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} clip(s):")
        for s in skipped:
            print(f"  {s.clip_id}: {s.reason}")


if __name__ == "__main__":
    sys.exit(main())
