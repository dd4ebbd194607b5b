"""Evaluate a model folder on a manifest split.

    python -m training.evaluate --model RUN/model --data DIR [--split val] [--head head.npz]
                                [--out report.json] [--plots DIR]

For every clip with target curves: the raw network output (no smoothing, blinks or clamping,
which would change what is measured) with the clip's own emotion, intensity and person, against
the targets. Reports (training/metrics.py defines each):

- lve_coeff / eve_coeff: coefficient-space lip / eye-brow error (mean over frames of the
  largest absolute channel error in the group); lve_mm / eve_mm with --head (a real-size mesh);
- mse over all channels and frames;
- emotion_accuracy of the speech-emotion classifier (clips whose label the model knows);
- lip_closure: AUC that aperture at open-vowel frames exceeds aperture at bilabial frames, for
  the model, the targets and the audio-energy baseline, pooled over the clips that have phones:
  the manifest's `phones` file or `DIR/phones/<clip_id>.json` ([[phone, start_s, end_s], ...]),
  or a transcript
  `DIR/transcripts/<clip_id>.txt` aligned with `emotalk_core.phonetics.align` (pocketsphinx).

Frame-weighted means: every frame of every clip counts once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emotalk_core.arkit import INDEX
from emotalk_core.audio import load_audio, num_frames
from emotalk_core.errors import EmoTalkError, report_error
from emotalk_core.manifest import ManifestEntry, read_manifest
from emotalk_core.phonetics.track import frame_phones

from . import metrics as M
from .clips import (
    IGNORE_LABEL,
    ClipError,
    ClipInfo,
    DataError,
    Skipped,
    fit_curves,
    label_index,
    read_curves,
    read_phone_file,
    validate_entries,
)
from .config import DataSection

PLOT_CHANNELS = ("jawOpen", "mouthClose", "mouthSmileLeft", "browInnerUp", "eyeBlinkLeft")


def clip_frame_phones(data_dir: Path, entry: ManifestEntry, audio: np.ndarray, frames: int
                      ) -> list[str | None] | None:
    """Per-frame phones of a clip from its phone file (the manifest's `phones`, else
    `DIR/phones/<clip_id>.json`) or transcript (aligned now), else None."""
    phone_file = entry.phones or data_dir / "phones" / f"{entry.clip_id}.json"
    transcript = data_dir / "transcripts" / f"{entry.clip_id}.txt"
    if Path(phone_file).is_file():
        phones = read_phone_file(Path(phone_file))
    elif transcript.is_file():
        from emotalk_core.phonetics.align import (
            align_phones,  # pocketsphinx: only needed for transcripts
        )

        phones = align_phones(audio, transcript.read_text(encoding="utf-8").strip())
    else:
        return None
    return frame_phones(phones, frames)


class Accumulator:
    """Frame-weighted sums over clips, and the pooled lip-closure scores."""

    def __init__(self, head: M.HeadMesh | None):
        self.head = head
        self.sums: dict[str, float] = {}
        self.frames = 0
        self.emotion_correct = 0
        self.emotion_clips = 0
        self.closure = M.ClosureScores.empty()
        self.phone_clips = 0

    def add(self, pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
        per_frame = {
            "lve_coeff": M.max_channel_error(pred, true, M.LIP_CHANNELS),
            "eve_coeff": M.max_channel_error(pred, true, M.EYE_CHANNELS),
            "mse": np.square(pred - true).mean(axis=1),
        }
        if self.head is not None:
            per_frame["lve_mm"] = M.max_vertex_error(self.head, pred, true, self.head.lip_vertices)
            per_frame["eve_mm"] = M.max_vertex_error(self.head, pred, true, self.head.eye_vertices)
        for key, values in per_frame.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(values.sum())
        self.frames += pred.shape[0]
        return {key: float(values.mean()) for key, values in per_frame.items()}

    def means(self) -> dict[str, float]:
        return {key: value / max(self.frames, 1) for key, value in self.sums.items()}


def evaluate(
    model: str | Path,
    data_dir: str | Path,
    split: str = "val",
    head: str | Path | None = None,
    plots: str | Path | None = None,
    device: str = "auto",
    manifest: str = "manifest.jsonl",
    max_plots: int = 4,
) -> dict[str, Any]:
    """Evaluate and return the report (see the module docstring)."""
    from tqdm import tqdm

    from emotalk_core.controls import Controls
    from emotalk_core.inference import Predictor

    data_dir = Path(data_dir)
    if plots is not None:
        _matplotlib()  # fail before the long part, not after it
    head_mesh = M.load_head(head) if head is not None else None
    entries = [e for e in read_manifest(data_dir / manifest) if e.split == split]
    clips, skipped = validate_entries(entries, DataSection())
    if not clips:
        raise DataError(f"{data_dir / manifest}: split {split!r} has no usable clip with "
                          f"target curves ({len(entries)} listed, {len(skipped)} skipped)")
    predictor = Predictor(model, device=device)
    labels = predictor.emotion_labels
    acc = Accumulator(head_mesh)
    per_clip: list[dict[str, Any]] = []
    phone_errors: list[dict[str, str]] = []
    for n, clip in enumerate(tqdm(clips, desc=f"evaluating {split}", disable=None)):
        try:
            audio, true = _load(clip)
        except (ClipError, EmoTalkError) as exc:
            skipped.append(Skipped(clip.clip_id, str(exc)))
            continue
        try:
            phones = clip_frame_phones(data_dir, clip.entry, audio, true.shape[0])
        except (ImportError, ValueError, RuntimeError, EmoTalkError) as exc:
            phone_errors.append({"clip_id": clip.clip_id, "reason": str(exc)})
            phones = None
        e = clip.entry
        result = predictor.predict(audio, sample_rate=16000, controls=Controls(
            level=float(e.intensity), person=int(e.person or 0), postprocess=None))
        pred = result.values
        record: dict[str, Any] = {"clip_id": e.clip_id, "frames": int(pred.shape[0])}
        record.update(acc.add(pred, true))
        label = label_index(e.emotion, labels)
        if label != IGNORE_LABEL:
            guess = max(result.emotion_probabilities, key=result.emotion_probabilities.get)
            record["emotion"], record["emotion_predicted"] = labels[label], guess
            acc.emotion_clips += 1
            acc.emotion_correct += int(guess == labels[label])
        if phones is not None:
            acc.phone_clips += 1
            acc.closure.add(phones, {"model": M.aperture(pred), "target": M.aperture(true),
                                     "energy": M.frame_log_rms(audio, pred.shape[0])})
        per_clip.append(record)
        if plots is not None and n < max_plots:
            plot_curves(Path(plots) / f"{e.clip_id}.png", pred, true, e.clip_id)
    report = _report(model, data_dir, split, head, acc, per_clip, skipped)
    report["lip_closure"]["phone_errors"] = phone_errors
    return report


def _load(clip: ClipInfo) -> tuple[np.ndarray, np.ndarray]:
    audio = load_audio(clip.entry.audio)
    curves = fit_curves(read_curves(Path(clip.entry.blendshapes)), num_frames(audio.size),
                          DataSection().length_tolerance_frames, str(clip.entry.blendshapes))
    return audio, curves


def _report(model, data_dir, split, head, acc: Accumulator, per_clip, skipped) -> dict[str, Any]:
    vowels, bilabials = acc.closure.counts()
    report: dict[str, Any] = {
        "model": str(model), "data": str(data_dir), "split": split,
        "head": None if head is None else str(head),
        "clips": len(per_clip), "frames": acc.frames, **acc.means(),
        "emotion_accuracy": (acc.emotion_correct / acc.emotion_clips
                             if acc.emotion_clips else None),
        "emotion_clips": acc.emotion_clips,
        "lip_closure": {
            "auc_model": acc.closure.auc("model"), "auc_target": acc.closure.auc("target"),
            "auc_energy_baseline": acc.closure.auc("energy"),
            "bilabial_frames": bilabials, "open_vowel_frames": vowels,
            "clips_with_phones": acc.phone_clips,
        },
        "skipped": [s.to_dict() for s in skipped],
        "per_clip": per_clip,
    }  # fmt: skip
    return _json_safe(report)


def _json_safe(value: Any) -> Any:
    """NaN (an undefined AUC) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def format_table(report: dict[str, Any]) -> str:
    def fmt(value: Any, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) \
            else str(value)

    lc = report["lip_closure"]
    rows = [
        ("clips / frames", f"{report['clips']} / {report['frames']}"),
        ("LVE coefficient (max |err| lips)", fmt(report.get("lve_coeff"))),
        ("EVE coefficient (max |err| eyes+brows)", fmt(report.get("eve_coeff"))),
        ("LVE mm", fmt(report.get("lve_mm"), 3)),
        ("EVE mm", fmt(report.get("eve_mm"), 3)),
        ("MSE (all channels)", fmt(report.get("mse"), 6)),
        ("emotion accuracy", f"{fmt(report['emotion_accuracy'], 3)} "
                             f"({report['emotion_clips']} clips)"),
        ("lip-closure AUC model", fmt(lc["auc_model"], 3)),
        ("lip-closure AUC targets", fmt(lc["auc_target"], 3)),
        ("lip-closure AUC energy baseline", fmt(lc["auc_energy_baseline"], 3)),
        ("bilabial / open-vowel frames", f"{lc['bilabial_frames']} / {lc['open_vowel_frames']}"
                                         f" ({lc['clips_with_phones']} clips with phones)"),
        ("skipped clips", str(len(report["skipped"]))),
    ]
    width = max(len(k) for k, _ in rows)
    title = f"{report['model']} on {report['data']} [{report['split']}]"
    return "\n".join([title] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise EmoTalkError("--plots needs matplotlib",
                           "pip install 'emotalk-blender[train]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, pred: np.ndarray, true: np.ndarray, title: str,
                channels: Sequence[str] = PLOT_CHANNELS) -> Path:
    """A PNG with one panel per channel: prediction vs target over time."""
    plt = _matplotlib()
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(pred.shape[0]) / 30.0
    fig, axes = plt.subplots(len(channels), 1, figsize=(10, 1.6 * len(channels)), sharex=True)
    for ax, name in zip(np.atleast_1d(axes), channels, strict=True):
        ax.plot(t, true[:, INDEX[name]], label="target", color="0.3")
        ax.plot(t, pred[:, INDEX[name]], label="prediction", color="tab:red")
        ax.set_ylabel(name, fontsize=8)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder (e.g. RUN/model)")
    p.add_argument("--data", required=True, help="dataset folder holding the manifest")
    p.add_argument("--manifest", default="manifest.jsonl", help="manifest name in --data")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--head", default=None, help="head mesh .npz for LVE/EVE in mm")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--plots", default=None, help="folder for PNG curve plots")
    p.add_argument("--max-plots", type=int, default=4, help="clips to plot (default 4)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    try:
        report = evaluate(args.model, args.data, args.split, args.head, args.plots, args.device,
                          args.manifest, args.max_plots)
    except EmoTalkError as exc:
        return report_error(exc, p.prog)
    print(format_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

