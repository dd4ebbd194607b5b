"""Model folders and the import of released-format checkpoints: strict, and never unpickling."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from emotalk_core import checkpoint as ckpt
from emotalk_core.config import ModelConfig
from emotalk_core.errors import ModelError
from emotalk_core.model import EmoTalk, level_weights, one_hot_weights

from .conftest import speechlike, tiny_compact, tiny_wav2vec2_fields


def _net(cfg: ModelConfig, seed: int = 0) -> EmoTalk:
    torch.manual_seed(seed)
    net = EmoTalk(cfg)
    nn.init.normal_(net.head.weight, std=0.5)
    return net.eval()


def _run(net: EmoTalk) -> torch.Tensor:
    audio = torch.from_numpy(speechlike(1.0))[None]
    with torch.no_grad():
        out, _ = net(audio, torch.tensor([16000]), level_weights(torch.tensor([1.0])),
                     one_hot_weights(torch.tensor([3]), 24))
    return out


def test_save_and_load_round_trip_with_presets(tmp_path, tiny_compact_config):
    net = _net(tiny_compact_config)
    presets = {"happy": torch.randn(32), "sad": torch.randn(32)}
    ckpt.save_model(tmp_path / "m", net, presets, {"steps": 10})
    loaded = ckpt.load_model(tmp_path / "m")
    assert loaded.config == tiny_compact_config
    assert list(loaded.presets) == ["happy", "sad"]
    torch.testing.assert_close(loaded.presets["sad"], presets["sad"])
    assert loaded.metadata == {"steps": 10}
    torch.testing.assert_close(_run(loaded.model), _run(net))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors", "presets.safetensors"]


def test_saved_files_get_the_usual_permissions(tmp_path, tiny_compact_config):
    umask = os.umask(0o022)
    try:
        presets = {"happy": torch.randn(32)}
        folder = ckpt.save_model(tmp_path / "m", _net(tiny_compact_config), presets)
    finally:
        os.umask(umask)
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name  # not a temp file's 0600
    (folder / ckpt.CONFIG_FILE).chmod(0o640)
    ckpt.save_model(folder, _net(tiny_compact_config))
    # A replaced file keeps its mode.
    assert (folder / ckpt.CONFIG_FILE).stat().st_mode & 0o777 == 0o640


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path,
                                                                    tiny_compact_config):
    net = _net(tiny_compact_config)
    full = ckpt.save_model(tmp_path / "full", net)
    half = ckpt.save_model(tmp_path / "half", net, storage_dtype=torch.float16)
    size = {f: (f / ckpt.WEIGHTS_FILE).stat().st_size for f in (full, half)}
    assert size[half] < 0.55 * size[full]
    loaded = ckpt.load_model(half).model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    reference, out = _run(net), _run(loaded)
    assert not torch.equal(out, reference)  # the weights really were rounded
    torch.testing.assert_close(out, reference, atol=2e-3 * float(reference.abs().max()), rtol=0)


def test_missing_and_wrong_paths(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ckpt.load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        ckpt.load_model(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        ckpt.load_model(tmp_path / "file")


def test_corrupt_weights_and_config(tmp_path, tiny_compact_config):
    folder = ckpt.save_model(tmp_path / "m", _net(tiny_compact_config))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="model.safetensors is corrupt"):
        ckpt.load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json is corrupt"):
        ckpt.load_model(folder)
    (folder / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="not an EmoTalk model config"):
        ckpt.load_model(folder)
    (folder / "config.json").write_text(json.dumps({"format": "emotalk-model",
                                                    "format_version": 99}))
    with pytest.raises(ModelError, match="version 99 is not supported"):
        ckpt.load_model(folder)


def test_weights_from_another_model_list_every_mismatch(tmp_path, tiny_compact_config):
    folder = ckpt.save_model(tmp_path / "m", _net(tiny_compact_config))
    other = ModelConfig(content_encoder=tiny_compact(), emotion_encoder=tiny_compact(),
                        emotion_labels=("a", "b", "c", "d"))
    header = json.loads((folder / "config.json").read_text())
    header["config"] = other.to_dict()
    (folder / "config.json").write_text(json.dumps(header))
    with pytest.raises(ModelError) as info:
        ckpt.load_model(folder)
    message = str(info.value)
    assert "wrong shape" in message and "emotion_encoder.classifier.out_proj.weight" in message


def _to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names back to the released checkpoint's naming (the inverse of the import)."""
    out = {}
    for key, value in state.items():
        new = key
        for official, ours in ckpt.OFFICIAL_PREFIXES:
            if key.startswith(ours):
                new = official + key[len(ours):]
                break
        for old, ours in ckpt.WEIGHT_NORM_RENAMES:
            if new.endswith(ours):
                new = new[: -len(ours)] + old
        out[new] = value.clone()
    out["audio_encoder_cont.lm_head.weight"] = torch.zeros(32, 64)
    out["audio_encoder_cont.lm_head.bias"] = torch.zeros(32)
    return out


@pytest.fixture
def official(tmp_path, tiny_wav2vec2_config):
    net = _net(tiny_wav2vec2_config)
    state = _to_official(net.state_dict())
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in state)
    fields = tiny_wav2vec2_fields()
    (tmp_path / "content.json").write_text(json.dumps(fields))
    (tmp_path / "emotion.json").write_text(json.dumps(dict(fields, num_labels=7)))
    return net, state, tmp_path


def test_import_official_reproduces_the_network(official):
    net, state, tmp = official
    torch.save(state, tmp / "EmoTalk.pth")
    imported = ckpt.import_official(tmp / "EmoTalk.pth", tmp / "content.json",
                                    tmp / "emotion.json", tmp / "model")
    torch.testing.assert_close(_run(imported), _run(net))
    torch.testing.assert_close(_run(ckpt.load_model(tmp / "model").model), _run(net))


def test_import_official_lists_missing_unexpected_and_wrong_shapes(official):
    _, state, tmp = official
    del state["bs_map_r.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["obj_vector_person.weight"] = torch.zeros(32, 25)
    torch.save(state, tmp / "EmoTalk.pth")
    with pytest.raises(ModelError) as info:
        ckpt.import_official(tmp / "EmoTalk.pth", tmp / "content.json", tmp / "emotion.json")
    message = str(info.value)
    assert "1 missing: head.bias" in message
    assert "1 unexpected: extra.weight" in message
    assert "person_embed.weight (32, 25) != (32, 24)" in message


def test_import_official_never_unpickles_code(official):
    _, _, tmp = official
    torch.save({"weights": torch.zeros(1), "evil": EvilPayload()}, tmp / "EmoTalk.pth")
    with pytest.raises(ModelError, match="cannot read"):
        ckpt.import_official(tmp / "EmoTalk.pth", tmp / "content.json", tmp / "emotion.json")
    (tmp / "garbage.pth").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        ckpt.import_official(tmp / "garbage.pth", tmp / "content.json", tmp / "emotion.json")
    with pytest.raises(ModelError, match="no wav2vec2 config.json"):
        ckpt.import_official(tmp / "garbage.pth", tmp / "nowhere", tmp / "emotion.json")


class EvilPayload:
    def __reduce__(self):
        return (print, ("this must never run",))
