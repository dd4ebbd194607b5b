"""Shared fixtures: tiny random model configurations (never a hub download) and test audio.

Importable without torch: the add-on's bpy tests also run in the newest bpy's Python, which has
no torch here; there the tiny model is made by the backend's interpreter (tests/backend_python.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from emotalk_core.config import CompactEncoderConfig, ModelConfig, Wav2Vec2EncoderConfig
from tests.backend_python import HAVE_TORCH, tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if HAVE_TORCH:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "emotalk_reference"


def tiny_wav2vec2_fields(hidden: int = 64) -> dict:
    return {
        "hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "conv_dim": [32] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": True, "feat_extract_norm": "layer",
        "do_stable_layer_norm": True, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4, "mask_time_prob": 0.05, "vocab_size": 32,
    }  # fmt: skip


def tiny_compact(feature_norm: str = "frame") -> CompactEncoderConfig:
    return CompactEncoderConfig(n_mels=40, conv_channels=32, hidden_size=32, num_layers=2,
                                num_heads=2, ffn_size=64, feature_norm=feature_norm)


@pytest.fixture
def tiny_wav2vec2_config() -> ModelConfig:
    enc = Wav2Vec2EncoderConfig(wav2vec2=tiny_wav2vec2_fields())
    return ModelConfig(content_encoder=enc, emotion_encoder=enc, name="tiny-wav2vec2")


@pytest.fixture
def tiny_compact_config() -> ModelConfig:
    return ModelConfig(content_encoder=tiny_compact(), emotion_encoder=tiny_compact(),
                       emotion_labels=("neutral", "happy", "sad"), name="tiny-compact")


@pytest.fixture
def tiny_compact_utterance_config() -> ModelConfig:
    """The default model's feature normalisation (per-utterance statistics)."""
    enc = tiny_compact("utterance")
    return ModelConfig(content_encoder=enc, emotion_encoder=enc,
                       emotion_labels=("neutral", "happy", "sad"), name="tiny-compact-utt")


@pytest.fixture
def tiny_compact_level_config() -> ModelConfig:
    """Per-frame spectra with the clip-standardised frame level as one more channel."""
    enc = tiny_compact("frame+level")
    return ModelConfig(content_encoder=enc, emotion_encoder=tiny_compact(),
                       emotion_labels=("neutral", "happy", "sad"), name="tiny-compact-level")


def speechlike(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """Deterministic amplitude-modulated harmonic noise: speech-like enough for shape tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    return (0.1 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny compact model with a random (non-zero) head and two emotion presets."""
    return tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def save_tiny_model(out: Path) -> Path:
    """tiny_model_dir's model saved to `out` (also run by the backend's interpreter)."""
    import torch
    from torch import nn

    from emotalk_core.checkpoint import save_model
    from emotalk_core.model import EmoTalk

    torch.manual_seed(0)
    cfg = ModelConfig(content_encoder=tiny_compact(), emotion_encoder=tiny_compact(),
                      emotion_labels=("neutral", "happy", "sad"), name="tiny-compact")
    net = EmoTalk(cfg)
    nn.init.normal_(net.head.weight, std=0.03)
    nn.init.constant_(net.head.bias, 0.4)
    presets = {"neutral": torch.randn(32), "happy": 3 * torch.randn(32)}
    return save_model(out, net, presets)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    import soundfile as sf

    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, speechlike(2.0, seed=3), 16000)
    return path
