"""Lip sync on real recordings as a user gets it: closure AUC, closure rate and open rate
(DESIGN.md section 8) of `emotalk predict`'s curves (default controls and post-processing),
without and with the clips' transcripts, beside baselines on the same phones.

    python -m training.lipsync --model default --data data/real_speech --split val

The reference phones are each clip's forced alignment (the manifest's phone files). Scorers:
- `model`: the model's aperture from the audio alone (recognised words for phonetic models);
- `model_loop`: the same with the phone loop instead of word recognition (`recognize_words`
  off);
- `model_transcript`: the same with the clip's transcript (`DATA/transcripts/<id>.txt`);
- `teacher`: the target curves (the procedural teacher on the alignments);
- `energy`: log RMS per frame (AUC only);
- `phone_loop`: pocketsphinx's 1-best phone loop alone: 0 at P/B/M, 1 at open vowels, 0.5
  elsewhere (as a mouth it is closed or open only where it says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emotalk_core.audio import load_audio, num_frames
from emotalk_core.errors import EmoTalkError, report_error
from emotalk_core.manifest import read_manifest
from emotalk_core.phonetics import loop
from emotalk_core.phonetics.track import frame_phones

from . import metrics as M
from .clips import DataError, fit_curves, read_curves, read_phone_file


def phone_loop_opening(samples: np.ndarray, frames: int) -> np.ndarray:
    """(frames,) the phone loop as a mouth: 0 at bilabials, 1 at open vowels, 0.5 elsewhere."""
    classes = [M.phone_class(p) for p in frame_phones(loop.decode(samples), frames)]
    return np.array([0.0 if c == "bilabial" else 1.0 if c == "vowel" else 0.5 for c in classes])


def evaluate(model: str | Path, data_dir: str | Path, split: str = "val",
             device: str = "cpu", transcripts: bool = True,
             transcripts_dir: str | Path | None = None, phone_loop: bool = True
             ) -> dict[str, Any]:
    """The report: per scorer, AUC, closure rate, open rate and false-closure rate with their
    counts. Transcripts are `<transcripts_dir>/<clip id>.txt` (default DATA/transcripts).
    `phone_loop`: also score the model reading the phone loop (models with a phonetic
    input)."""
    from emotalk_core.controls import Controls
    from emotalk_core.inference import Predictor

    data_dir = Path(data_dir)
    entries = [e for e in read_manifest(data_dir / "manifest.jsonl")
               if e.split == split and e.phones is not None]
    if not entries:
        raise DataError(f"{data_dir}: split {split!r} has no clip with phones")
    predictor = Predictor(model, device=device)
    texts = Path(transcripts_dir) if transcripts_dir else data_dir / "transcripts"
    scores = M.LipSyncScores.empty()
    warnings: list[str] = []
    for entry in tqdm(entries, desc=f"lip sync ({split})", disable=None):
        audio = load_audio(entry.audio)
        frames = num_frames(audio.size)
        phones = read_phone_file(Path(entry.phones))
        teacher = fit_curves(read_curves(Path(entry.blendshapes)), frames, 3,
                               str(entry.blendshapes))
        found = predictor.predict(audio, sample_rate=16000)
        warnings += [f"{entry.clip_id}: {w}" for w in found.warnings]
        values = {"model": M.aperture(found.values),
                  "teacher": M.aperture(teacher),
                  "energy": M.frame_log_rms(audio, frames),
                  "phone_loop": phone_loop_opening(audio, frames)}
        if phone_loop and predictor.model.config.phone_input:
            looped = predictor.predict(audio, sample_rate=16000,
                                       controls=Controls(recognize_words=False))
            values["model_loop"] = M.aperture(looped.values)
        text = texts / f"{entry.clip_id}.txt"
        if transcripts and text.is_file():
            result = predictor.predict(audio, sample_rate=16000,
                                       transcript=text.read_text(encoding="utf-8"))
            warnings += [f"{entry.clip_id}: {w}" for w in result.warnings]
            values["model_transcript"] = M.aperture(result.values)
        scores.add(phones, values, rates=[k for k in values if k != "energy"])
    names = ["model", "model_loop", "model_transcript", "teacher", "energy", "phone_loop"]
    return {"model": str(model), "data": str(data_dir), "split": split, "clips": len(entries),
            "scorers": {n: scores.report(n) for n in names if n in scores.frames.vowel},
            "warnings": warnings}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['clips']} clips of {report['data']} ({report['split']})",
             f"{'scorer':<18}{'AUC':>7}{'closure':>9}{'open':>7}{'false':>7}"]
    for name, r in report["scorers"].items():
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"
        lines.append(f"{name:<18}{r['auc']:>7.3f}{pct(r.get('closure_rate')):>9}"
                     f"{pct(r.get('open_rate')):>7}{pct(r.get('false_closure_rate')):>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.lipsync", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model folder (default: the bundled one)")
    p.add_argument("--data", required=True, help="folder with manifest.jsonl, phones/, "
                   "transcripts/ (training.real_speech writes one)")
    p.add_argument("--split", default="val")
    p.add_argument("--no-transcripts", action="store_true")
    p.add_argument("--no-loop", action="store_true", help="skip the phone-loop model scorer")
    p.add_argument("--transcripts", type=Path, help="folder of <clip id>.txt (default "
                   "DATA/transcripts)")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    try:
        report = evaluate(args.model, args.data, args.split,
                          transcripts=not args.no_transcripts, transcripts_dir=args.transcripts,
                          phone_loop=not args.no_loop)
    except EmoTalkError as exc:
        return report_error(exc, p.prog)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
