"""`emotalk` command line: a thin front over `Predictor` and the checkpoint tools.

Errors are our own exceptions, reported here once as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .controls import (
    EMOTION_SOURCES,
    NUM_STYLES,
    PRESET_NAMES,
    Controls,
    EmotionControl,
    PostProcess,
    parse_person_weights,
)
from .errors import EXIT_ERROR, ControlError, EmoTalkError, report_error
from .files import probe, require_file
from .protocol import DEVICES

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised where the program runs, so that every `finally` and every writer's
    cleanup runs (the default action would end the process on the spot and leave partial
    files behind)."""


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # encoders and models load from local folders
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with _sigterm_raises():
            return int(args.func(args) or 0)
    except EmoTalkError as exc:
        return report_error(exc, "emotalk")
    except KeyboardInterrupt:
        print("emotalk: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("emotalk: terminated; nothing was written", file=sys.stderr)
        return EXIT_TERMINATED


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def terminate(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotalk", description="Speech-driven emotional facial animation (EmoTalk).")
    parser.add_argument("--version", action="version", version=f"emotalk {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("predict", help="audio -> 52 ARKit blendshape curves")
    p.add_argument("audio", help="audio file (wav, flac, mp3, ogg, ...)")
    p.add_argument("-o", "--output", help="output .npy, .json or .csv (Live Link Face); "
                   "default: AUDIO's name with .npy")
    add_model_arguments(p)
    add_control_arguments(p)
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30)")
    p.add_argument("--start", type=float, default=None, help="window start in seconds")
    p.add_argument("--end", type=float, default=None, help="window end in seconds")
    add_transcript_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("import-official", help="convert the released EmoTalk.pth to a model folder")
    p.add_argument("--checkpoint", required=True, help="the released EmoTalk.pth")
    p.add_argument("--content-encoder", required=True,
                   help="folder (or config.json) of jonatasgrosman/wav2vec2-large-xlsr-53-english")
    p.add_argument("--emotion-encoder", required=True,
                   help="folder (or config.json) of r-f/wav2vec-english-speech-emotion-recognition")
    p.add_argument("--out", required=True, help="model folder to write")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("info", help="describe a model folder")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="run the stdio backend (JSON-RPC on stdin/stdout)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("presets", help="compute emotion presets from a labelled manifest")
    add_model_arguments(p)
    p.add_argument("--manifest", required=True, help="manifest.jsonl with emotion labels")
    p.add_argument("--split", default="train", help="manifest split to use (default train)")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("bake", help="run the Blender add-on's Animate over .blend files (bpy)",
                       description="Open each .blend in the bpy module, run the add-on's "
                       "Animate from Audio on the target mesh and sound strips, save a copy.")
    p.add_argument("blend", nargs="+", help=".blend files to bake (one progress bar; a failing "
                   "file is reported at the end and the others go on)")
    p.add_argument("--object", help="mesh to animate (default: the active object, else the only "
                   "mesh with shape keys)")
    p.add_argument("--strips", nargs="+", action="extend", metavar="NAME",
                   help="'selected' (default), 'all' and/or strip names, baked together "
                   "(put them after the files)")
    p.add_argument("--audio", action="append", type=Path, metavar="FILE",
                   help="add FILE as a sound strip and bake it; repeat to add files one after "
                   "another")
    p.add_argument("--frame", type=int, default=None,
                   help="frame of the first --audio strip (default: the scene's current frame)")
    add_bake_transcript_arguments(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", help="output .blend (one input only); default: "
                     "<name>.emotalk.blend next to each input")
    out.add_argument("--out-dir", help="write <name>.blend for each input into this folder")
    out.add_argument("--in-place", action="store_true", help="overwrite the input files")
    add_model_arguments(p)
    add_control_arguments(p)
    p.add_argument("--addon", type=Path, default=None,
                   help="built extension zip to install (default: build it from the source tree)")
    p.add_argument("--verbose", action="store_true", help="show Blender's own output")
    p.set_defaults(func=cmd_bake)

    p = sub.add_parser("demo", help="bake a bundled speech clip onto the demo head (bpy)",
                       description="Animate a bundled clip of real speech on the procedural "
                       "demo head with two contrasting settings through the add-on (as `emotalk "
                       "bake`); write the .blend scenes, a rendered contact sheet, a plot of "
                       "the curves and the curves as .npy/.csv.")
    add_model_arguments(p)
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="output folder (default demo_output)")
    p.add_argument("--audio", type=Path, default=None, metavar="FILE",
                   help="animate FILE instead of the bundled clip (CMU ARCTIC arctic_a0007)")
    p.add_argument("--settings", nargs="+", default=(), metavar="NAME",
                   help="one row per name: a preset of the model (neutral, happy, sad, ...) or "
                   "'speech' (emotion from the clip); default: neutral happy")
    p.add_argument("--tile", type=int, default=256, help="contact-sheet tile size in pixels "
                   "(default 256)")
    p.add_argument("--columns", type=int, default=7, help="frames per setting on the contact "
                   "sheet (default 7)")
    p.add_argument("--head", choices=("low", "medium", "high"), default="medium",
                   help="head mesh resolution (default medium, about 14k vertices)")
    p.add_argument("--addon", type=Path, default=None,
                   help="built extension zip to install (default: build it from the source tree)")
    p.add_argument("--verbose", action="store_true", help="show Blender's own output")
    p.set_defaults(func=cmd_demo)
    return parser


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=os.environ.get("EMOTALK_MODEL", "default"),
                   help="model folder, or 'default' (env EMOTALK_MODEL)")
    p.add_argument("--device", default="auto", choices=DEVICES)


def add_transcript_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "transcript", "Optional: the words spoken. Models with a phonetic input align them to "
        "the audio for the lip timing; other models ignore them with a warning."
    ).add_mutually_exclusive_group()
    g.add_argument("--transcript", metavar="TEXT", default=None,
                   help="the words spoken in the clip (or in --start..--end)")
    g.add_argument("--transcript-file", metavar="FILE", default=None,
                   help="read the transcript from FILE (UTF-8 text)")


class _AppendTranscript(argparse.Action):
    """--transcript and --transcript-file into one list in command-line order, so the n-th of
    either belongs to the n-th --audio."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def add_bake_transcript_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "transcripts of --audio files",
        "Give none, or one per --audio, in the same order (--transcript and --transcript-file "
        "may alternate; --transcript '' for a file without one). The text is stored on the "
        "added strip, as the add-on's Transcript field does. Without one, a UTF-8 .txt file "
        "with the audio file's name beside it is used (line04.wav -> line04.txt); strips "
        "already in the .blend use the transcript stored on them or that .txt file.")
    g.add_argument("--transcript", dest="transcripts", action=_AppendTranscript, const="text",
                   metavar="TEXT", help="the words of the matching --audio file")
    g.add_argument("--transcript-file", dest="transcripts", action=_AppendTranscript,
                   const="file", metavar="FILE", help="read them from FILE (UTF-8 text)")


def read_transcript_file(path: str | os.PathLike) -> str:
    """The text of a transcript file: UTF-8 (a byte-order mark is allowed), without the
    surrounding whitespace. Raises ControlError naming the file."""
    if probe(path, "transcript file", ControlError) is None:
        raise ControlError(f"transcript file not found: {path}")
    require_file(path, "transcript file", ControlError, "give a text file")  # a FIFO blocks
    try:
        return Path(path).read_text(encoding="utf-8-sig").strip()
    except FileNotFoundError as exc:
        raise ControlError(f"transcript file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ControlError(f"transcript file {path} is not UTF-8 text (byte {exc.start}); "
                           "save it as UTF-8") from exc
    except OSError as exc:
        raise ControlError(f"cannot read transcript file {path}: "
                           f"{exc.strerror or exc}") from exc


def transcript_from_args(args: argparse.Namespace) -> str | None:
    if args.transcript_file is not None:
        return read_transcript_file(args.transcript_file)
    return args.transcript


def bake_transcripts(args: argparse.Namespace) -> tuple[str, ...]:
    """One text per --audio ('' = none), files read now so a bad one fails before any bake."""
    items = args.transcripts or []
    return tuple(read_transcript_file(value) if kind == "file" else value
                 for kind, value in items)


def print_warnings(warnings: Sequence[str], where: str = "") -> None:
    """Messages for the user beside a valid result (the curves were written)."""
    for warning in warnings:
        print(f"emotalk: warning: {where}{warning}", file=sys.stderr)


def add_control_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("controls")
    g.add_argument("--emotion-source", choices=EMOTION_SOURCES, default=None,
                   help="where emotion comes from (default: audio; preset if --emotion is given,"
                   " reference if --emotion-reference is given)")
    g.add_argument("--emotion", default=None,
                   help=f"preset name ({', '.join(PRESET_NAMES)}; a model may hold others)")
    g.add_argument("--emotion-reference", default=None, help="clip whose emotion to use")
    g.add_argument("--emotion-strength", type=float, default=1.0, help="0..1 (default 1)")
    g.add_argument("--level", type=float, default=1.0, help="intensity 0..1 (default 1)")
    g.add_argument("--person", type=int, default=0,
                   help=f"speaking style 0..{NUM_STYLES - 1} (default 0)")
    g.add_argument("--person-weights", default=None, help='a mix of styles, e.g. "3:0.5,7:0.5"')
    g.add_argument("--no-postprocess", action="store_true",
                   help="raw network output: no smoothing, blinks, clamp or amplitude change")
    g.add_argument("--no-smooth", action="store_true", help="skip Savitzky-Golay smoothing")
    g.add_argument("--no-blinks", action="store_true", help="keep the network's blink channels")
    g.add_argument("--no-clamp", action="store_true", help="do not clamp to [0, 1]")
    g.add_argument("--seed", type=int, default=0, help="blink seed (default 0)")
    g.add_argument("--mouth-amplitude", type=float, default=1.0, help="mouth motion scale")
    g.add_argument("--recognize-words", action=argparse.BooleanOptionalAction, default=True,
                   help="without a transcript, recognise the English words and lip-sync their "
                   "phones (the default); --no-recognize-words reads the phone loop's phones "
                   "instead: faster, for speech in other languages, lips that close less often")


def controls_from_args(args: argparse.Namespace) -> Controls:
    source = args.emotion_source or (
        "preset" if args.emotion else "reference" if args.emotion_reference else "audio")
    emotion = EmotionControl(source=source, preset=args.emotion,
                             reference=args.emotion_reference, strength=args.emotion_strength)
    post = None if args.no_postprocess else PostProcess(
        smooth=not args.no_smooth, blinks=not args.no_blinks, seed=args.seed,
        clamp=not args.no_clamp, mouth_amplitude=args.mouth_amplitude)
    return Controls(emotion=emotion, level=args.level, person=args.person,
                    person_weights=parse_person_weights(args.person_weights), postprocess=post,
                    recognize_words=args.recognize_words)


def cmd_predict(args: argparse.Namespace) -> int:
    from .export import check_output_path, write_curves
    from .inference import Predictor

    frames = _frames_at_most(args)  # the audio is checked before its name makes the output's
    output = Path(args.output) if args.output else Path(args.audio).with_suffix(".npy")
    inputs = (args.audio, args.emotion_reference, args.transcript_file)
    check_output_path(output, inputs, frames)
    controls = controls_from_args(args)
    transcript = transcript_from_args(args)
    predictor = Predictor(args.model, device=args.device)
    with ProgressBar("predicting") as report:
        result = predictor.predict(args.audio, start=args.start, end=args.end, fps=args.fps,
                                   controls=controls, transcript=transcript, progress=report)
    write_curves(output, result.values, result.fps, inputs=inputs, metadata={
        "audio": str(args.audio), "start": result.start, "model": predictor.describe()["name"],
        "emotion_probabilities": result.emotion_probabilities,
        "phone_source": result.phone_source})
    print_warnings(result.warnings)
    top = max(result.emotion_probabilities.items(), key=lambda kv: kv[1])
    print(f"wrote {output} ({result.frames} frames at {result.fps:g} fps; "
          f"speech emotion: {top[0]} {top[1]:.0%})")
    return 0


def _frames_at_most(args: argparse.Namespace) -> int:
    """The most frames `predict` can write for the audio (from its header; nothing decoded),
    so a full disk is found before the model runs. A bad fps is refused later, by predict."""
    from .audio import audio_duration

    fps = args.fps if math.isfinite(args.fps) and 1.0 <= args.fps <= 1000.0 else 30.0
    return math.ceil(audio_duration(args.audio) * fps)


def cmd_import_official(args: argparse.Namespace) -> int:
    from .checkpoint import import_official

    out = Path(args.out)
    net = import_official(args.checkpoint, args.content_encoder, args.emotion_encoder, out)
    count = sum(p.numel() for p in net.parameters())
    print(f"wrote {out} ({count / 1e6:.1f} M parameters, strict import: every key matched)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .inference import Predictor

    info = Predictor(args.model, device=args.device).describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:>10}: {shown if shown != '' else '-'}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .presets import compute_presets

    names = compute_presets(args.model, args.manifest, split=args.split, device=args.device)
    print(f"stored {len(names)} presets in {args.model}: {', '.join(names)}")
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from blender_addon.headless.bake import BakeSettings, bake_files, plan_jobs
    from blender_addon.headless.panel import panel_values

    jobs = plan_jobs(args.blend, output=args.output, out_dir=args.out_dir,
                     in_place=args.in_place)
    controls = controls_from_args(args)
    settings = BakeSettings(
        panel=panel_values(controls), object_name=args.object, strips=tuple(args.strips or ()),
        audio=tuple(args.audio or ()), transcripts=bake_transcripts(args), frame=args.frame,
        model=args.model, device=args.device, addon=args.addon, verbose=args.verbose)
    batch = bake_files(jobs, settings, controls)
    baked = len(batch.results) - len(batch.failures)
    for done in batch.results:
        print_warnings(done.warnings, f"{done.job.source}: ")
    for failed in batch.failures:
        print(f"emotalk: error: {failed.job.source}: {failed.error}", file=sys.stderr)
    if batch.interrupted:
        print(f"emotalk: interrupted; {baked} file(s) were baked and saved, the file being "
              "baked was not written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if batch.failures:
        print(f"emotalk: {len(batch.failures)} of {len(jobs)} file(s) failed; {baked} baked",
              file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from blender_addon.headless.demo import DemoOptions, run_demo, summary

    options = DemoOptions(
        model=args.model, device=args.device, out=args.out, audio=args.audio,
        settings=tuple(args.settings), tile=args.tile, columns=args.columns,
        resolution=args.head, addon=args.addon, verbose=args.verbose)
    try:
        result = run_demo(options, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"emotalk: interrupted; the demo in {args.out} is incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary(result))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve()


class ProgressBar:
    """A tqdm bar on stderr for work longer than a couple of seconds, on a terminal only."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=1, desc=self.description, delay=2.0, file=sys.stderr,
                        disable=not sys.stderr.isatty(), leave=False)

        def report(done: int, total: int, message: str) -> None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(message, refresh=False)
            self.bar.refresh()

        return report

    def __exit__(self, *exc) -> None:
        self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
