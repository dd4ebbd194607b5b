"""Frozen configuration of the EmoTalk network. Saved inside every model folder (config.json) so
that a checkpoint fully rebuilds its model; loading is strict: unknown or missing keys are errors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from .controls import NUM_STYLES, PRESET_NAMES
from .errors import ModelError

SAMPLE_RATE = 16000
FPS = 30

# Labels of the released emotion classifier (r-f/wav2vec-english-speech-emotion-recognition).
RELEASED_EMOTION_LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# Classes of the optional phone head: silence and the 39 ARPAbet phones (no stress digits).
PHONE_LABELS = (
    "SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
    "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip


# Bounds of the sizes in a config. A config is a small text file that decides how much memory
# building the network takes, so every size is checked before anything is allocated. The bounds
# are far above any network this project trains or imports (the released one included).
MAX_WIDTH = 16384  # features, channels, hidden sizes
MAX_FFN = 65536
MAX_LAYERS = 64
MAX_HEADS = 256
MAX_LABELS = 1024
MAX_PERSONS = 1024
# Frames in one pass: attention memory grows with its square (the release's limit is 5000).
MAX_WINDOW_FRAMES = 10000
# wav2vec2 architecture fields that size the encoder, and their bounds.
WAV2VEC2_BOUNDS = {
    "hidden_size": (1, MAX_WIDTH), "num_hidden_layers": (1, 2 * MAX_LAYERS),
    "num_attention_heads": (1, MAX_HEADS), "intermediate_size": (1, MAX_FFN),
    "num_conv_pos_embeddings": (1, 4096), "num_conv_pos_embedding_groups": (1, MAX_WIDTH),
}  # fmt: skip
WAV2VEC2_CONV_LISTS = ("conv_dim", "conv_kernel", "conv_stride")
MAX_CONV_LAYERS = 32


@dataclass(frozen=True)
class Wav2Vec2EncoderConfig:
    """A wav2vec2 encoder; `wav2vec2` holds the transformers `Wav2Vec2Config` fields."""

    wav2vec2: dict[str, Any]
    kind: str = "wav2vec2"

    def __post_init__(self) -> None:
        check_fields(self, "wav2vec2 encoder", {})
        if any(not isinstance(key, str) for key in self.wav2vec2):
            raise ModelError("wav2vec2 encoder config: the keys of wav2vec2 must be strings")
        for key, (low, high) in WAV2VEC2_BOUNDS.items():
            if key in self.wav2vec2 and not _int_within(self.wav2vec2[key], low, high):
                raise ModelError(f"wav2vec2 encoder config: {key} must be an integer within "
                                 f"[{low}, {high}], got {_shown(self.wav2vec2[key])}")
        lengths = {len(v) for k, v in self.wav2vec2.items()
                   if k in WAV2VEC2_CONV_LISTS and isinstance(v, list)}
        for key in WAV2VEC2_CONV_LISTS:
            value = self.wav2vec2.get(key, [1])
            if not (isinstance(value, list) and 1 <= len(value) <= MAX_CONV_LAYERS
                    and all(_int_within(v, 1, MAX_FFN) for v in value)):
                raise ModelError(f"wav2vec2 encoder config: {key} must be a list of 1 to "
                                 f"{MAX_CONV_LAYERS} integers within [1, {MAX_FFN}], got "
                                 f"{_shown(value)}")
        if len(lengths) > 1:
            raise ModelError("wav2vec2 encoder config: conv_dim, conv_kernel and conv_stride "
                             "must have the same length")

    @property
    def output_dim(self) -> int:
        return int(self.wav2vec2.get("hidden_size", 768))

    def __hash__(self) -> int:  # dict field: hash by content
        return hash(json.dumps(self.wav2vec2, sort_keys=True))


FEATURE_NORMS = ("frame", "utterance", "frame+level")


@dataclass(frozen=True)
class CompactEncoderConfig:
    """Log-mel features, a strided convolution to 50 Hz, interpolation to the output frame rate,
    then a small pre-norm transformer. Trains from scratch on modest data and runs far faster
    than real time on a CPU."""

    n_mels: int = 80
    n_fft: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms: 100 Hz mel frames
    # Highest frequency of the mel filterbank (Hz); 0 means Nyquist (8 kHz). Below 4 kHz every
    # recording looks alike, whatever its bandwidth (telephone, game audio or studio speech), so
    # bandwidth cannot tell the network which kind of voice it hears.
    f_max: float = 0.0
    conv_channels: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_size: int = 1024
    pos_conv_kernel: int = 15
    dropout: float = 0.1
    kind: str = "compact"
    # How log-mel frames are normalised before the convolutions:
    # - "frame": per frame across mel bins (a LayerNorm). Discards each frame's loudness.
    # - "utterance": each bin minus its mean over the clip, divided by one scale per clip, then
    #   a learned per-bin affine. Keeps the loudness contour (closures are quiet) and removes the
    #   recording channel's fixed colouring, which is what differs between voices and rooms.
    # - "frame+level": "frame", plus one more input channel: each frame's mean log-mel level,
    #   standardised over the clip. The spectrum's shape stays free of the voice's loudness while
    #   the network still hears that a nasal murmur or a closure is quieter than a vowel.
    feature_norm: str = "frame"
    # Training only (SpecAugment's frequency masking): `freq_masks` bands of up to
    # `freq_mask_bins` mel bins each are zeroed per clip, so that no single band (a speaker's
    # formants, a microphone's colour) is needed to read the speech. Inference never masks.
    freq_masks: int = 0
    freq_mask_bins: int = 0
    # Training only (vocal tract length perturbation): each clip's spectrum is warped along the
    # frequency axis by a factor drawn from [1 - vtlp, 1 + vtlp], moving its formants as a
    # shorter or longer vocal tract would, without changing timing or pitch. 0 disables it.
    vtlp: float = 0.0
    # Cepstral smoothing of the log-mel frames: keep the first `cepstral_coefficients` DCT
    # coefficients (the spectral envelope: formants) and drop the rest (the harmonics of the
    # voice's pitch, which say who speaks, not what). 0 keeps the frames as they are.
    cepstral_coefficients: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "compact encoder", COMPACT_BOUNDS)
        if self.hidden_size % self.num_heads:
            raise ModelError("compact encoder config: hidden_size must be divisible by "
                             "num_heads")
        if self.feature_norm not in FEATURE_NORMS:
            raise ModelError(f"compact encoder config: feature_norm must be one of "
                             f"{', '.join(FEATURE_NORMS)}, got {self.feature_norm!r}")
        if self.freq_masks < 0 or not 0 <= self.freq_mask_bins <= self.n_mels:
            raise ModelError("compact encoder config: freq_masks must not be negative and "
                             "freq_mask_bins must be within [0, n_mels]")
        if not 0.0 <= self.f_max <= SAMPLE_RATE / 2:
            raise ModelError(f"compact encoder config: f_max must be within [0, "
                             f"{SAMPLE_RATE // 2}] Hz (0: Nyquist), got {self.f_max}")
        if not 0 <= self.cepstral_coefficients <= self.n_mels:
            raise ModelError(f"compact encoder config: cepstral_coefficients must be within "
                             f"[0, n_mels = {self.n_mels}], got {self.cepstral_coefficients}")
        if not 0.0 <= self.vtlp < 0.5:
            raise ModelError(f"compact encoder config: vtlp must be within [0, 0.5), got "
                             f"{self.vtlp}")

    @property
    def output_dim(self) -> int:
        return self.hidden_size


# f_max, freq_mask_bins, vtlp and cepstral_coefficients have their own checks (above).
COMPACT_BOUNDS = {
    "n_mels": (1, 512), "n_fft": (2, 8192), "hop_length": (1, 8192),
    "conv_channels": (1, MAX_WIDTH), "hidden_size": (1, MAX_WIDTH), "num_layers": (0, MAX_LAYERS),
    "num_heads": (1, MAX_HEADS), "ffn_size": (1, MAX_FFN), "pos_conv_kernel": (1, 1025),
    "dropout": (0.0, 1.0), "freq_masks": (0, 64),
}  # fmt: skip

EncoderConfig = Wav2Vec2EncoderConfig | CompactEncoderConfig


@dataclass(frozen=True)
class DecoderConfig:
    feature_dim: int = 832
    heads: int = 4
    ffn_size: int = 832
    layers: int = 1
    dropout: float = 0.1
    period: int = 30  # frames per step of the periodic attention bias (one second at 30 fps)

    def __post_init__(self) -> None:
        check_fields(self, "decoder", DECODER_BOUNDS)


DECODER_BOUNDS = {
    "feature_dim": (1, MAX_WIDTH), "heads": (1, MAX_HEADS), "ffn_size": (1, MAX_FFN),
    "layers": (1, MAX_LAYERS), "dropout": (0.0, 1.0), "period": (1, 1_000_000),
}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    content_encoder: EncoderConfig
    emotion_encoder: EncoderConfig
    emotion_labels: tuple[str, ...] = RELEASED_EMOTION_LABELS
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    content_dim: int = 512
    emotion_query_dim: int = 256
    level_dim: int = 32
    person_dim: int = 32
    num_levels: int = 2
    num_persons: int = NUM_STYLES
    num_channels: int = 52
    name: str = "emotalk"
    # Inference windows: clips up to `window_frames` run in one pass (5000 is the release's
    # limit); longer ones in windows overlapping by `window_overlap_frames`, cross-faded.
    window_frames: int = 5000
    window_overlap_frames: int = 300
    # Classes of a phone head on the content features (training only: it makes the content
    # encoder read phones, which is what carries over to voices never heard); () for none.
    phone_labels: tuple[str, ...] = ()
    # The phonetic stream (DESIGN.md section 4a): the content encoder also reads a per-frame
    # phone track (classes PHONE_LABELS) from phone-loop decoding or, given a transcript, from
    # forced alignment. Compact content encoders only.
    phone_input: bool = False
    # A lip-contact output (probability that the lips touch, per frame) trained against the
    # teacher's closures; inference uses it to shut the lips where the model is confident.
    contact_head: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "model", MODEL_BOUNDS)
        for key in ("emotion_labels", "phone_labels"):
            if any(not label for label in getattr(self, key)):
                raise ModelError(f"model config: {key} must not hold an empty label")
        if len(set(self.emotion_labels)) != len(self.emotion_labels):
            raise ModelError("model config: emotion_labels must not repeat a label")
        if self.phone_input and self.content_encoder.kind != "compact":
            raise ModelError("model config: phone_input needs a compact content encoder")
        if len(set(self.phone_labels)) != len(self.phone_labels):
            raise ModelError("model config: phone_labels must not repeat a label")
        if self.window_overlap_frames < 0 or self.window_frames <= 2 * self.window_overlap_frames:
            raise ModelError("model config: window_frames must exceed twice "
                             "window_overlap_frames")
        query = self.content_dim + self.emotion_query_dim + self.level_dim + self.person_dim
        if query != self.decoder.feature_dim:
            raise ModelError(
                f"model config: content_dim + emotion_query_dim + level_dim + person_dim = {query}"
                f" must equal decoder.feature_dim = {self.decoder.feature_dim}"
            )
        if self.decoder.feature_dim % self.decoder.heads:
            raise ModelError("model config: decoder.feature_dim must be divisible by decoder.heads")

    @property
    def kind(self) -> str:
        """"wav2vec2", "compact" or "mixed", after the encoders."""
        kinds = {self.content_encoder.kind, self.emotion_encoder.kind}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            values = dict(_checked(cls, data, "model"))
            values["content_encoder"] = _encoder_from_dict(values["content_encoder"], "content")
            values["emotion_encoder"] = _encoder_from_dict(values["emotion_encoder"], "emotion")
            if "decoder" in values:
                values["decoder"] = DecoderConfig(**_checked(DecoderConfig, values["decoder"],
                                                             "decoder"))
            for key in ("emotion_labels", "phone_labels"):
                if isinstance(values.get(key), list):  # anything else fails the type check
                    values[key] = tuple(values[key])
            return cls(**values)
        except (TypeError, KeyError) as exc:
            raise ModelError(f"model config is invalid: {exc}") from exc


MODEL_BOUNDS = {
    "content_dim": (1, MAX_WIDTH), "emotion_query_dim": (1, MAX_WIDTH),
    "level_dim": (1, MAX_WIDTH), "person_dim": (1, MAX_WIDTH),
    # The intensity control is a one-hot of 2 (normal, strong) and the head writes the 52
    # ARKit channels: a network with other counts cannot be driven or exported.
    "num_levels": (2, 2), "num_channels": (52, 52),
    "num_persons": (1, MAX_PERSONS), "window_frames": (1, MAX_WINDOW_FRAMES),
    "window_overlap_frames": (0, MAX_WINDOW_FRAMES),
    "emotion_labels": (1, MAX_LABELS), "phone_labels": (0, MAX_LABELS),
}  # fmt: skip


# -- field checks --------------------------------------------------------------------------------
def check_fields(config: Any, what: str, bounds: dict[str, tuple[float, float]]) -> None:
    """Every field of a config dataclass has its annotated type (an integer is also a number;
    a boolean is neither) and lies within `bounds` (for label tuples: their count). Raises
    ModelError naming the field, what it must be and the value found."""
    hints = _type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        expected = _expected(value, hints[item.name], bounds.get(item.name))
        if expected is not None:
            raise ModelError(f"{what} config: {item.name} must be {expected}, got "
                             f"{_shown(value)}")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _expected(value: Any, hint: Any, bounds: tuple[float, float] | None) -> str | None:
    """None when `value` fits; else what it must be, in words."""
    low, high = bounds if bounds is not None else (None, None)
    if hint is int:
        if bounds is not None and low == high:
            return None if _int_within(value, low, high) else f"{low}"
        ok = _int_within(value, low, high) if bounds else _is_int(value)
        return None if ok else "an integer" + (f" within [{low}, {high}]" if bounds else "")
    if hint is float:
        ok = _is_number(value) and (bounds is None or low <= value <= high)
        return None if ok else "a number" + (f" within [{low}, {high}]" if bounds else "")
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if typing.get_origin(hint) is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        count = bounds is None or (ok and low <= len(value) <= high)
        return None if ok and count else "a list of " + (
            f"{low} to {high} " if bounds else "") + "strings"
    if typing.get_origin(hint) is dict:
        return None if isinstance(value, dict) else "a JSON object"
    classes = typing.get_args(hint) or (hint,)
    return None if isinstance(value, classes) else "an object of " + " or ".join(
        c.__name__ for c in classes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_within(value: Any, low: float | None, high: float | None) -> bool:
    return _is_int(value) and (low is None or low <= value <= high)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _shown(value: Any) -> str:
    """A value for a one-line message: JSON-like, at most 60 characters."""
    text = f"the string {value!r}" if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked(cls: type, data: Any, what: str) -> dict[str, Any]:
    """`data` as a dict whose keys are all fields of `cls`; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ModelError(f"{what} config must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelError(f"{what} config has unknown keys: {', '.join(unknown)}")
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise ModelError(f"{what} config lacks keys: {', '.join(missing)}")
    return data


def _encoder_from_dict(data: Any, what: str) -> EncoderConfig:
    if not isinstance(data, dict):
        raise ModelError(f"{what} encoder config must be a JSON object")
    kind = data.get("kind")
    if kind == "wav2vec2":
        return Wav2Vec2EncoderConfig(**_checked(Wav2Vec2EncoderConfig, data, f"{what} encoder"))
    if kind == "compact":
        return CompactEncoderConfig(**_checked(CompactEncoderConfig, data, f"{what} encoder"))
    raise ModelError(f"{what} encoder config: unknown kind {kind!r} (expected wav2vec2 or compact)")


def compact_model_config(name: str = "emotalk-compact", phonetic: bool = True) -> ModelConfig:
    """The default model's network (training/configs/compact_phonetic.toml; with `phonetic`
    False, its first stage, training/configs/compact.toml): a content encoder of four 192-d
    layers on 64 mel bands up to 4 kHz with per-frame spectra plus the frame level, a phone
    head, a small emotion encoder (emotion is slow-varying and utterance-level), the paper's
    fusion and decoder at half width (384 = 256 + 96 + 16 + 16), 20 s windows; `phonetic` adds
    the phone-track input and the lip-contact output."""
    content = CompactEncoderConfig(n_mels=64, f_max=4000.0, conv_channels=192, hidden_size=192,
                                   num_layers=4, num_heads=4, ffn_size=768,
                                   feature_norm="frame+level", freq_masks=2, freq_mask_bins=10,
                                   vtlp=0.15)
    emotion = CompactEncoderConfig(n_mels=64, f_max=4000.0, conv_channels=64, hidden_size=64,
                                   num_layers=1, num_heads=2, ffn_size=128,
                                   feature_norm="utterance")
    decoder = DecoderConfig(feature_dim=384, heads=4, ffn_size=768)
    return ModelConfig(content_encoder=content, emotion_encoder=emotion,
                       emotion_labels=PRESET_NAMES, decoder=decoder, content_dim=256,
                       emotion_query_dim=96, level_dim=16, person_dim=16, name=name,
                       window_frames=600, window_overlap_frames=60, phone_labels=PHONE_LABELS,
                       phone_input=phonetic, contact_head=phonetic)
