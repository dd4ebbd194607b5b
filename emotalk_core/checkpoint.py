"""Model folders (our native format) and import of the released EmoTalk checkpoint.

A model folder holds:
- `config.json`: `{"format": "emotalk-model", "format_version": 1, "config": {...ModelConfig...},
  "presets": [names], "metadata": {...}}`; it fully rebuilds the network;
- `model.safetensors`: the weights (no pickled code is ever loaded);
- `presets.safetensors` (optional): `prototypes` (P, De), the emotion-feature prototype of each
  preset named in config.json's "presets", in that order.

Loading is strict: every missing, unexpected or wrongly shaped tensor is listed in the error.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import RELEASED_EMOTION_LABELS, ModelConfig, Wav2Vec2EncoderConfig
from .errors import ModelError
from .export import final_mode
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
                "reinstall the package, or pass --model DIR with a model folder",
            )
        return path
    path = Path(model).expanduser()
    if path.is_file() and path.name == CONFIG_FILE:
        path = path.parent
    if not path.exists():
        raise ModelError(f"model folder {path} does not exist",
                         "pass --model with a folder made by training or `emotalk import-official`")
    if not path.is_dir():
        raise ModelError(f"model path {path} is a file, not a model folder",
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
    staged: list[tuple[Path, Path]] = []
    try:
        state = {k: _stored(v, storage_dtype) for k, v in model.state_dict().items()}
        weights = _staged(out, WEIGHTS_FILE, lambda p: save_file(state, p))
        staged.append((weights, out / WEIGHTS_FILE))
        if presets:
            stack = torch.stack([presets[n].detach().float().cpu() for n in presets])
            staged.append((_staged(out, PRESETS_FILE,
                                   lambda p: save_file({"prototypes": stack.contiguous()}, p)),
                           out / PRESETS_FILE))
        text = json.dumps(header, indent=2)
        staged.append((_staged(out, CONFIG_FILE, lambda p: Path(p).write_text(text)),
                       out / CONFIG_FILE))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    if not presets:
        (out / PRESETS_FILE).unlink(missing_ok=True)
    return out


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def _staged(folder: Path, name: str, write) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, final_mode(folder / name))  # mkstemp's files are private (0600)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def read_header(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{directory} is not a model folder: {CONFIG_FILE} is missing",
                         "pass a folder made by training or `emotalk import-official`")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is corrupt: {exc}", "re-create the model folder") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path} is not an EmoTalk model config (format is not {FORMAT!r})",
                         "a released EmoTalk.pth must be converted with `emotalk import-official`")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {version!r} is not supported "
                         f"(this version reads {FORMAT_VERSION})",
                         "upgrade emotalk or re-export the model")
    unknown = sorted(set(header) - {"format", "format_version", "config", "presets", "metadata"})
    if unknown:
        raise ModelError(f"{path} has unknown keys: {', '.join(unknown)}")
    return header


def load_model(model: str | os.PathLike | None = "default", device: str | torch.device = "cpu"
               ) -> LoadedModel:
    """Load a model folder strictly; the model is returned in eval mode on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_model_dir(model)
    header = read_header(directory)
    config = ModelConfig.from_dict(header.get("config"))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory} has no {WEIGHTS_FILE}", "re-create the model folder")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights} is corrupt: {exc}", "re-create the model folder") from exc
    net = build_model(config)
    load_state_strict(net, state, str(weights))
    presets = _load_presets(directory, header.get("presets") or [], config)
    net.to(device).eval()
    presets = {k: v.to(device) for k, v in presets.items()}
    return LoadedModel(net, presets, dict(header.get("metadata") or {}), directory)


def _load_presets(
    directory: Path, names: list[str], config: ModelConfig
) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not names:
        return {}
    path = directory / PRESETS_FILE
    try:
        prototypes = load_file(str(path))["prototypes"]
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{path} is missing or corrupt: {exc}",
                         "recompute presets with `emotalk presets`") from exc
    expected = (len(names), config.emotion_encoder.output_dim)
    if tuple(prototypes.shape) != expected:
        raise ModelError(f"{path}: prototypes have shape {tuple(prototypes.shape)}, "
                         f"expected {expected}")
    return {name: prototypes[i] for i, name in enumerate(names)}


def build_model(config: ModelConfig) -> EmoTalk:
    try:
        return EmoTalk(config)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build the network from its config: {exc}") from exc


def load_state_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `net`, failing with a list of every missing, unexpected and wrongly
    shaped key."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {title}: " + ", ".join(keys))
        raise ModelError(f"{source} does not fit the network. " + "; ".join(parts),
                         "the checkpoint is from another model or configuration")
    net.load_state_dict(state, strict=True)


# -- the released EmoTalk.pth ------------------------------------------------------------------
def read_wav2vec2_config(path: str | os.PathLike) -> dict[str, Any]:
    """A wav2vec2 `config.json` (the file or the folder that holds it) as a dict."""
    p = Path(path).expanduser()
    file = p / "config.json" if p.is_dir() else p
    if not file.is_file():
        raise ModelError(f"no wav2vec2 config.json at {p}",
                         "pass the encoder's folder (holding config.json) or the file itself")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file} is not a readable JSON config: {exc}") from exc
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


def load_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read EmoTalk.pth without unpickling code (torch.load weights_only=True)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"checkpoint {p} does not exist" if not p.exists()
                         else f"checkpoint {p} is not a file", "pass the path of EmoTalk.pth")
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
    state = convert_official_state(load_official_state(checkpoint))
    net = build_model(config)
    load_state_strict(net, state, str(checkpoint))
    net.eval()
    if out is not None:
        save_model(out, net, metadata={"source": "EmoTalk.pth (released weights, non-commercial)"})
    return net
