"""The one inference API: `Predictor` turns audio and controls into (N, 52) ARKit curves.

Every front end (CLI, stdio server, Blender add-on, batch bake) calls `Predictor.predict`.

Long audio: clips up to `max_one_pass_frames` (5000, the release's limit) run in one pass exactly
as the released network computes them. Longer clips run in overlapping windows whose outputs are
cross-faded, so memory does not grow with the length of the audio.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import audio as audio_io
from .arkit import CHANNELS
from .checkpoint import LoadedModel, load_model
from .config import FPS, SAMPLE_RATE
from .controls import Controls, EmotionControl, finite_in
from .errors import Cancelled, ControlError, DeviceError, ResourceError
from .model import EmoTalk, level_weights
from .model.common import interpolate_frames
from .phonetics import PhoneTrack, phone_track
from .phonetics.track import aligned_closures
from .postprocess import apply, resample

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]


@dataclass
class Prediction:
    values: np.ndarray  # (N, 52) float32, channel order `channels`
    fps: float
    start: float  # seconds: frame i is at start + i / fps
    channels: tuple[str, ...]
    emotion_probabilities: dict[str, float]
    # Where the phone track came from ("alignment" of the transcript, "recognition" of the
    # words, the phone "loop"), or None for models without a phonetic input.
    phone_source: str | None = None
    warnings: list[str] = field(default_factory=list)  # for the user; the curves are valid

    @property
    def frames(self) -> int:
        return int(self.values.shape[0])


# -- the predictor --------------------------------------------------------------------------------
class Predictor:
    """Loads a model folder once and predicts curves for any number of clips."""

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel | None = "default",
        device: str = "auto",
        max_one_pass_frames: int | None = None,
        chunk_overlap_frames: int | None = None,
    ):
        """`max_one_pass_frames` / `chunk_overlap_frames` override the model's own window
        settings (`ModelConfig.window_frames` / `window_overlap_frames`)."""
        self.device = resolve_device(device)
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, self.device)
        self.loaded.model.to(self.device).eval()
        config = self.loaded.model.config
        self.max_one_pass_frames = max_one_pass_frames or config.window_frames
        self.chunk_overlap_frames = (config.window_overlap_frames if chunk_overlap_frames is None
                                     else chunk_overlap_frames)
        if self.max_one_pass_frames <= 2 * self.chunk_overlap_frames:
            raise ControlError("max_one_pass_frames must exceed twice the chunk overlap")

    @property
    def model(self) -> EmoTalk:
        return self.loaded.model

    @property
    def presets(self) -> tuple[str, ...]:
        return tuple(self.loaded.presets)

    @property
    def emotion_labels(self) -> tuple[str, ...]:
        return tuple(self.model.config.emotion_labels)

    def describe(self) -> dict[str, Any]:
        """What `info` and the protocol's `initialize` report."""
        cfg = self.model.config
        return {
            "name": cfg.name,
            "kind": cfg.kind,
            "fps": FPS,
            "persons": cfg.num_persons,
            "emotions": list(cfg.emotion_labels),
            "presets": list(self.presets),
            "path": str(self.loaded.path) if self.loaded.path else None,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
        }

    # -- public API -----------------------------------------------------------------------------
    def predict(
        self,
        audio: str | os.PathLike | np.ndarray,
        *,
        sample_rate: int | None = None,
        start: float | None = None,
        end: float | None = None,
        fps: float = FPS,
        controls: Controls | None = None,
        transcript: str | None = None,
        phones: PhoneTrack | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> Prediction:
        """Curves for `audio` (a file, or an array with its `sample_rate`) between `start` and
        `end` seconds, at `fps`. `transcript`: the words spoken in that window, optional; models
        with a phonetic input then take phone timings from forced alignment instead of
        phone-loop decoding (a transcript that does not align falls back to the loop, with a
        warning in the result). `phones`: phone timings the caller already has (times from
        `start`), used instead of decoding or aligning. Raises EmoTalkError subclasses only."""
        controls = controls or Controls()
        if not finite_in(fps, 1.0, 1000.0):
            raise ControlError(f"fps must be within [1, 1000], got {fps}")
        run = _Run(progress, cancel)
        # Cheap checks of the controls first, so a bad request fails before audio is read.
        weights_level, weights_person = self._style(controls)
        self._check_preset(controls.emotion)
        run.step("loading audio")
        samples = self._load(audio, sample_rate, start, end)
        target = self._emotion_target(controls.emotion)
        found, warnings = self._phone_track(samples, transcript, run, phones,
                                            controls.recognize_words)
        total = audio_io.num_frames(samples.shape[0])
        track = None if found is None else found.classes(total)
        try:
            with torch.inference_mode(), run.hooks(self.model):
                raw, contact, probs = self._network(samples, controls.emotion, target,
                                                    weights_level, weights_person, run, track)
        except torch.cuda.OutOfMemoryError as exc:
            raise ResourceError("out of GPU memory", "run on the CPU or use a shorter clip",
                                cli_hint="use --device cpu or a shorter clip") from exc
        except MemoryError as exc:
            raise ResourceError("out of memory",
                                "close other programs or use a shorter clip") from exc
        run.step("post-processing")
        closures = None if found is None else aligned_closures(found, total)
        values = (raw if controls.postprocess is None
                  else apply(raw, controls.postprocess, FPS, contact, closures))
        frames = audio_io.num_frames(samples.shape[0], fps)
        if not math.isclose(fps, FPS) or frames != values.shape[0]:
            values = resample(values, FPS, fps, frames)
        run.finish()
        labels = self.emotion_labels
        return Prediction(
            values=np.ascontiguousarray(values, dtype=np.float32),
            fps=float(fps),
            start=float(start or 0.0),
            channels=CHANNELS,
            emotion_probabilities={label: float(p) for label, p in zip(labels, probs, strict=True)},
            phone_source=None if found is None else found.source,
            warnings=warnings,
        )

    def emotion_embedding(self, audio: str | os.PathLike | np.ndarray,
                          sample_rate: int | None = None) -> torch.Tensor:
        """The clip's emotion features averaged over time (De,): what a preset prototype is made
        of. Long clips use their first `max_one_pass_frames` frames."""
        hidden = self._reference_features(self._load(audio, sample_rate, None, None))
        return hidden.mean(dim=1)[0]

    # -- internals ------------------------------------------------------------------------------
    def _load(self, audio, sample_rate, start, end) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise ControlError("an audio array needs its sample_rate")
            return audio_io.prepare_array(audio, sample_rate, start, end)
        return audio_io.load_audio(audio, start, end)

    def _style(self, controls: Controls) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.model.config.num_persons
        weights = controls.person_weights or {controls.person: 1.0}
        person = torch.zeros(1, n)
        for index, w in weights.items():
            if not (isinstance(index, int) and 0 <= index < n):
                raise ControlError(f"person {index} is out of range; this model has persons "
                                   f"0..{n - 1}")
            person[0, index] = float(w)
        person /= person.sum()
        level = level_weights(torch.tensor([float(controls.level)]))
        return level.to(self.device), person.to(self.device)

    def _phone_track(self, samples: np.ndarray, transcript: str | None, run: _Run,
                     given: PhoneTrack | None = None, recognize_words: bool = True,
                     ) -> tuple[PhoneTrack | None, list[str]]:
        """The clip's phones for models with a phonetic input (None for others), and warnings
        for the user."""
        if transcript is not None and not isinstance(transcript, str):
            raise ControlError(f"transcript must be text, got {type(transcript).__name__}")
        if not self.model.config.phone_input:
            if transcript and transcript.strip():
                return None, [f"model {self.model.config.name!r} does not read transcripts (no "
                              "phonetic input); the transcript was ignored"]
            return None, []
        if given is not None:
            return given, list(given.warnings)
        what = ("aligning the transcript" if transcript and transcript.strip()
                else "recognizing words" if recognize_words else "reading phones")
        run.step(what)
        found = phone_track(samples, transcript, recognize_words=recognize_words,
                            cancel=run.cancel,
                            progress=lambda done, total: run.step(f"{what} ({done}/{total})"))
        return found, list(found.warnings)

    def _check_preset(self, emotion: EmotionControl) -> None:
        if emotion.source == "preset" and emotion.preset not in self.loaded.presets:
            known = ", ".join(self.presets) or "none (compute them with `emotalk presets`)"
            raise ControlError(f"unknown emotion preset {emotion.preset!r}; this model has: "
                               f"{known}")

    def _emotion_target(self, emotion: EmotionControl) -> torch.Tensor | None:
        """Emotion features to blend towards: (1, T_ref, De) for a reference clip (interpolated to
        each window's length later), (1, 1, De) for a preset, None for the clip's own."""
        if emotion.source == "preset":
            self._check_preset(emotion)
            return self.loaded.presets[emotion.preset].to(self.device)[None, None]
        if emotion.source == "reference":
            with torch.inference_mode():
                return self._reference_features(
                    audio_io.load_audio(emotion.reference, role="emotion reference clip"))
        return None

    def _reference_features(self, samples: np.ndarray) -> torch.Tensor:
        samples = samples[: self._window_samples(self.max_one_pass_frames)]
        audio = torch.from_numpy(samples).to(self.device)[None]
        lengths = torch.tensor([audio.shape[1]], device=self.device)
        frames = torch.tensor([audio_io.num_frames(audio.shape[1])], device=self.device)
        with torch.inference_mode():
            hidden, _ = self.model.encode_emotion(audio, lengths, frames)
        return hidden  # (1, T_ref, De)

    @staticmethod
    def _window_samples(frames: int) -> int:
        return math.ceil(frames * SAMPLE_RATE / FPS)

    def _network(
        self, samples, emotion, target, level, person, run, track=None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Curves (T, 52), lip-contact probabilities (T,) (None without a contact head) and
        emotion probabilities, window by window."""
        total = audio_io.num_frames(samples.shape[0])
        windows = list(plan_windows(total, self.max_one_pass_frames, self.chunk_overlap_frames))
        run.total = 2 + len(windows) * run.ticks_per_window(self.model)
        out = np.zeros((total, self.model.config.num_channels + 1), dtype=np.float32)
        weight = np.zeros((total, 1), dtype=np.float32)
        logits_sum = None
        for first, last, fade_in, fade_out in windows:
            run.message = f"frames {first}-{last} of {total}"
            chunk = samples[self._window_samples(first): self._window_samples(last)]
            phones = None if track is None else track[first:last]
            values, logits = self._window(chunk, last - first, emotion, target, level, person,
                                          phones)
            ramp = crossfade_weights(last - first, fade_in, fade_out)[:, None]
            out[first:last] += values * ramp
            weight[first:last] += ramp
            scaled = logits * (last - first)
            logits_sum = scaled if logits_sum is None else logits_sum + scaled
        probs = torch.softmax(torch.from_numpy(logits_sum / total), dim=-1).numpy()
        out /= np.maximum(weight, 1e-8)
        contact = out[:, -1] if self.model.contact_head is not None else None
        return out[:, :-1], contact, probs

    def _window(self, samples, frames, emotion, target, level, person, phones=None):
        """(frames, 52 + 1) curves and the lip-contact probability (0 without the head), and
        the emotion logits of one window."""
        audio = torch.from_numpy(np.ascontiguousarray(samples)).to(self.device)[None]
        lengths = torch.tensor([audio.shape[1]], device=self.device)
        t = torch.tensor([frames], device=self.device)
        net = self.model
        track = None if phones is None else torch.from_numpy(phones).to(self.device)[None]
        content = net.encode_content(audio, lengths, t, track)
        own, logits = net.encode_emotion(audio, lengths, t)
        features = own
        if target is not None and emotion.strength > 0:
            goal = interpolate_frames(target, frames) if target.shape[1] > 1 else target
            features = (1.0 - emotion.strength) * own + emotion.strength * goal
        hidden = net.decode_features(content, features, level, person)
        values = net.head(hidden)[0]  # (frames, 52)
        contact = net.contact(hidden)
        contact = (torch.zeros_like(values[:, :1]) if contact is None
                   else torch.sigmoid(contact[0])[:, None])
        out = torch.cat([values, contact], dim=1)
        return out.float().cpu().numpy(), logits[0].float().cpu().numpy()


def plan_windows(total: int, max_frames: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """Windows (first, last, fade_in, fade_out) covering [0, total) frames.

    One window when the clip fits in `max_frames`. Otherwise windows of `max_frames` overlapping
    by `overlap` frames; starts are multiples of 3 frames (1600 samples) so every window begins on
    an exact sample and its frame count matches the frame formula.
    """
    if total <= max_frames:
        yield 0, total, 0, 0
        return
    hop = (max_frames - overlap) // 3 * 3
    first, fade_in = 0, 0
    while True:
        last = min(total, first + max_frames)
        fade_out = 0 if last == total else last - (first + hop)
        yield first, last, fade_in, fade_out
        if last == total:
            return
        first, fade_in = first + hop, fade_out


def crossfade_weights(length: int, fade_in: int, fade_out: int) -> np.ndarray:
    """(length,) weights: a linear ramp up over `fade_in`, down over `fade_out`, 1 between.
    Neighbouring windows' ramps over their shared frames sum to one."""
    w = np.ones(length, dtype=np.float32)
    if fade_in:
        w[:fade_in] = (np.arange(fade_in, dtype=np.float32) + 0.5) / fade_in
    if fade_out:
        w[length - fade_out:] = np.minimum(
            w[length - fade_out:], (np.arange(fade_out, 0, -1, dtype=np.float32) - 0.5) / fade_out
        )
    return w


def resolve_device(device: str | torch.device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was requested but no CUDA GPU is available",
                          "choose the device cpu or auto", cli_hint="use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


class _Run:
    """Progress and cancellation for one predict call. Forward pre-hooks on the network's layers
    report progress and check for cancellation inside long encoder passes."""

    def __init__(self, progress: ProgressCallback | None, cancel: CancelCheck | None):
        self.progress = progress
        self.cancel = cancel
        self.done = 0
        self.total = 2
        self.message = ""

    @staticmethod
    def ticks_per_window(net: EmoTalk) -> int:
        return len(net.progress_modules())

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled()

    def step(self, message: str) -> None:
        self.check()
        self.message = message
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, self.message)

    def _tick(self, *_: Any) -> None:
        self.check()
        self.done += 1
        self._report()

    def finish(self) -> None:
        self.done = self.total
        self._report()

    @contextlib.contextmanager
    def hooks(self, net: EmoTalk) -> Iterator[None]:
        handles = [m.register_forward_pre_hook(self._tick) for m in net.progress_modules()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
