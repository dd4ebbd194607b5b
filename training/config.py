"""Training configuration: a TOML file read into frozen dataclasses.

One file says everything a run depends on (model, data, augmentation, optimiser, loss weights,
schedule, seed), so a run folder's copy of it reproduces the run. Reading is strict: a misspelt
key is an error naming the key and the file, because a typo that silently falls back to a
default (`warmup_step = 0`) wastes a GPU-day before anyone notices.

Sections (see `training/configs/*.toml` for commented examples):

    extends = "other.toml"   optional: start from another file (relative), tables merged
    seed = 0
    [model]            name, encoder ("compact" | "wav2vec2"), emotion_labels, fusion sizes,
                       pretrained_content / pretrained_emotion (local wav2vec2 folders)
    [model.content_encoder], [model.emotion_encoder], [model.decoder]
    [data]             manifest, splits, clip length limits, batching, workers
    [augment]          on-the-fly audio augmentation
    [optim]            AdamW, warmup + cosine schedule, gradient clipping
    [loss]             loss weights
    [train]            steps, precision, freeze schedule, validation/log/checkpoint intervals
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotalk_core.config import (
    PHONE_LABELS,
    SAMPLE_RATE,
    CompactEncoderConfig,
    DecoderConfig,
    ModelConfig,
    Wav2Vec2EncoderConfig,
)
from emotalk_core.controls import PRESET_NAMES
from emotalk_core.errors import EmoTalkError
from emotalk_core.protocol import INVALID_PARAMS

ENCODER_KINDS = ("compact", "wav2vec2")
PRECISIONS = ("bf16", "fp16", "fp32")
SELECT_BY = ("loss", "lip_closure_auc")


class ConfigError(EmoTalkError):
    """A training configuration that cannot be read or breaks a rule."""

    code = INVALID_PARAMS


@dataclass(frozen=True)
class ModelSection:
    """The network. Encoder tables hold `CompactEncoderConfig` fields for compact encoders, or
    `transformers.Wav2Vec2Config` fields for wav2vec2 ones (overriding the pretrained folder's
    config.json when `pretrained_*` is set: dropout, layerdrop, SpecAugment)."""

    name: str = "emotalk"
    encoder: str = "compact"
    emotion_labels: tuple[str, ...] = PRESET_NAMES
    content_dim: int = 512
    emotion_query_dim: int = 256
    level_dim: int = 32
    person_dim: int = 32
    # Inference windows stored with the model (see emotalk_core.config.ModelConfig).
    window_frames: int = 5000
    window_overlap_frames: int = 300
    # A phone classifier on the content features (classes: emotalk_core.config.PHONE_LABELS),
    # trained from the manifest's phone files with loss.phone.
    phone_head: bool = False
    # The phonetic stream (emotalk_core.config.ModelConfig.phone_input): the content encoder
    # reads a per-frame phone track, from phone-loop decoding cached next to the manifest
    # (`python -m training.data phone-loop`; made on first use) or, for a share of samples
    # (data.aligned_track_probability), from the manifest's phone files (forced alignment).
    phone_input: bool = False
    # A lip-contact output trained against the target's closures (loss.contact).
    contact_head: bool = False
    # Start from a model folder's weights ("default": the bundled model). Every tensor of that
    # model must exist here with its shape; tensors it lacks (a new input or head) keep their
    # initialisation, which for the phone input is zero: training starts from what it did.
    init_from: str | None = None
    pretrained_content: str | None = None  # local folder of a HF wav2vec2 (config + weights)
    pretrained_emotion: str | None = None
    content_encoder: dict[str, Any] = field(default_factory=dict)
    emotion_encoder: dict[str, Any] = field(default_factory=dict)
    decoder: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    manifest: str = "manifest.jsonl"  # relative to the --data folder
    train_split: str = "train"
    val_split: str = "val"
    max_seconds: float = 6.0  # longer clips are cropped to a random window (self-reconstruction)
    min_seconds: float = 0.2  # shorter clips are skipped as unusable
    length_tolerance_frames: int = 3  # audio/curve length mismatch trimmed or padded up to this
    max_audio_channels: int = 2  # speech files with more channels are reported, not guessed at
    batch_size: int = 8  # per process
    bucket_batches: int = 16  # batches per length bucket: larger = less padding, less shuffling
    num_workers: int = 2
    cache_audio: bool = False  # keep decoded 16 kHz audio in memory (small corpora only)
    cross_pairs: bool = True  # False: self-reconstruction only
    val_max_clips: int = 256  # 0: every validation clip
    # Clip-id prefix -> copies per epoch, e.g. {"asterisk-" = 4}: a small real-speech corpus
    # beside a large synthetic one still fills a good share of every batch.
    oversample: dict[str, int] = field(default_factory=dict)
    # Models with a phone input: share of training samples whose phone track comes from the
    # manifest's phone file (as with a transcript at inference) instead of the phone loop
    # (as without one), and share with no track at all. Validation always uses the loop.
    aligned_track_probability: float = 0.3
    track_dropout: float = 0.05


@dataclass(frozen=True)
class AugmentSection:
    """On-the-fly audio augmentation of the training inputs (never of validation)."""

    enabled: bool = True
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_probability: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)
    eq_probability: float = 0.3
    eq_tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    reverb_probability: float = 0.2
    reverb_rt60_s: tuple[float, float] = (0.1, 0.5)
    reverb_wet: tuple[float, float] = (0.1, 0.5)
    # Band limit: telephone-band and 16 kHz recordings alike, so bandwidth is no cue to the voice.
    lowpass_probability: float = 0.0
    lowpass_hz: tuple[float, float] = (3400.0, 7000.0)
    # Speed perturbation (audio and curves together; self-reconstruction samples only): a
    # factor f plays the clip f times faster, its pitch and formants f times higher.
    speed_probability: float = 0.0
    speed_factor: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio at [train] steps
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    encoder_lr_scale: float = 1.0  # pretrained encoders usually want a smaller rate (0.1)


@dataclass(frozen=True)
class LossSection:
    """Loss weights. The paper does not publish its weights; see training/README.md for why
    these: reconstruction terms carry the task, velocity keeps the motion's dynamics, and the
    classifier term is kept small because it shares the emotion encoder with reconstruction."""

    cross: float = 1.0
    self: float = 1.0
    velocity: float = 0.5
    emotion: float = 0.02
    phone: float = 0.0  # frame-level phone classification; needs model.phone_head
    aperture: float = 0.0  # MSE of the mouth-opening score (the lip-closure metric's)
    contact: float = 0.0  # BCE of the lip-contact output; needs model.contact_head


@dataclass(frozen=True)
class TrainSection:
    steps: int = 20000  # schedule length; the run stops here unless --max-steps stops it sooner
    precision: str = "bf16"  # on CUDA: bf16 | fp16 (with GradScaler) | fp32; CPU is always fp32
    freeze_encoders_steps: int = 0  # encoders not updated for the first N steps
    # Top-level parts of the network (content_encoder, emotion_encoder, decoder, head, ...) kept
    # as loaded for the whole run: a continued run that must not change what they compute.
    frozen: tuple[str, ...] = ()
    val_interval: int = 1000  # 0: no validation (the last weights are exported)
    log_interval: int = 50
    checkpoint_interval: int = 1000
    keep_checkpoints: int = 3
    presets: bool = True  # compute emotion presets into RUN/model at the end
    # What chooses the exported weights among the validations: the lowest "loss", or the
    # highest "lip_closure_auc" (validation clips with phones; for a model whose loss is
    # dominated by terms that lip sync does not depend on).
    select_by: str = "loss"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    train: TrainSection = field(default_factory=TrainSection)
    source: str | None = None  # the file it was read from (for messages)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        return json.loads(json.dumps(data))  # tuples as lists: comparable with a saved copy


SECTIONS: dict[str, type] = {
    "model": ModelSection, "data": DataSection, "augment": AugmentSection,
    "optim": OptimSection, "loss": LossSection, "train": TrainSection,
}  # fmt: skip


# -- reading ------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML file, apply `section.key=value` overrides (values in TOML syntax; bare words
    are strings), and check everything. A file may start from another one: `extends =
    "other.toml"` (relative to the file) reads that first and lays this file's values over it,
    table by table, so a recipe's second stage states only what differs."""
    file = Path(path)
    raw = _read_toml(file, [])
    for item in overrides or []:
        apply_override(raw, item, str(file))
    return config_from_dict(raw, str(file))


def _read_toml(file: Path, chain: list[Path]) -> dict[str, Any]:
    """The file's values, its `extends` chain resolved (`chain`: the files that extend it)."""
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        hint = (f"it is extended by {chain[-1]}" if chain
                else "pass --config training/configs/NAME.toml")
        raise ConfigError(f"config file {file} does not exist", hint) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{file}: extends must be a file name, got {base!r}")
    parent = (file.parent / base).resolve()
    if parent in chain or parent == file.resolve():
        raise ConfigError(f"{file}: extends {base!r} goes round in a circle")
    return _merged(_read_toml(parent, [*chain, file.resolve()]), raw)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`: tables merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> TrainConfig:
    unknown = sorted(set(raw) - set(SECTIONS) - {"seed"})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))} at the top "
                          f"level (allowed: seed, {', '.join(SECTIONS)})")
    values: dict[str, Any] = {"source": source}
    if "seed" in raw:
        values["seed"] = _convert(raw["seed"], int, "seed", source)
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {type(table).__name__}")
        values[name] = _section(cls, table, name, source)
    config = TrainConfig(**values)
    _check_rules(config, source)
    return config


def apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    """`model.encoder="compact"` or `train.steps=10` into the raw TOML dict."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must read section.key=value")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word or path: a string
    parts = key.strip().split(".")
    table = raw
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: override {item!r}: {part!r} is not a table")
    table[parts[-1]] = value


def _section(cls: type, table: dict[str, Any], where: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) "
                          f"{', '.join(repr(f'{where}.{k}') for k in unknown)} "
                          f"(allowed in [{where}]: {', '.join(names)})")
    values = {k: _convert(v, hints[k], f"{where}.{k}", source) for k, v in table.items()}
    return cls(**values)


def _convert(value: Any, hint: Any, key: str, source: str) -> Any:
    """`value` checked against the annotation `hint`; the error names the key and the file."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if (value is None or value == "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, source)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _type_error(key, source, "an array", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key, source) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{source}: {key} must have {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, key, source) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, source, "a table", value)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(key, source, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, source, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(key, source, "a number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(key, source, "a string", value)
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {hint}")  # a bug in this module


def _type_error(key: str, source: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")


def _check_rules(c: TrainConfig, source: str) -> None:
    """Value rules that types do not express."""
    problems = []
    if c.model.encoder not in ENCODER_KINDS:
        problems.append(f"model.encoder must be one of {', '.join(ENCODER_KINDS)}, "
                        f"got {c.model.encoder!r}")
    if c.model.encoder == "compact" and (c.model.pretrained_content or c.model.pretrained_emotion):
        problems.append("model.pretrained_content/pretrained_emotion need encoder = \"wav2vec2\"")
    if not c.model.emotion_labels:
        problems.append("model.emotion_labels must not be empty")
    if c.train.select_by not in SELECT_BY:
        problems.append(f"train.select_by must be one of {', '.join(SELECT_BY)}, "
                        f"got {c.train.select_by!r}")
    if c.train.precision not in PRECISIONS:
        problems.append(f"train.precision must be one of {', '.join(PRECISIONS)}, "
                        f"got {c.train.precision!r}")
    positive = {"data.batch_size": c.data.batch_size, "data.bucket_batches": c.data.bucket_batches,
                "data.max_seconds": c.data.max_seconds, "train.steps": c.train.steps,
                "train.log_interval": c.train.log_interval, "optim.lr": c.optim.lr,
                "train.checkpoint_interval": c.train.checkpoint_interval,
                "train.keep_checkpoints": c.train.keep_checkpoints}
    problems += [f"{k} must be positive, got {v}" for k, v in positive.items() if v <= 0]
    non_negative = {"data.num_workers": c.data.num_workers, "data.val_max_clips":
                    c.data.val_max_clips, "train.val_interval": c.train.val_interval,
                    "train.freeze_encoders_steps": c.train.freeze_encoders_steps,
                    "optim.warmup_steps": c.optim.warmup_steps,
                    "optim.grad_clip": c.optim.grad_clip,
                    "data.length_tolerance_frames": c.data.length_tolerance_frames}
    problems += [f"{k} must not be negative, got {v}" for k, v in non_negative.items() if v < 0]
    for name in ("cross", "self", "velocity", "emotion", "phone", "aperture", "contact"):
        if getattr(c.loss, name) < 0:
            problems.append(f"loss.{name} must not be negative")
    if c.loss.phone > 0 and not c.model.phone_head:
        problems.append("loss.phone needs a phone head: set model.phone_head = true")
    if c.loss.contact > 0 and not c.model.contact_head:
        problems.append("loss.contact needs a contact head: set model.contact_head = true")
    for name in ("aligned_track_probability", "track_dropout"):
        if not 0.0 <= getattr(c.data, name) <= 1.0:
            problems.append(f"data.{name} must be within [0, 1]")
    bad_counts = {k: v for k, v in c.data.oversample.items()
                  if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad_counts:
        problems.append(f"data.oversample counts must be integers >= 1, got {bad_counts}")
    low, high = c.augment.speed_factor
    if not 0.5 <= low <= high <= 2.0:
        problems.append("augment.speed_factor must be [low, high] within [0.5, 2]")
    low, high = c.augment.lowpass_hz
    if not 1000.0 <= low <= high < SAMPLE_RATE / 2:
        problems.append(f"augment.lowpass_hz must be [low, high] within [1000, "
                        f"{SAMPLE_RATE // 2}) Hz")
    for name in ("noise_probability", "eq_probability", "reverb_probability",
                 "lowpass_probability", "speed_probability"):
        if not 0.0 <= getattr(c.augment, name) <= 1.0:
            problems.append(f"augment.{name} must be within [0, 1]")
    for name in ("gain_db", "snr_db", "eq_tilt_db_per_octave", "reverb_rt60_s", "reverb_wet"):
        low, high = getattr(c.augment, name)
        if low > high:
            problems.append(f"augment.{name} must be [low, high] with low <= high")
    if not 0.0 <= c.optim.min_lr_ratio <= 1.0:
        problems.append("optim.min_lr_ratio must be within [0, 1]")
    if c.data.min_seconds > c.data.max_seconds:
        problems.append("data.min_seconds must not exceed data.max_seconds")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    build_model_config(c.model, source, read_pretrained=False)  # structure errors now, not later


# -- the network's config ------------------------------------------------------------------------
def build_model_config(section: ModelSection, source: str = "<config>",
                       read_pretrained: bool = True) -> ModelConfig:
    """The `emotalk_core` ModelConfig this section describes. With `read_pretrained`, wav2vec2
    encoders take their architecture from the pretrained folders' config.json."""
    try:
        decoder = DecoderConfig(**_fields_of(DecoderConfig, section.decoder, "model.decoder",
                                             source))
        content = _encoder_config(section, "content", source, read_pretrained)
        emotion = _encoder_config(section, "emotion", source, read_pretrained)
        return ModelConfig(
            content_encoder=content, emotion_encoder=emotion,
            emotion_labels=tuple(section.emotion_labels), decoder=decoder,
            content_dim=section.content_dim, emotion_query_dim=section.emotion_query_dim,
            level_dim=section.level_dim, person_dim=section.person_dim, name=section.name,
            window_frames=section.window_frames,
            window_overlap_frames=section.window_overlap_frames,
            phone_labels=PHONE_LABELS if section.phone_head else (),
            phone_input=section.phone_input, contact_head=section.contact_head,
        )  # fmt: skip
    except ConfigError:
        raise
    except EmoTalkError as exc:
        raise ConfigError(f"{source}: {exc.message}") from exc


def _encoder_config(section: ModelSection, which: str, source: str, read_pretrained: bool):
    table = dict(getattr(section, f"{which}_encoder"))
    where = f"model.{which}_encoder"
    if section.encoder == "compact":
        return CompactEncoderConfig(**_fields_of(CompactEncoderConfig, table, where, source))
    _check_wav2vec2_keys(table, where, source)
    pretrained = getattr(section, f"pretrained_{which}")
    if pretrained and read_pretrained:
        from emotalk_core.checkpoint import read_wav2vec2_config

        folder = Path(pretrained).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{source}: model.pretrained_{which} = {pretrained!r} is not a "
                              "folder", "download the wav2vec2 model to a local folder (see "
                              "training/README.md) or set the key to its path")
        table = {**read_wav2vec2_config(folder), **table}
    from emotalk_core.checkpoint import wav2vec2_fields

    return Wav2Vec2EncoderConfig(wav2vec2=wav2vec2_fields(table))


def _fields_of(cls: type, table: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - {"kind"}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) "
                          f"{', '.join(repr(f'{where}.{k}') for k in unknown)} "
                          f"(allowed: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    return {k: _convert(v, hints[k], f"{where}.{k}", source) for k, v in table.items()}


def _check_wav2vec2_keys(table: dict[str, Any], where: str, source: str) -> None:
    from transformers import Wav2Vec2Config

    allowed = set(Wav2Vec2Config().to_dict())
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) "
                          f"{', '.join(repr(f'{where}.{k}') for k in unknown)} "
                          "(allowed: transformers.Wav2Vec2Config fields)")
