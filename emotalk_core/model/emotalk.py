"""The EmoTalk network: tensors in, tensors out.

Two encoders disentangle what is said (content) from how it is said (emotion). Their features are
fused per frame into an 832-d query (content 512 + emotion 256 + intensity 32 + person 32) for an
emotion-guided decoder whose memory is the 832-d emotion feature; a zero-initialised linear head
gives 52 ARKit blendshape coefficients per frame at 30 fps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FPS, SAMPLE_RATE, CompactEncoderConfig, EncoderConfig, ModelConfig
from ..phonetics.track import TRACK_CLASSES
from .common import normalize_audio
from .compact import CompactContentEncoder, CompactEmotionEncoder
from .decoder import EmotionGuidedDecoder
from .wav2vec2 import Wav2Vec2ContentEncoder, Wav2Vec2EmotionEncoder


def frame_counts(sample_lengths: torch.Tensor) -> torch.Tensor:
    """Output frames per clip: ceil(samples / 16000 * 30), in floating point as the release."""
    return torch.tensor(
        [max(1, math.ceil(int(n) / SAMPLE_RATE * FPS)) for n in sample_lengths],
        device=sample_lengths.device,
    )


def _content_encoder(cfg: EncoderConfig, phone_input: bool) -> nn.Module:
    if isinstance(cfg, CompactEncoderConfig):
        return CompactContentEncoder(cfg, TRACK_CLASSES if phone_input else 0)
    return Wav2Vec2ContentEncoder(cfg)


def _emotion_encoder(cfg: EncoderConfig, num_labels: int) -> nn.Module:
    if isinstance(cfg, CompactEncoderConfig):
        return CompactEmotionEncoder(cfg, num_labels)
    return Wav2Vec2EmotionEncoder(cfg, num_labels)


class TrainingOutputs(NamedTuple):
    cross: torch.Tensor  # (B, T_cross, 52): content of A with emotion of B
    self_: torch.Tensor  # (B, T_self, 52): content and emotion of A
    emotion_logits: torch.Tensor  # (B, labels): classifier on B
    phone_logits: torch.Tensor | None = None  # (B, T_self, phones): phone head on A's content
    contact_logits: torch.Tensor | None = None  # (B, T_self): lip contact of the self path


class EmoTalk(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        d = c.decoder.feature_dim
        self.content_encoder = _content_encoder(c.content_encoder, c.phone_input)
        self.emotion_encoder = _emotion_encoder(c.emotion_encoder, len(c.emotion_labels))
        self.content_proj = nn.Linear(c.content_encoder.output_dim, c.content_dim)
        self.emotion_proj = nn.Linear(c.emotion_encoder.output_dim, d)
        self.emotion_query = nn.Linear(d, c.emotion_query_dim)
        self.level_embed = nn.Linear(c.num_levels, c.level_dim)
        self.person_embed = nn.Linear(c.num_persons, c.person_dim)
        self.decoder = EmotionGuidedDecoder(c.decoder)
        self.head = nn.Linear(d, c.num_channels)
        # Zero-initialised head: training starts from the neutral face.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.phone_head = (nn.Linear(c.content_encoder.output_dim, len(c.phone_labels))
                           if c.phone_labels else None)
        self.contact_head = nn.Linear(d, 1) if c.contact_head else None

    # -- encoders -------------------------------------------------------------------------------
    def encode_content(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor,
        phones: torch.Tensor | None = None, phone_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """audio (B, S) raw 16 kHz -> content features (B, T, Dc). `phones` (B, T_p): the phone
        track (class indices, -1 none) of models with a phone input; ignored by others."""
        normalised = normalize_audio(audio, sample_lengths)
        if self.config.phone_input:
            return self.content_encoder(normalised, sample_lengths, frame_lengths, phones,
                                        phone_lengths)
        return self.content_encoder(normalised, sample_lengths, frame_lengths)

    def encode_emotion(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, S) raw 16 kHz -> emotion features (B, T, De), logits (B, labels)."""
        return self.emotion_encoder(normalize_audio(audio, sample_lengths), sample_lengths,
                                    frame_lengths)

    # -- decoder --------------------------------------------------------------------------------
    def decode(
        self,
        content: torch.Tensor,
        emotion: torch.Tensor,
        level: torch.Tensor,
        person: torch.Tensor,
    ) -> torch.Tensor:
        """content (B, T, Dc), emotion (B, T, De), level (B, 2) and person (B, 24) weights
        (one-hot, or convex mixes) -> blendshape coefficients (B, T, 52)."""
        return self.head(self.decode_features(content, emotion, level, person))

    def contact(self, features: torch.Tensor) -> torch.Tensor | None:
        """Decoder features (B, T, D) -> lip-contact logits (B, T); None without the head."""
        return None if self.contact_head is None else self.contact_head(features)[..., 0]

    def decode_features(
        self,
        content: torch.Tensor,
        emotion: torch.Tensor,
        level: torch.Tensor,
        person: torch.Tensor,
    ) -> torch.Tensor:
        """The decoder's output features (B, T, D), before the blendshape head."""
        t = content.shape[1]
        emo_memory = self.emotion_proj(emotion)  # (B, T, 832)
        query = torch.cat(
            [
                self.content_proj(content),  # (B, T, 512)
                F.relu(self.emotion_query(emo_memory)),  # (B, T, 256)
                self.level_embed(level)[:, None].expand(-1, t, -1),  # (B, T, 32)
                self.person_embed(person)[:, None].expand(-1, t, -1),  # (B, T, 32)
            ],
            dim=-1,
        )
        return self.decoder(query, emo_memory)

    def progress_modules(self) -> list[nn.Module]:
        """The layers whose start marks progress through a pass (for progress and cancel)."""
        return [*self.content_encoder.layer_list(), *self.emotion_encoder.layer_list(),
                *self.decoder.layers]

    # -- whole passes ---------------------------------------------------------------------------
    def forward(
        self,
        audio: torch.Tensor,
        sample_lengths: torch.Tensor,
        level: torch.Tensor,
        person: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference as the paper: emotion from the same clip.
        audio (B, S) -> coefficients (B, T, 52) (zero past each clip's frames), logits (B, L)."""
        frames = frame_counts(sample_lengths)
        content = self.encode_content(audio, sample_lengths, frames)
        emotion, logits = self.encode_emotion(audio, sample_lengths, frames)
        out = self.decode(content, emotion, level, person)
        return _zero_padding(out, frames), logits

    def training_forward(
        self,
        audio_a: torch.Tensor,
        lengths_a: torch.Tensor,
        audio_b: torch.Tensor,
        lengths_b: torch.Tensor,
        cross_frames: torch.Tensor,
        self_frames: torch.Tensor,
        level: torch.Tensor,
        person: torch.Tensor,
        phones_a: torch.Tensor | None = None,
        phone_lengths_a: torch.Tensor | None = None,
    ) -> TrainingOutputs:
        """The cross-reconstruction forward that disentangles emotion from content.

        Clip A has content c1 / emotion e2, clip B content c2 / emotion e1. Content of A with
        emotion of B (at `cross_frames`, the target c1-e1 length) must give c1-e1; content and
        emotion of A (at `self_frames`) must give A; B's logits train the classifier. With a
        phone head, A's content features (at `self_frames`) also classify A's phones. With a
        phone input, `phones_a` (B, T_p) is A's phone track; with a contact head, the self
        path's lip-contact logits come out too.
        """
        content_cross = self.encode_content(audio_a, lengths_a, cross_frames, phones_a,
                                            phone_lengths_a)
        emotion_b, logits_b = self.encode_emotion(audio_b, lengths_b, cross_frames)
        if torch.equal(cross_frames, self_frames):
            content_self = content_cross
        else:
            content_self = self.encode_content(audio_a, lengths_a, self_frames, phones_a,
                                               phone_lengths_a)
        emotion_a, _ = self.encode_emotion(audio_a, lengths_a, self_frames)
        cross = self.decode(content_cross, emotion_b, level, person)
        features_self = self.decode_features(content_self, emotion_a, level, person)
        self_ = self.head(features_self)
        phones = None if self.phone_head is None else self.phone_head(content_self)
        return TrainingOutputs(
            _zero_padding(cross, cross_frames), _zero_padding(self_, self_frames), logits_b,
            phones, self.contact(features_self),
        )


def _zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x * mask[..., None].to(x.dtype)


def one_hot_weights(index: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) int -> (B, size) float one-hot."""
    return F.one_hot(index.long(), size).float()


def level_weights(level: torch.Tensor) -> torch.Tensor:
    """(B,) intensity in [0, 1] -> (B, 2) weights (1 - level, level)."""
    level = level.float()
    return torch.stack([1 - level, level], dim=-1)
