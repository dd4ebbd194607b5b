"""`emotalk demo` (`make demo`): a bundled line of real speech baked onto the demo head twice.

    emotalk demo                          # the packaged model, into demo_output/
    emotalk demo --model runs/v1/model --out /tmp/demo --settings neutral sad angry
    emotalk demo --audio my_line.wav --tile 192

Why it exists: one command that shows, in a couple of minutes on a laptop CPU, everything the
project does end to end, with files a person can open and judge: the same clip animated with
two contrasting settings (by default the neutral preset at normal intensity, and the happy
preset at full strength and strong intensity), as Blender scenes, a rendered contact sheet, a
plot of the main curves, and the curves as .npy and Live Link Face .csv.

How (one code path with the add-on): the demo head (`emotalk_core.head.build_head`, made a
Blender object by `head`) is built in the bpy module with the clip added as a sound strip by the
add-on's own Add Audio operator and packed into the file, so the .blend opens anywhere; the
scene is saved as `head.blend` and baked once per setting by `bake.bake_files`, which runs the
add-on's Animate operator exactly as `emotalk bake` does. The curves are then read back from the
baked files (so the .npy/.csv hold what the keys hold), the contact sheet is rendered from the
baked files with Workbench (EEVEE headless takes about 30 s a frame, DESIGN.md section 9), and
matplotlib (Agg) lays out the sheet and draws the plot.

The bundled clip (emotalk_core/data/demo/): CMU ARCTIC arctic_a0007, speaker awb, "And you
always want to see it in the superlative degree.", 4.0 s, 16 kHz; see its README and LICENSE.

Setting names (`--settings`): a preset of the model (neutral, happy, sad, ...: the preset at
full strength; level 0 for neutral, whose RAVDESS clips exist at normal intensity only, level 1
for the others) or `speech` (the emotion heard in the clip, the paper's default). Without
`--settings` the demo uses `neutral happy`; a model without presets gets `speech` for the
first row and a message saying how to add presets for the second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import emotalk_core
from emotalk_core.arkit import CHANNELS, aperture
from emotalk_core.controls import PRESET_NAMES
from emotalk_core.errors import ControlError, EmoTalkError, ModelError, OutputError

from . import bake, blender
from .panel import panel_values

if TYPE_CHECKING:
    from emotalk_core.controls import Controls

DEMO_DIR = Path(emotalk_core.__file__).resolve().parent / "data" / "demo"
DEMO_CLIP = DEMO_DIR / "arctic_a0007.wav"
DEMO_TRANSCRIPT = "And you always want to see it in the superlative degree."
DEFAULT_SETTINGS = ("neutral", "happy")
SPEECH = "speech"  # a setting name: emotion from the clip itself
FPS = 30  # the scene's frame rate: the network's own, so keys land 1:1 on frames
HEAD_NAME = "EmoTalkHead"
BLEND_RESOLUTION = 720  # the saved scenes' render size (the contact sheet renders smaller)
PLOT_CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthSmileLeft", "browInnerUp",
                 "browDownLeft", "eyeBlinkLeft")
CAPTION_CHANNELS = (("jawOpen", "jaw"), ("mouthSmileLeft", "smile"), ("browInnerUp", "brow"))
NO_DEFAULT_MODEL = (
    "the default model is not bundled in this checkout; pass --model DIR (a model folder "
    "from training or `emotalk import-official`)")

Log = Callable[[str], None]


class DemoError(EmoTalkError):
    """The demo cannot run as asked (no matplotlib, a failed bake)."""


# -- what to run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoOptions:
    """Everything `emotalk demo` takes; the defaults are `make demo`'s."""

    model: str = "default"
    device: str = "auto"
    out: Path = Path("demo_output")
    audio: Path | None = None  # None: the bundled clip
    settings: tuple[str, ...] = ()  # (): DEFAULT_SETTINGS with fallbacks
    tile: int = 256  # contact-sheet tile size in pixels
    columns: int = 7  # contact-sheet frames per setting
    resolution: str = "medium"  # head mesh resolution (head.RESOLUTIONS)
    addon: Path | None = None  # built extension zip; None: build it from the source tree
    verbose: bool = False


@dataclass(frozen=True)
class DemoSetting:
    """One row of the demo: a file stem, the controls, and how to say them to a person."""

    name: str
    controls: Controls
    description: str


@dataclass
class DemoResult:
    out: Path
    settings: list[DemoSetting]
    model: str = "default"
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def check_model(model: str) -> dict[str, Any]:
    """The model folder's header (cheap: config.json only), or a ModelError that says what to
    do; a missing default model gets the demo's own message, as `make demo` hits it first."""
    from emotalk_core.checkpoint import read_header, resolve_model_dir

    try:
        directory = resolve_model_dir(model)
    except ModelError as exc:
        if str(model) == "default":
            raise ModelError(NO_DEFAULT_MODEL, NO_DEFAULT_MODEL) from exc
        raise
    return read_header(directory)


def check_clip(audio: Path | None) -> tuple[Path, float]:
    """The clip to animate and its duration; a missing or empty file fails before any work."""
    from emotalk_core.audio import audio_duration
    from emotalk_core.errors import AudioError

    clip = Path(audio).expanduser().absolute() if audio else DEMO_CLIP
    if not clip.is_file():
        where = "" if audio else " (the bundled demo clip is missing: reinstall the package)"
        raise AudioError(f"audio file not found: {clip}{where}")
    seconds = audio_duration(clip)
    if seconds <= 0:
        raise AudioError(f"{clip} holds no audio")
    return clip, seconds


def check_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise DemoError("the demo draws its pictures with matplotlib, which is not installed",
                        "pip install matplotlib (or the package's [train] extra)")


def setting(name: str) -> DemoSetting:
    """The controls behind a setting name (module docstring)."""
    from emotalk_core.controls import Controls, EmotionControl

    if name == SPEECH:
        return DemoSetting(name, Controls(), "emotion from the speech, level 1")
    level = 0.0 if name == "neutral" else 1.0
    return DemoSetting(name, Controls(emotion=EmotionControl("preset", preset=name), level=level),
                       f"preset {name}, strength 1, level {level:g}")


def plan_settings(requested: Sequence[str], presets: Sequence[str], log: Log) -> list[DemoSetting]:
    """Named settings must exist; the default pair falls back (module docstring)."""
    if requested:
        if len(set(requested)) != len(requested):
            raise ControlError(f"--settings names a setting twice: {' '.join(requested)}")
        for name in requested:
            if name != SPEECH and (name not in presets or name not in PRESET_NAMES):
                have = ", ".join(p for p in presets if p in PRESET_NAMES) or "none"
                raise ControlError(f"the model has no emotion preset {name!r} (it has: {have})",
                                   f"use '{SPEECH}' or one of its presets")
        return [setting(n) for n in requested]
    first, second = DEFAULT_SETTINGS
    names = [first if first in presets else SPEECH]
    if names[0] == SPEECH:
        log(f"note: the model has no '{first}' preset; the first setting uses the emotion heard "
            "in the speech instead")
    if second in presets:
        names.append(second)
    else:
        log(f"note: the model has no '{second}' preset, so the demo shows one setting only; "
            "store presets with `emotalk presets --model DIR --manifest MANIFEST` (labelled "
            "clips) and run the demo again")
    return [setting(n) for n in names]


# -- the run --------------------------------------------------------------------------------------
class Steps:
    """Numbered progress lines with the time each step took: the demo's only output besides
    the bake's own lines, so a person sees where the minutes go."""

    def __init__(self, total: int, log: Log) -> None:
        self.total, self.done, self.log = total, 0, log
        self.started = time.perf_counter()

    def run(self, title: str, work: Callable[[], Any]) -> Any:
        self.done += 1
        self.log(f"[{self.done}/{self.total}] {title} ...")
        t0 = time.perf_counter()
        result = work()
        self.log(f"[{self.done}/{self.total}] {title}: done in {time.perf_counter() - t0:.1f} s")
        return result

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def run_demo(options: DemoOptions, log: Log = print) -> DemoResult:
    """Build, bake, read back, render and plot; every check that can fail early runs first."""
    header = check_model(options.model)
    clip, seconds = check_clip(options.audio)
    check_matplotlib()
    if options.tile < 32 or options.columns < 1:
        raise ControlError("--tile must be at least 32 pixels and --columns at least 1")
    settings = plan_settings(options.settings, header.get("presets") or [], log)
    out = prepare_out(options.out)
    result = DemoResult(out, settings, options.model)
    steps = Steps(len(settings) + 4, log)
    head_blend = steps.run(f"building the demo head scene with {clip.name} ({seconds:.1f} s)",
                           lambda: build_scene(out / "head.blend", clip, seconds, options))
    blends = {s.name: out / f"{s.name}.blend" for s in settings}
    for s in settings:
        steps.run(f"baking '{s.name}' ({s.description}) with the add-on",
                  lambda s=s: bake_setting(head_blend, blends[s.name], s, options))
    curves = steps.run("reading the keys back", lambda: read_all(blends, out, result))
    frames = pick_frames(curves, load_envelope(clip), options.columns)
    sheet = steps.run(f"rendering the contact sheet ({len(settings)} x {len(frames)} frames, "
                      "Workbench)", lambda: render_sheet(blends, settings, frames, curves,
                                                         out / "contact_sheet.png", options))
    plot = steps.run("plotting the curves", lambda: plot_curves(
        curves, settings, clip, frames, out / "curves.png"))
    result.files += [head_blend, *blends.values(), sheet, plot]
    result.seconds = steps.elapsed
    return result


def prepare_out(out: Path) -> Path:
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- Blender --------------------------------------------------------------------------------------
def build_scene(target: Path, clip: Path, seconds: float, options: DemoOptions) -> Path:
    """The head, camera and lights, the clip as a selected, packed sound strip at frame 1 (added
    with the add-on's Add Audio operator), 30 fps, the frame range = the clip; saved to
    `target` so it can be baked like any animator's file."""
    from emotalk_core.head import build_head

    from .head import add_preview_rig, to_blender

    bpy = blender.load_bpy()
    log: list[str] = []
    with blender.blender_output(log):
        bpy.ops.wm.read_homefile(use_empty=True)
    addon = blender.ensure_addon(bpy, options.addon)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    obj = to_blender(build_head(options.resolution), name=HEAD_NAME)
    add_preview_rig(scene, obj, resolution=BLEND_RESOLUTION)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    strip_name = bake.add_audio(bpy, scene, addon, [clip], 1, log)[0]
    strip = blender.addon_module(addon, "strips").strip_collection(scene)[strip_name]
    transcript = blender.addon_module(addon, "transcripts").choose(None, clip)
    if transcript.text:  # packed below, the sound no longer finds its .txt: keep it on the strip
        strip.emotalk_transcript = transcript.text
    strip.sound.pack()  # the file opens anywhere; unpacking writes the clip next to it
    strip.sound.filepath = "//" + clip.name
    scene.frame_start, scene.frame_end = 1, max(1, math.ceil(seconds * FPS))
    scene.frame_current = 1
    scene.sync_mode = "AUDIO_SYNC"  # playback keeps pace with the sound
    show_camera_view(bpy)
    blender.save_atomic(bpy, target, log)
    return target


def show_camera_view(bpy) -> None:
    """Opened in Blender, the file shows the face through the camera (in solid shading with its
    material colours), so Space plays something worth looking at."""
    for screen in bpy.data.screens:
        for area in screen.areas:
            if area.type != "VIEW_3D":
                continue
            for space in area.spaces:
                if space.type == "VIEW_3D":
                    space.region_3d.view_perspective = "CAMERA"
                    if space.shading.type == "SOLID":
                        space.shading.color_type = "MATERIAL"


def bake_setting(head_blend: Path, target: Path, demo: DemoSetting, options: DemoOptions) -> Path:
    """`emotalk bake head.blend -o NAME.blend` with this setting's controls."""
    jobs = bake.plan_jobs([head_blend], output=str(target))
    settings = bake.BakeSettings(panel=panel_values(demo.controls), object_name=HEAD_NAME,
                                 model=options.model, device=options.device,
                                 addon=options.addon, verbose=options.verbose)
    batch = bake.bake_files(jobs, settings, demo.controls)
    if batch.interrupted:
        raise KeyboardInterrupt
    if batch.failures:
        raise DemoError(f"baking '{demo.name}' failed: {batch.failures[0].error}")
    return target


def open_baked(path: Path):
    """Open a baked file; returns (bpy, scene, head object)."""
    bpy = blender.load_bpy()
    blender.open_blend(bpy, path, [])
    obj = bpy.data.objects.get(HEAD_NAME)
    if obj is None or obj.data.shape_keys is None:
        raise DemoError(f"{path} has no '{HEAD_NAME}' with shape keys")
    return bpy, bpy.context.scene, obj


def read_curves(path: Path) -> np.ndarray:
    """The (T, 52) shape-key values the baked file plays at frames 1..T, in CHANNELS order:
    read through Blender's own animation evaluation, so they are what an animator sees."""
    _, scene, obj = open_baked(path)
    blocks = obj.data.shape_keys.key_blocks
    keys = [blocks[name] for name in CHANNELS]
    values = np.empty((scene.frame_end - scene.frame_start + 1, len(CHANNELS)), np.float32)
    for row, frame in enumerate(range(scene.frame_start, scene.frame_end + 1)):
        scene.frame_set(frame)
        values[row] = [k.value for k in keys]
    return values


def read_all(blends: dict[str, Path], out: Path, result: DemoResult) -> dict[str, np.ndarray]:
    """Curves of every baked file, also written as NAME.npy and NAME.csv (Live Link Face)."""
    from emotalk_core.export import write_curves

    curves = {}
    for name, path in blends.items():
        curves[name] = read_curves(path)
        for suffix in (".npy", ".csv"):
            result.files.append(write_curves(out / f"{name}{suffix}", curves[name], FPS))
    return curves



@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """Keep file descriptor 2 quiet: headless Workbench renders make Blender's GPU layer print
    harmless "EGL Error" lines there. What was said is shown if the work fails."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", errors="replace"))


def render_rows(blends: dict[str, Path], frames: Sequence[int], tile: int,
                verbose: bool = False) -> list[np.ndarray]:
    """One row of tiles per baked file, at the given 0-based frames, with Workbench."""
    from .head import render_rgb

    rows = []
    with tempfile.TemporaryDirectory(prefix="emotalk-demo-") as tmp, quiet_stderr(not verbose):
        for name, path in blends.items():
            bpy, scene, _ = open_baked(path)
            scene.render.engine = "BLENDER_WORKBENCH"
            scene.render.resolution_x = scene.render.resolution_y = tile
            tiles = []
            for frame in frames:
                scene.frame_set(scene.frame_start + frame)
                with blender.blender_output([]):
                    tiles.append(render_rgb(bpy, scene, Path(tmp) / f"{name}{frame}.png"))
            rows.append(np.stack(tiles))
    return rows


# -- which frames to show -------------------------------------------------------------------------
def load_envelope(clip: Path) -> np.ndarray:
    """RMS of the clip per 30 fps frame (frame i covers [i/30, (i+1)/30) s)."""
    from emotalk_core.audio import load_audio, num_frames
    from emotalk_core.config import SAMPLE_RATE

    samples = load_audio(clip).astype(np.float64)
    count = num_frames(len(samples), FPS)
    edges = (np.arange(count) * SAMPLE_RATE / FPS).astype(np.int64)
    sizes = np.diff(np.append(edges, len(samples)))
    return np.sqrt(np.add.reduceat(samples**2, edges) / np.maximum(sizes, 1))


def pick_frames(curves: dict[str, np.ndarray], envelope: np.ndarray, count: int) -> list[int]:
    """0-based frames for the contact sheet, shared by all rows so that a column compares the
    settings at one moment: the widest jaw openings and the most closed lips while speech is
    heard (lips meeting on m, b, p, not the rest pose of the pauses), alternately, for two
    thirds of the columns; frames evenly spaced over the speech for the rest. Picks stay
    total/(2 count) frames apart where the clip is long enough."""
    jaw = np.mean([c[:, CHANNELS.index("jawOpen")] for c in curves.values()], axis=0)
    lips = np.mean([aperture(c) for c in curves.values()], axis=0)
    total = len(jaw)
    count = min(count, total)
    loud = envelope[:total] > 0.1 * float(envelope.max()) if envelope.size else np.zeros(0)
    speech = np.flatnonzero(loud) if loud.any() else np.arange(total)
    opened = np.argsort(-jaw, kind="stable")
    closed = speech[np.argsort(lips[speech], kind="stable")]
    gap = max(1, total // (2 * count))
    picked: list[int] = []
    _alternate(picked, (opened, closed), max(1, 2 * count // 3), gap)
    for grid in (count, 4 * count):
        _take(picked, np.linspace(speech[0], speech[-1], grid).round(), count, gap)
    _take(picked, range(total), count, 1)
    return sorted(picked)


def _take(picked: list[int], candidates, limit: int, gap: int) -> None:
    """Append candidates at least `gap` frames from every pick until there are `limit`."""
    for i in candidates:
        if len(picked) >= limit:
            return
        if all(abs(int(i) - j) >= gap for j in picked):
            picked.append(int(i))


def _alternate(picked: list[int], ranked: Sequence[Sequence[int]], limit: int, gap: int) -> None:
    """The best remaining candidate of each list in turn (each list best first), so the widest
    openings and the firmest closures share the columns."""
    queues = [list(map(int, r)) for r in ranked]
    while len(picked) < limit and any(queues):
        for queue in queues:
            while queue and len(picked) < limit:
                i = queue.pop(0)
                if all(abs(i - j) >= gap for j in picked):
                    picked.append(i)
                    break


# -- pictures -------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_sheet(blends: dict[str, Path], settings: Sequence[DemoSetting], frames: Sequence[int],
                 curves: dict[str, np.ndarray], target: Path, options: DemoOptions) -> Path:
    """Render the tiles and lay them out: one labelled row per setting, one column per frame
    (time above, key values below each tile). Tiles are placed pixel for pixel (figimage)."""
    rows = render_rows(blends, frames, options.tile, options.verbose)
    return layout_sheet(rows, settings, frames, curves, target, options.tile)


def layout_sheet(rows: Sequence[np.ndarray], settings: Sequence[DemoSetting],
                 frames: Sequence[int], curves: dict[str, np.ndarray], target: Path,
                 tile: int) -> Path:
    plt = _pyplot()
    font = max(6.5, tile / 256 * 10)  # points
    line = font * 100 / 72 * 1.3  # one line of text in pixels at 100 dpi
    title, header = int(line * 1.6) + 6, int(line * 2) + 6
    left, caption = int(line * 2) + 14, int(line) + 6
    top = title + header
    small = min(font * 0.85, (tile - 8) / 25)  # the values under a tile fit its width
    width = left + len(frames) * tile + 8
    height = top + len(rows) * (tile + caption) + 4
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100, facecolor="#161616")

    def text(x: float, y: float, body: str, **kwargs: Any) -> None:
        """Text at pixel (x, y) from the top left."""
        style = {"fontsize": font, "color": "#dddddd", **kwargs}
        fig.text(x / width, 1 - y / height, body, **style)

    text(8, 6, "EmoTalk demo: one clip, one row per setting, one column per moment",
         color="white", fontsize=font * 1.2, weight="bold", va="top")
    for c, frame in enumerate(frames):
        text(left + c * tile + tile / 2, top - 4, f"frame {frame + 1}\n{frame / FPS:.2f} s",
             ha="center", va="bottom")
    for r, (images, demo) in enumerate(zip(rows, settings, strict=True)):
        y0 = top + r * (tile + caption)
        text(6, y0 + tile / 2, demo.name, color="white", weight="bold", rotation=90,
             ha="left", va="center")
        text(6 + line, y0 + tile / 2, demo.description, fontsize=font * 0.85, rotation=90,
             ha="left", va="center")
        for c, frame in enumerate(frames):
            fig.figimage(images[c], xo=left + c * tile, yo=height - y0 - tile, origin="upper")
            values = " ".join(f"{short} {curves[demo.name][frame, CHANNELS.index(ch)]:.2f}"
                              for ch, short in CAPTION_CHANNELS)
            text(left + c * tile + tile / 2, y0 + tile + 3, values, color="#aaaaaa",
                 fontsize=small, ha="center", va="top")
    fig.savefig(target, dpi=100, facecolor=fig.get_facecolor())
    plt.close(fig)
    return target


def plot_curves(curves: dict[str, np.ndarray], settings: Sequence[DemoSetting], clip: Path,
                frames: Sequence[int], target: Path) -> Path:
    """The waveform, then one panel per main channel with a line per setting over the clip's
    loudness (grey), and the contact sheet's frames as dotted lines."""
    from emotalk_core.audio import load_audio
    from emotalk_core.config import SAMPLE_RATE

    plt = _pyplot()
    samples = load_audio(clip)
    envelope = load_envelope(clip)
    envelope = envelope / max(float(envelope.max()), 1e-9)
    fig, axes = plt.subplots(len(PLOT_CHANNELS) + 1, 1, sharex=True,
                             figsize=(12, 1.3 * (len(PLOT_CHANNELS) + 1) + 0.6), dpi=100)
    axes[0].plot(np.arange(len(samples)) / SAMPLE_RATE, samples, color="#555555", lw=0.5)
    axes[0].set_ylabel("audio", rotation=0, ha="right", va="center")
    axes[0].set_title(f"{clip.name}: main curves per setting ({FPS} fps)", loc="left")
    frame_t = np.arange(len(envelope)) / FPS
    for ax, channel in zip(axes[1:], PLOT_CHANNELS, strict=True):
        ax.fill_between(frame_t, 0, envelope, step="post", color="#e6e6e6", lw=0)
        for demo in settings:
            values = curves[demo.name][:, CHANNELS.index(channel)]
            ax.plot(np.arange(len(values)) / FPS, values, lw=1.4, label=demo.name)
        top = max(1.0, max(float(c[:, CHANNELS.index(channel)].max()) for c in curves.values()))
        ax.set_ylim(-0.03, top + 0.03)
        ax.set_ylabel(channel, rotation=0, ha="right", va="center")
    for ax in axes:
        for frame in frames:
            ax.axvline(frame / FPS, color="#999999", ls=":", lw=0.8)
    axes[1].legend(loc="upper right", ncol=len(settings), fontsize=8, frameon=False)
    axes[-1].set_xlabel("seconds (dotted: the contact sheet's frames; grey: loudness)")
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return target


# -- what to tell the user ------------------------------------------------------------------------
def summary(result: DemoResult) -> str:
    """Where everything is and how to open it."""
    out = _shown(result.out)
    names = [s.name for s in result.settings]
    model = "" if result.model == "default" else f" --model {result.model}"
    lines = [f"demo written to {out}/ in {result.seconds:.0f} s:"]
    for s in result.settings:
        lines.append(f"  {s.name}.blend  {s.description}: the head, the clip (packed) and keys")
    lines += [
        "  head.blend  the scene before baking: bake your own settings onto it with",
        f"      emotalk bake {out}/head.blend{model} --level 0.5 -o {out}/mine.blend",
        "  contact_sheet.png  rendered frames, one row per setting",
        "  curves.png  the main curves over the waveform",
        f"  {', '.join(f'{n}.npy, {n}.csv' for n in names)}  the curves as (T, 52) arrays and "
        "Live Link Face CSV",
        "open in Blender 4.2 or newer and press Space to play (with sound):",
        f"  blender {out}/{names[-1]}.blend",
        "or animate your own character: install the add-on (make addon -> dist/emotalk-*.zip; "
        "Edit > Preferences > Get Extensions > Install from Disk) and use the EmoTalk tab "
        "in the 3D Viewport's sidebar",
    ]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """A path as short as it can be said: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
