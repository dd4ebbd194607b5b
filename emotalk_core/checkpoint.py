"""Model folders (our native format) and import of the released EmoTalk checkpoint.

A model folder holds:
- `config.json`: `{"format": "emotalk-model", "format_version": 1, "config": {...ModelConfig...},
  "presets": [names], "metadata": {...}}`; it fully rebuilds the network;
- `model.safetensors`: the weights (no pickled code is ever loaded);
- `presets.safetensors` (optional): `prototypes` (P, De), the emotion-feature prototype of each
  preset named in config.json's "presets", in that order.

Loading is strict: every missing, unexpected, wrongly shaped or wrongly typed tensor is listed
in the error. Sizes are checked before anything is allocated: the config's fields against their
bounds, then the network's tensors (built on PyTorch's "meta" device, which allocates nothing)
against the weights file's header, and a released checkpoint's uncompressed size against the
network it must fit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import RELEASED_EMOTION_LABELS, ModelConfig, Wav2Vec2EncoderConfig
from .errors import EmoTalkError, ModelError, OutputError, ResourceError
from .files import atomic_path, check_writable, probe, read_json, refuse_inputs, require_file, shown
from .model import EmoTalk

FORMAT = "emotalk-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PRESETS_FILE = "presets.safetensors"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"

# Released EmoTalk.pth key prefixes -> ours. Order matters only for readability: prefixes are
# disjoint because each ends with a dot.
OFFICIAL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("audio_encoder_cont.", "content_encoder.wav2vec2."),
    ("audio_encoder_emo.wav2vec2.", "emotion_encoder.wav2vec2."),
    ("audio_encoder_emo.classifier.", "emotion_encoder.classifier."),
    ("audio_feature_map_cont.", "content_proj."),
    ("audio_feature_map_emo.", "emotion_proj."),
    ("audio_feature_map_emo2.", "emotion_query."),
    ("obj_vector_level.", "level_embed."),
    ("obj_vector_person.", "person_embed."),
    ("transformer_decoder.", "decoder."),
    ("bs_map_r.", "head."),
)
# Saved with old torch: weight norm as weight_g / weight_v; current torch uses parametrizations.
WEIGHT_NORM_RENAMES = (
    ("weight_g", "parametrizations.weight.original0"),
    ("weight_v", "parametrizations.weight.original1"),
)
# The encoders' CTC heads (Linear(1024, 32)) are in the release but unused by EmoTalk.
UNUSED_OFFICIAL_SUFFIXES = (".lm_head.weight", ".lm_head.bias")
MAX_CONFIG_BYTES = 16 << 20  # a model's config.json is a few kB; an encoder's about 2 kB
# Storage types a floating-point weight may be saved in (safetensors' names); it is converted
# to the network's float32 on load. Integers, booleans and complex numbers are refused.
FLOAT_STORAGE = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                 "F64": torch.float64}
# A released checkpoint may hold its weights in float64 (twice float32) plus the unused heads.
OFFICIAL_SIZE_FACTOR = 2
OFFICIAL_SIZE_SLACK = 16 << 20

Layout = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (dtype name, shape)


@dataclass
class LoadedModel:
    model: EmoTalk
    presets: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (De,)
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> ModelConfig:
        return self.model.config


# -- native format ------------------------------------------------------------------------------
def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """`default` (or None) -> the model shipped in the package; otherwise the given folder."""
    if model is None or str(model) == "default":
        path = DEFAULT_MODEL_DIR
        if not (path / CONFIG_FILE).is_file():
            raise ModelError(
                f"the default model is not installed at {path}",
                "reinstall the package, or choose a model folder",
                cli_hint="reinstall the package, or pass --model DIR with a model folder",
            )
        return path
    path = Path(model).expanduser()
    status = probe(path, "model folder", ModelError)
    if status is not None and stat.S_ISREG(status.st_mode) and path.name == CONFIG_FILE:
        path, status = path.parent, probe(path.parent, "model folder", ModelError)
    if status is None:
        raise ModelError(f"model folder {shown(path)} does not exist",
                         "choose a folder made by training or `emotalk import-official`",
                         cli_hint="pass --model with a folder made by training or "
                                  "`emotalk import-official`")
    if not stat.S_ISDIR(status.st_mode):
        raise ModelError(f"model path {shown(path)} is a file, not a model folder",
                         "a model folder holds config.json and model.safetensors")
    return path


def save_model(
    directory: str | os.PathLike,
    model: EmoTalk,
    presets: dict[str, torch.Tensor] | None = None,
    metadata: dict[str, Any] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """Write a model folder. Files are written under temporary names and renamed at the end, so
    an interrupted save never leaves a half-written model. `storage_dtype` (torch.float16)
    stores the floating-point weights at half size; loading always builds a float32 network."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    presets = presets or {}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "presets": list(presets),
        "metadata": metadata or {},
    }
    names = [WEIGHTS_FILE, *([PRESETS_FILE] if presets else []), CONFIG_FILE]
    with contextlib.ExitStack() as files:
        # Every file is renamed into place only after all were written, in the reverse order of
        # entering: the weights first, config.json last.
        partial = {name: files.enter_context(atomic_path(out / name)) for name in reversed(names)}
        state = {k: _stored(v, storage_dtype) for k, v in model.state_dict().items()}
        save_file(state, str(partial[WEIGHTS_FILE]))
        if presets:
            stack = torch.stack([presets[n].detach().float().cpu() for n in presets])
            save_file({"prototypes": stack.contiguous()}, str(partial[PRESETS_FILE]))
        partial[CONFIG_FILE].write_text(json.dumps(header, indent=2))
    if not presets:
        (out / PRESETS_FILE).unlink(missing_ok=True)
    return out


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def read_header(directory: Path) -> dict[str, Any]:
    """config.json of a model folder, every field of the right type."""
    path = directory / CONFIG_FILE
    if probe(path, "model config", ModelError) is None:
        raise ModelError(f"{shown(directory)} is not a model folder: {CONFIG_FILE} is missing",
                         "pass a folder made by training or `emotalk import-official`")
    header = read_json(path, "model config", ModelError, MAX_CONFIG_BYTES,
                       "re-create the model folder")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path} is not an EmoTalk model config (format is not {FORMAT!r})",
                         "a released EmoTalk.pth must be converted with `emotalk import-official`")
    _check_version(path, header.get("format_version"))
    unknown = sorted(set(header) - {"format", "format_version", "config", "presets", "metadata"})
    if unknown:
        raise ModelError(f"{path} has unknown keys: {', '.join(unknown)}")
    presets = header.get("presets")
    if presets is not None and not (
            isinstance(presets, list) and all(isinstance(n, str) and n for n in presets)
            and len(set(presets)) == len(presets)):
        raise ModelError(f"{path}: presets must be a list of distinct preset names, got "
                         f"{_json_kind(presets)}", "recompute presets with `emotalk presets`")
    if not isinstance(header.get("metadata"), dict | None):
        raise ModelError(f"{path}: metadata must be a JSON object, got "
                         f"{_json_kind(header['metadata'])}", "re-create the model folder")
    return header


def _check_version(path: Path, version: Any) -> None:
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{path}: format_version must be the integer {FORMAT_VERSION}, got "
                         f"{_json_kind(version)} {json.dumps(version)[:40]}",
                         "the file was edited by hand or by another program; re-create it")
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {version} is not supported "
                         f"(this version reads {FORMAT_VERSION})",
                         "upgrade emotalk or re-export the model")


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def load_model(model: str | os.PathLike | None = "default", device: str | torch.device = "cpu"
               ) -> LoadedModel:
    """Load a model folder strictly; the model is returned in eval mode on `device`. Nothing
    is allocated for the network before its config and the weights file's header agree."""
    directory = resolve_model_dir(model)
    header = read_header(directory)
    config = ModelConfig.from_dict(header.get("config"))
    weights = directory / WEIGHTS_FILE
    require_file(weights, "weights file", ModelError, "re-create the model folder")
    check_layout(network_layout(config), stored_layout(weights), str(weights))
    names = header.get("presets") or []
    _check_presets(directory, names, config)
    state = read_tensors(weights)
    net = build_model(config)
    load_state_strict(net, state, str(weights))
    presets = _load_presets(directory, names)
    net.to(device).eval()
    presets = {k: v.to(device) for k, v in presets.items()}
    return LoadedModel(net, presets, dict(header.get("metadata") or {}), directory)


PRESETS_HINT = "recompute presets with `emotalk presets`"


def _check_presets(directory: Path, names: list[str], config: ModelConfig) -> None:
    """The presets file's header holds one floating-point prototype per named preset."""
    if not names:
        return
    path = directory / PRESETS_FILE
    require_file(path, "presets file", ModelError, PRESETS_HINT)
    expected = {"prototypes": ("F32", (len(names), config.emotion_encoder.output_dim))}
    check_layout(expected, stored_layout(path, PRESETS_HINT), str(path), PRESETS_HINT)


def _load_presets(directory: Path, names: list[str]) -> dict[str, torch.Tensor]:
    if not names:
        return {}
    path = directory / PRESETS_FILE
    prototypes = read_tensors(path, PRESETS_HINT)["prototypes"].float()
    if not bool(torch.isfinite(prototypes).all()):
        raise ModelError(f"{path} holds NaN or infinite prototypes", PRESETS_HINT)
    return {name: prototypes[i] for i, name in enumerate(names)}


def build_model(config: ModelConfig) -> EmoTalk:
    """The network of a checked config. A config that passed its checks can still describe
    a network the layers refuse (a library's own constraints): a ModelError, as is every
    other failure to build from a file's contents."""
    try:
        return EmoTalk(config)
    except MemoryError as exc:
        raise ResourceError("out of memory while building the network",
                            "close other programs or use a smaller model") from exc
    except EmoTalkError:
        raise
    except Exception as exc:  # transformers and torch refuse bad sizes with many types
        raise ModelError(f"cannot build the network from its config: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


# -- layouts: what tensors a network needs and what a file holds -------------------------------
def network_layout(config: ModelConfig) -> Layout:
    """Name -> (dtype, shape) of every tensor the network's state dict holds, from a build on
    the meta device (no memory for the weights)."""
    with torch.device("meta"):
        net = build_model(config)
    return {k: (_dtype_name(v.dtype), tuple(v.shape)) for k, v in net.state_dict().items()}


_DTYPE_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
                torch.float64: "F64", torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16",
                torch.int32: "I32", torch.int64: "I64", torch.bool: "BOOL"}


def _dtype_name(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype (F32, I8, BOOL, ...)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def stored_layout(path: Path, hint: str = "re-create the model folder") -> Layout:
    """Name -> (dtype, shape) of the tensors in a safetensors file, from its header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys()  # the header's names; no tensor data is read
            slices = {name: handle.get_slice(name) for name in names}
            return {k: (v.get_dtype(), tuple(v.get_shape())) for k, v in slices.items()}
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path} is corrupt: {_first_line(exc)}", hint) from exc


def read_tensors(path: Path, hint: str = "re-create the model folder") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file whose layout was checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except MemoryError as exc:
        raise ResourceError(f"out of memory while reading {path}",
                            "close other programs") from exc
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path} is corrupt: {_first_line(exc)}", hint) from exc


def check_layout(expected: Layout, stored: Layout, source: str,
                 hint: str = "the checkpoint is from another model or configuration") -> None:
    """ModelError listing every missing, unexpected, wrongly shaped and wrongly typed tensor.
    A floating-point tensor may be stored in any floating-point type; others only in their
    own."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shared = sorted(set(expected) & set(stored))
    wrong = [f"{k} {stored[k][1]} != {expected[k][1]}" for k in shared
             if stored[k][1] != expected[k][1]]
    typed = [f"{k} {stored[k][0]}" for k in shared if not _dtype_fits(stored[k][0],
                                                                     expected[k][0])]
    parts = [f"{len(keys)} {title}: " + ", ".join(keys[:20]) + (", ..." if len(keys) > 20
                                                                  else "")
             for title, keys in (("missing", missing), ("unexpected", unexpected),
                                 ("wrong shape", wrong),
                                 ("not floating-point (F16, BF16, F32 or F64)", typed))
             if keys]
    if parts:
        raise ModelError(f"{source} does not fit the network. " + "; ".join(parts), hint)


def _dtype_fits(stored: str, expected: str) -> bool:
    if expected in FLOAT_STORAGE:
        return stored in FLOAT_STORAGE
    return stored == expected


def _layout_of(state: dict[str, torch.Tensor]) -> Layout:
    return {k: (_dtype_name(v.dtype), tuple(v.shape)) for k, v in state.items()}


def load_state_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `net`, failing with a list of every missing, unexpected, wrongly
    shaped and wrongly typed key, and of weights that are NaN or infinite."""
    check_layout(_layout_of(net.state_dict()), _layout_of(state), source)
    broken = sorted(k for k, v in state.items()
                    if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise ModelError(f"{source} holds NaN or infinite weights in {len(broken)} tensor(s): "
                         + ", ".join(broken[:20]), "the checkpoint is damaged; re-create it")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{source} does not fit the network: {_first_line(exc)}") from exc


# -- the released EmoTalk.pth ------------------------------------------------------------------
def wav2vec2_config_file(path: str | os.PathLike) -> Path:
    """The `config.json` of a wav2vec2 encoder: the file given, or the one in the folder."""
    p = Path(path).expanduser()
    status = probe(p, "wav2vec2 config", ModelError)
    file = p / "config.json" if status is not None and stat.S_ISDIR(status.st_mode) else p
    if probe(file, "wav2vec2 config", ModelError) is None:
        raise ModelError(f"no wav2vec2 config.json at {shown(p)}",
                         "pass the encoder's folder (holding config.json) or the file itself")
    return file


def read_wav2vec2_config(path: str | os.PathLike) -> dict[str, Any]:
    """A wav2vec2 `config.json` (the file or the folder that holds it) as a dict."""
    file = wav2vec2_config_file(path)
    data = read_json(file, "wav2vec2 config", ModelError, MAX_CONFIG_BYTES,
                     "pass the encoder's own config.json")
    if not isinstance(data, dict) or "hidden_size" not in data:
        raise ModelError(f"{file} is not a wav2vec2 config (no hidden_size)")
    return data


def wav2vec2_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The architecture fields of a transformers wav2vec2 config, all explicit, so that the saved
    model does not depend on a library version's defaults."""
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config(**{k: v for k, v in raw.items() if k not in _HF_BOOKKEEPING})
    defaults = Wav2Vec2Config()
    fields = {k: v for k, v in config.to_dict().items() if k in defaults.to_dict()}
    return {k: v for k, v in fields.items() if k not in _HF_BOOKKEEPING}


_HF_BOOKKEEPING = frozenset({
    "architectures", "transformers_version", "id2label", "label2id", "_name_or_path",
    "model_type", "torch_dtype", "dtype", "return_dict", "output_attentions",
    "output_hidden_states", "problem_type", "finetuning_task", "pooling_mode", "num_labels",
    "_attn_implementation_autoset", "tokenizer_class", "prefix", "task_specific_params",
    "chunk_size_feed_forward", "is_encoder_decoder", "use_return_dict",
})  # fmt: skip


def emotion_labels(raw: dict[str, Any]) -> tuple[str, ...]:
    """Classifier labels from a config's id2label, else the released model's seven."""
    id2label = raw.get("id2label")
    n = int(raw.get("num_labels", len(id2label) if id2label else len(RELEASED_EMOTION_LABELS)))
    if id2label and len(id2label) == n:
        return tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))
    if n == len(RELEASED_EMOTION_LABELS):
        return RELEASED_EMOTION_LABELS
    return tuple(f"label_{i}" for i in range(n))


def convert_official_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename released keys to ours. Unknown prefixes are kept as they are so that strict loading
    reports them as unexpected."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(UNUSED_OFFICIAL_SUFFIXES):
            continue
        new = key
        for old, ours in OFFICIAL_PREFIXES:
            if key.startswith(old):
                new = ours + key[len(old):]
                break
        for old, ours in WEIGHT_NORM_RENAMES:
            if new.endswith("." + old):
                new = new[: -len(old)] + ours
        out[new] = value
    return out


def load_official_state(path: str | os.PathLike, expected: Layout | None = None
                        ) -> dict[str, torch.Tensor]:
    """Read EmoTalk.pth without unpickling code (torch.load weights_only=True). With the
    `expected` layout of the network, a checkpoint whose data would take more memory than
    that network's weights can is refused before anything is read."""
    p = Path(path).expanduser()
    require_file(p, "checkpoint", ModelError, "pass the path of EmoTalk.pth")
    if expected is not None:
        check_official_size(p, expected)
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise ModelError(f"cannot read {p} as a PyTorch checkpoint: {exc}".split("\n")[0],
                         "the file is corrupt or not EmoTalk.pth") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{p} is not a state dict of tensors", "pass the released EmoTalk.pth")
    return state


def check_official_size(path: Path, expected: Layout) -> None:
    """A checkpoint in PyTorch's zip format holds one entry per tensor storage, and zip entries
    may be compressed: a small file can expand to gigabytes in torch.load. The uncompressed
    sizes in the zip's directory are compared with the network's weights (in float64 at most,
    plus the unused heads) first. The legacy format is not compressed: its size is its cost."""
    sizes = [math.prod(shape) * 4 for _, shape in expected.values()]
    total_limit = OFFICIAL_SIZE_FACTOR * sum(sizes) + OFFICIAL_SIZE_SLACK
    entry_limit = OFFICIAL_SIZE_FACTOR * max(sizes, default=0) + OFFICIAL_SIZE_SLACK
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            entries = [(i.filename, i.file_size) for i in archive.infolist()]
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelError(f"cannot read {path} as a PyTorch checkpoint: {_first_line(exc)}",
                         "the file is corrupt or not EmoTalk.pth") from exc
    largest = max(entries, key=lambda e: e[1], default=("", 0))
    total = sum(size for _, size in entries)
    if total > total_limit or largest[1] > entry_limit:
        raise ModelError(
            f"{path} unpacks to {total / 2**20:.0f} MB (largest entry {largest[0]}: "
            f"{largest[1] / 2**20:.0f} MB), more than the weights of this network can take "
            f"({total_limit / 2**20:.0f} MB, one tensor at most "
            f"{entry_limit / 2**20:.0f} MB)",
            "the checkpoint is damaged or not EmoTalk.pth for these encoder configs")


def official_model_config(content_raw: dict[str, Any], emotion_raw: dict[str, Any],
                          name: str = "emotalk-official") -> ModelConfig:
    return ModelConfig(
        content_encoder=Wav2Vec2EncoderConfig(wav2vec2=wav2vec2_fields(content_raw)),
        emotion_encoder=Wav2Vec2EncoderConfig(wav2vec2=wav2vec2_fields(emotion_raw)),
        emotion_labels=emotion_labels(emotion_raw),
        name=name,
    )


def import_official(
    checkpoint: str | os.PathLike,
    content_encoder: str | os.PathLike,
    emotion_encoder: str | os.PathLike,
    out: str | os.PathLike | None = None,
) -> EmoTalk:
    """Convert the released EmoTalk.pth into our network (and a model folder when `out` is
    given). The encoders' config.json files give the architecture; the weights all come from the
    checkpoint."""
    config = official_model_config(read_wav2vec2_config(content_encoder),
                                   read_wav2vec2_config(emotion_encoder))
    expected = network_layout(config)
    if out is not None:
        inputs = (checkpoint, wav2vec2_config_file(content_encoder),
                  wav2vec2_config_file(emotion_encoder))
        check_model_output(Path(out), inputs, Path(checkpoint).expanduser().stat().st_size)
    state = convert_official_state(load_official_state(checkpoint, expected))
    check_layout(expected, _layout_of(state), str(checkpoint))
    net = build_model(config)
    load_state_strict(net, state, str(checkpoint))
    net.eval()
    if out is not None:
        save_model(out, net, metadata={"source": "EmoTalk.pth (released weights, non-commercial)"})
    return net


def check_model_output(out: Path, inputs: tuple[str | os.PathLike, ...], size: int) -> None:
    """Before a long import: the model folder `out` can be written (about `size` bytes) and
    none of its files is one of the `inputs`."""
    status = probe(out, "output folder", OutputError)
    if status is not None and not stat.S_ISDIR(status.st_mode):
        raise OutputError(f"--out {shown(out)} is a file; give a folder")
    for name in (CONFIG_FILE, WEIGHTS_FILE, PRESETS_FILE):
        refuse_inputs(out / name, inputs, "choose another --out folder")
    check_writable(out / WEIGHTS_FILE if status is not None else out, size)
