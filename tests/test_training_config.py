"""Training configs: the shipped files load, typos are errors naming key and file, overrides,
and pretrained wav2vec2 folders load into the encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotalk_core.config import PRESET_NAMES, CompactEncoderConfig, Wav2Vec2EncoderConfig
from emotalk_core.model import EmoTalk
from training.config import ConfigError, build_model_config, load_config
from training.train import build_network

from .conftest import tiny_wav2vec2_fields

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.mark.parametrize("name", ["tiny", "compact", "emotalk_full"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    model = build_model_config(cfg.model, read_pretrained=False)
    assert model.emotion_labels == PRESET_NAMES
    kind = Wav2Vec2EncoderConfig if name == "emotalk_full" else CompactEncoderConfig
    assert isinstance(model.content_encoder, kind)
    if name != "emotalk_full":
        EmoTalk(model)  # the sizes fit together


def test_compact_recipe_is_the_default_models_network():
    from emotalk_core.config import compact_model_config

    first = load_config(CONFIGS / "compact.toml")
    assert (build_model_config(first.model, read_pretrained=False)
            == compact_model_config(phonetic=False))
    second = load_config(CONFIGS / "compact_phonetic.toml")
    assert build_model_config(second.model, read_pretrained=False) == compact_model_config()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "words"), [
    ("sed = 1", ["'sed'", "top level"]),
    ("[optim]\nwarmup_step = 5", ["'optim.warmup_step'", "warmup_steps"]),
    ("[model.content_encoder]\nhiden_size = 5", ["'model.content_encoder.hiden_size'"]),
    ("[model]\nencoder = \"wav2vec2\"\n[model.emotion_encoder]\nhidden_sise = 8",
     ["'model.emotion_encoder.hidden_sise'"]),
    ("[model.decoder]\nhead = 4", ["'model.decoder.head'"]),
    ("[trian]\nsteps = 3", ["'trian'"]),
])
def test_typos_are_errors_naming_key_and_file(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


@pytest.mark.parametrize(("text", "words"), [
    ("[train]\nsteps = \"many\"", ["train.steps must be an integer"]),
    ("[data]\ncache_audio = 1", ["data.cache_audio must be true or false"]),
    ("[augment]\nsnr_db = [1.0]", ["augment.snr_db must have 2 values"]),
    ("[train]\nprecision = \"fp8\"", ["train.precision must be one of"]),
    ("[data]\nbatch_size = 0", ["data.batch_size must be positive"]),
    ("[model]\ncontent_dim = 100", ["must equal decoder.feature_dim"]),
    ("[model]\npretrained_content = \"x\"", ["need encoder = \"wav2vec2\""]),
    ("[augment]\nsnr_db = [30.0, 10.0]", ["low <= high"]),
    ("[train\n", ["not valid TOML"]),
    ("[data]\noversample = { \"asterisk-\" = 0 }", ["data.oversample counts must be integers"]),
    ("[data]\noversample = 3", ["data.oversample must be a table"]),
    ("[augment]\nspeed_factor = [0.2, 1.0]", ["augment.speed_factor must be"]),
    ("[augment]\nlowpass_hz = [3000.0, 9000.0]", ["augment.lowpass_hz must be"]),
    ("[augment]\nspeed_probability = 2.0", ["augment.speed_probability must be within"]),
    ("[model.content_encoder]\nfeature_norm = \"batch\"", ["feature_norm must be one of"]),
    ("[loss]\nphone = 0.1", ["loss.phone needs a phone head", "model.phone_head = true"]),
    ("[loss]\nphone = -1.0", ["loss.phone must not be negative"]),
])
def test_bad_values_are_errors(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such.toml")


def test_overrides():
    cfg = load_config(CONFIGS / "tiny.toml", ["train.steps=7", "optim.betas=[0.8, 0.9]",
                                              "model.name=renamed", "data.cache_audio=false"])
    assert cfg.train.steps == 7 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.model.name == "renamed" and cfg.data.cache_audio is False
    with pytest.raises(ConfigError, match="'train.stepz'"):
        load_config(CONFIGS / "tiny.toml", ["train.stepz=7"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(CONFIGS / "tiny.toml", ["train.steps"])


def test_config_round_trips_to_a_comparable_dict():
    cfg = load_config(CONFIGS / "compact.toml")
    data = cfg.to_dict()
    assert data["optim"]["betas"] == [0.9, 0.98] and "source" not in data


# -- pretrained wav2vec2 --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pretrained")
    ctc = Wav2Vec2ForCTC(Wav2Vec2Config(**tiny_wav2vec2_fields()))
    ctc.save_pretrained(root / "content")
    Wav2Vec2Model(Wav2Vec2Config(**tiny_wav2vec2_fields())).save_pretrained(root / "emotion")
    return root / "content", root / "emotion"


def _wav2vec2_config(tmp_path: Path, content: Path, emotion: Path, extra: str = "") -> Path:
    return _write(tmp_path, f"""
[model]
encoder = "wav2vec2"
pretrained_content = "{content}"
pretrained_emotion = "{emotion}"
content_dim = 32
emotion_query_dim = 16
level_dim = 8
person_dim = 8
[model.decoder]
feature_dim = 64
ffn_size = 64
[model.content_encoder]
layerdrop = 0.0
{extra}
""")


def test_pretrained_encoders_load_and_front_ends_freeze(tmp_path, pretrained):
    from safetensors.torch import load_file

    content, emotion = pretrained
    cfg = load_config(_wav2vec2_config(tmp_path, content, emotion))
    notes: list[str] = []
    net = build_network(cfg.model, cfg.source, notes.append)
    saved = load_file(str(content / "model.safetensors"))
    ours = net.content_encoder.state_dict()
    key = "wav2vec2.encoder.layers.0.attention.q_proj.weight"
    assert torch.equal(ours[key], saved[key])
    emo = load_file(str(emotion / "model.safetensors"))
    assert torch.equal(net.emotion_encoder.state_dict()[key],
                       emo["encoder.layers.0.attention.q_proj.weight"])
    assert "re-initialised: classifier" in notes[1]
    assert net.content_encoder.wav2vec2.config.layerdrop == 0.0  # the table's override
    for enc in (net.content_encoder, net.emotion_encoder):
        assert not any(p.requires_grad for p in enc.wav2vec2.feature_extractor.parameters())
        assert all(p.requires_grad for p in enc.wav2vec2.encoder.parameters())


def test_pretrained_folder_problems(tmp_path, pretrained):
    content, _ = pretrained
    cfg = load_config(_wav2vec2_config(tmp_path, content, tmp_path / "missing"))
    with pytest.raises(ConfigError, match="pretrained_emotion.*is not a folder"):
        build_network(cfg.model, cfg.source, print)
    cfg = load_config(_wav2vec2_config(tmp_path, content, content,
                                       "[model.emotion_encoder]\nnum_hidden_layers = 3"))
    with pytest.raises(ConfigError, match="does not fit the encoder"):
        build_network(cfg.model, cfg.source, print)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((content / "config.json").read_text())
    cfg = load_config(_wav2vec2_config(tmp_path, content, empty))
    with pytest.raises(ConfigError, match="no model.safetensors or pytorch_model.bin"):
        build_network(cfg.model, cfg.source, print)


def test_a_config_extends_another_table_by_table(tmp_path):
    (tmp_path / "base.toml").write_text(
        "seed = 3\n[model]\nname = \"base\"\nlevel_dim = 16\nperson_dim = 48\n"
        "[train]\nsteps = 10\n")
    (tmp_path / "second.toml").write_text(
        "extends = \"base.toml\"\n[model]\nname = \"second\"\n[train]\nsteps = 20\n")
    cfg = load_config(tmp_path / "second.toml")
    assert (cfg.seed, cfg.model.name, cfg.model.level_dim, cfg.train.steps) == (
        3, "second", 16, 20)
    (tmp_path / "loop.toml").write_text("extends = \"loop.toml\"\n")
    with pytest.raises(ConfigError, match="circle"):
        load_config(tmp_path / "loop.toml")
    (tmp_path / "orphan.toml").write_text("extends = \"missing.toml\"\n")
    with pytest.raises(ConfigError, match="missing.toml does not exist"):
        load_config(tmp_path / "orphan.toml")
