"""wav2vec2 content and emotion encoders built with `transformers` from a config (never a hub).

EmoTalk runs wav2vec2's transformer at the animation frame rate: the 50 Hz convolutional features
are linearly interpolated (aligned corners) to the target frame count *before* the feature
projection. The content encoder interpolates straight to T frames; the emotion encoder to
int(T50 / 50 * 30) frames, and its hidden states are interpolated again to T.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from ..config import FPS, Wav2Vec2EncoderConfig
from .common import interpolate_frames, masked_mean, pad_stack
from .masks import frame_mask

# Output frames of the convolutional front end computed at once on long audio (20 s).
_CONV_BLOCK_FRAMES = 1000


def build_wav2vec2(cfg: Wav2Vec2EncoderConfig) -> Wav2Vec2Model:
    config = Wav2Vec2Config(**cfg.wav2vec2)
    # Memory-efficient attention; attention maps are never requested.
    config._attn_implementation = "sdpa"
    return Wav2Vec2Model(config)


class Wav2Vec2Backbone(nn.Module):
    """wav2vec2 with its transformer run at a chosen frame count per clip."""

    def __init__(self, cfg: Wav2Vec2EncoderConfig):
        super().__init__()
        self.wav2vec2 = build_wav2vec2(cfg)
        config = self.wav2vec2.config
        self.output_dim = config.hidden_size
        self._local_conv = config.feat_extract_norm == "layer"
        self._stride = 1
        self._receptive = 1
        for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
            self._receptive += (kernel - 1) * self._stride
            self._stride *= stride

    def layer_list(self) -> list[nn.Module]:
        return list(self.wav2vec2.encoder.layers)

    def conv_frames(self, num_samples: int) -> int:
        """Number of 50 Hz convolutional frames for a clip of `num_samples`."""
        if num_samples < self._receptive:
            return 0
        return (num_samples - self._receptive) // self._stride + 1

    def conv_features(self, audio: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Per clip (T50_i, C) convolutional features. audio (B, S) normalised.

        With per-frame layer norm the front end is local (frame n sees samples
        [stride * n, stride * n + receptive)), so long audio is processed in blocks of frames with
        exactly the same result and bounded memory. Group norm spans the whole clip, so such
        front ends run per clip in one piece.
        """
        extractor = self.wav2vec2.feature_extractor
        if audio.shape[1] < self._receptive:  # clips shorter than one window: pad with silence
            audio = torch.nn.functional.pad(audio, (0, self._receptive - audio.shape[1]))
        lengths = lengths.clamp(min=self._receptive)
        counts = [self.conv_frames(int(n)) for n in lengths]
        if not self._local_conv:
            return [
                extractor(audio[i : i + 1, : int(n)])[0].transpose(0, 1)
                for i, n in enumerate(lengths)
            ]
        total = max(counts)
        blocks = []
        for first in range(0, total, _CONV_BLOCK_FRAMES):
            last = min(total, first + _CONV_BLOCK_FRAMES)
            start = first * self._stride
            stop = (last - 1) * self._stride + self._receptive
            blocks.append(extractor(audio[:, start:stop]))  # (B, C, last - first)
        feats = torch.cat(blocks, dim=2).transpose(1, 2)  # (B, T50, C)
        return [feats[i, :c] for i, c in enumerate(counts)]

    def run_transformer(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Feature projection, SpecAugment (training only) and the transformer.
        features (B, T, C) conv features at the target rate -> (B, T, H), padding zeroed."""
        model = self.wav2vec2
        padded = bool((lengths < features.shape[1]).any())
        mask = frame_mask(lengths, features.shape[1]) if padded else None
        hidden, _ = model.feature_projection(features)
        hidden = model._mask_hidden_states(hidden, attention_mask=mask)
        hidden = model.encoder(hidden, attention_mask=mask).last_hidden_state
        if mask is not None:
            hidden = hidden * mask[..., None].to(hidden.dtype)
        return hidden


class Wav2Vec2ContentEncoder(Wav2Vec2Backbone):
    def forward(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor
    ) -> torch.Tensor:
        """audio (B, S) normalised, lengths (B,) -> (B, T, H) at the target frame counts."""
        feats = self.conv_features(audio, sample_lengths)
        pairs = zip(feats, frame_lengths, strict=True)
        feats = [interpolate_frames(f[None], int(t))[0] for f, t in pairs]
        return self.run_transformer(pad_stack(feats), frame_lengths)


class EmotionClassifierHead(nn.Module):
    """Mean over time, dropout, dense, tanh, dropout, projection to the emotion labels."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, H) -> logits (B, labels)."""
        x = self.dropout(masked_mean(hidden, lengths))
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class Wav2Vec2EmotionEncoder(Wav2Vec2Backbone):
    def __init__(self, cfg: Wav2Vec2EncoderConfig, num_labels: int):
        super().__init__(cfg)
        dropout = float(cfg.wav2vec2.get("final_dropout", 0.1))
        self.classifier = EmotionClassifierHead(self.output_dim, num_labels, dropout)

    def native_frames(self, conv_frames: int) -> int:
        # Computed in floating point exactly so; an integer formula drifts by one frame.
        return int(conv_frames / 50.0 * FPS)

    def forward(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, S) normalised -> hidden (B, T, H) at the target frame counts, logits (B, L)."""
        feats = self.conv_features(audio, sample_lengths)
        native = [max(1, self.native_frames(f.shape[0])) for f in feats]
        feats = [interpolate_frames(f[None], n)[0] for f, n in zip(feats, native, strict=True)]
        native_lengths = torch.tensor(native, device=audio.device)
        hidden = self.run_transformer(pad_stack(feats), native_lengths)
        resampled = [
            interpolate_frames(hidden[i : i + 1, :n], int(t))[0]
            for i, (n, t) in enumerate(zip(native, frame_lengths, strict=True))
        ]
        hidden = pad_stack(resampled)
        return hidden, self.classifier(hidden, frame_lengths)
