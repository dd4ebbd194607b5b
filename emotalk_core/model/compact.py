"""Compact encoders: log-mel features, a small convolution and transformer stack.

Same interface as the wav2vec2 encoders (normalised 16 kHz audio in, (B, T, H) at the target frame
counts out), so the paper's fusion and decoder stay unchanged. They train from scratch on modest
data and run far faster than real time on a CPU.

Padding equivalence: features beyond each clip's end are zeroed before every convolution, so a
clip inside a padded batch gives the same frames as the clip alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import SAMPLE_RATE, CompactEncoderConfig
from .common import interpolate_frames, pad_stack
from .masks import frame_mask
from .wav2vec2 import EmotionClassifierHead


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_max: float = 0.0
                   ) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, 0 Hz to `f_max` (0:
    Nyquist)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    top = f_max or sample_rate / 2
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(top)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


class LogMel(nn.Module):
    def __init__(self, cfg: CompactEncoderConfig):
        super().__init__()
        self.n_fft = cfg.n_fft
        self.hop = cfg.hop_length
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        fb = torch.from_numpy(mel_filterbank(cfg.n_mels, cfg.n_fft, SAMPLE_RATE, cfg.f_max))
        self.register_buffer("filters", fb, persistent=False)

    def frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.div(num_samples, self.hop, rounding_mode="floor") + 1

    def forward(self, audio: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """audio (B, S) -> log-mel (B, S // hop + 1, n_mels). Zero padding on both sides, so the
        frames of a clip do not depend on what follows its end. `warp` (B,): per-clip
        frequency warp factors (training's vocal tract length perturbation)."""
        padded = F.pad(audio, (self.n_fft // 2, self.n_fft // 2))
        spec = torch.stft(padded, self.n_fft, self.hop, window=self.window, center=False,
                          return_complex=True)  # (B, F, frames)
        power = spec.real.square() + spec.imag.square()
        if warp is not None:
            power = warp_frequencies(power, warp)
        mel = torch.matmul(self.filters, power)  # (B, n_mels, frames)
        return torch.log(mel + 1e-6).transpose(1, 2)


# Output frequency (share of Nyquist) up to which a warp is a pure scaling; above it the warp
# bends linearly so that Nyquist stays Nyquist and no band is lost or invented.
_WARP_KNEE = 0.85


def warp_frequencies(power: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """power (B, F, M) spectra, factors (B,) -> (B, F, M): each clip's spectrum stretched along
    frequency by its factor (piecewise linear, linear interpolation between bins). A factor
    above 1 moves formants up, as a shorter vocal tract would; 1 leaves the spectrum as it is."""
    bins = power.shape[1]
    top = float(bins - 1)
    knee = _WARP_KNEE * top
    out_bins = torch.arange(bins, device=power.device, dtype=power.dtype)[None]  # (1, F)
    factor = factors.to(power.dtype)[:, None]  # (B, 1)
    knee_source = knee / factor  # (B, 1): where the knee's output reads from
    below = out_bins / factor
    above = knee_source + (out_bins - knee) * (top - knee_source) / (top - knee)
    source = torch.where(out_bins <= knee, below, above).clamp(0.0, top)  # (B, F)
    left = source.floor().clamp(max=top - 1)
    frac = (source - left)[..., None]  # (B, F, 1)
    index = left.long()[..., None].expand(-1, -1, power.shape[2])  # (B, F, M)
    return (1.0 - frac) * power.gather(1, index) + frac * power.gather(1, index + 1)


def cepstral_smoother(n_mels: int, keep: int) -> np.ndarray:
    """(n_mels, n_mels) matrix S: log-mel frames x (..., n_mels) -> x @ S keeps the first `keep`
    coefficients of their orthonormal DCT-II and zeroes the rest (a low-pass lifter)."""
    k = np.arange(n_mels)[:, None]
    n = np.arange(n_mels)[None, :]
    dct = np.sqrt(2.0 / n_mels) * np.cos(np.pi / n_mels * (n + 0.5) * k)  # (coef, bin)
    dct[0] /= np.sqrt(2.0)
    mask = (np.arange(n_mels) < keep).astype(np.float64)
    return (dct.T @ np.diag(mask) @ dct).T.astype(np.float32)


def frame_level(mel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """mel (B, M, n_mels) log-mel, valid (B, M) -> (B, M, 1): each frame's mean log-mel level
    standardised over the clip's own frames (a gain or a quiet recording changes nothing)."""
    weights = valid.to(mel.dtype)[..., None]  # (B, M, 1)
    count = weights.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    level = mel.mean(-1, keepdim=True)  # (B, M, 1)
    centred = level - (level * weights).sum(1, keepdim=True) / count
    spread = ((centred.square() * weights).sum(1, keepdim=True) / count + 1e-5).sqrt()
    return centred / spread * weights


class CompactBackbone(nn.Module):
    def __init__(self, cfg: CompactEncoderConfig):
        super().__init__()
        self.output_dim = cfg.hidden_size
        self.mel = LogMel(cfg)
        self.feature_norm = cfg.feature_norm
        self.freq_masks, self.freq_mask_bins = cfg.freq_masks, cfg.freq_mask_bins
        self.vtlp = cfg.vtlp
        smoother = None
        if cfg.cepstral_coefficients:
            smoother = torch.from_numpy(cepstral_smoother(cfg.n_mels, cfg.cepstral_coefficients))
        self.register_buffer("smoother", smoother, persistent=False)
        # "utterance" uses only the affine weight and bias of this LayerNorm (same keys).
        self.mel_norm = nn.LayerNorm(cfg.n_mels)
        inputs = cfg.n_mels + (1 if cfg.feature_norm == "frame+level" else 0)
        self.conv1 = nn.Conv1d(inputs, cfg.conv_channels, 3, padding=1)
        # Stride 2: 100 Hz mel frames to 50 Hz, the rate of wav2vec2's features.
        self.conv2 = nn.Conv1d(cfg.conv_channels, cfg.conv_channels, 3, stride=2, padding=1)
        self.projection = nn.Linear(cfg.conv_channels, cfg.hidden_size)
        self.pos_conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, cfg.pos_conv_kernel,
                                  padding=cfg.pos_conv_kernel // 2, groups=cfg.hidden_size)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden_size, cfg.num_heads, cfg.ffn_size, cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def layer_list(self) -> list[nn.Module]:
        return list(self.layers.layers)

    def features_50hz(self, audio: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Per clip (T50_i, C) features at 50 Hz."""
        mel_lengths = self.mel.frames(lengths)
        warp = None
        if self.training and self.vtlp:  # drawn from torch's global generator, like dropout
            warp = 1.0 + (torch.rand(audio.shape[0], device=audio.device) * 2 - 1) * self.vtlp
        x = self.mel(audio, warp)  # (B, M, n_mels)
        if self.smoother is not None:
            x = x @ self.smoother
        valid = frame_mask(mel_lengths, x.shape[1])  # (B, M)
        level = frame_level(x, valid) if self.feature_norm == "frame+level" else None
        x = self.normalise(x, valid)
        if self.training and self.freq_masks and self.freq_mask_bins:
            x = self.mask_bands(x)
        if level is not None:
            x = torch.cat([x, level], dim=-1)  # (B, M, n_mels + 1)
        mask = valid[:, None, :]  # (B, 1, M)
        x = x.transpose(1, 2) * mask
        x = F.gelu(self.conv1(x)) * mask
        x = F.gelu(self.conv2(x))  # (B, C, ceil(M / 2))
        lengths50 = torch.div(mel_lengths + 1, 2, rounding_mode="floor")
        return [x[i, :, : int(n)].transpose(0, 1) for i, n in enumerate(lengths50)]

    def normalise(self, mel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """mel (B, M, n_mels), valid (B, M) -> normalised (B, M, n_mels). Utterance statistics
        come from each clip's own frames only, so padding does not change them."""
        if self.feature_norm in ("frame", "frame+level"):
            return self.mel_norm(mel)
        weights = valid.to(mel.dtype)[..., None]  # (B, M, 1)
        count = weights.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
        centred = mel - (mel * weights).sum(1, keepdim=True) / count  # per-bin mean removed
        power = (centred.square() * weights).sum((1, 2), keepdim=True) / (count * mel.shape[2])
        scaled = centred / (power + 1e-5).sqrt()
        return scaled * self.mel_norm.weight + self.mel_norm.bias

    def mask_bands(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, M, n_mels) with random bands of bins zeroed, independently per clip
        (drawn from torch's global generator, like dropout)."""
        batch, _, bins = features.shape
        keep = torch.ones(batch, 1, bins, device=features.device, dtype=features.dtype)
        index = torch.arange(bins, device=features.device)
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_mask_bins + 1, (batch, 1, 1),
                                  device=features.device)
            start = (torch.rand(batch, 1, 1, device=features.device) * (bins - width + 1)).long()
            keep = keep * ~((index >= start) & (index < start + width))
        return features * keep

    def run_transformer(self, features: torch.Tensor, lengths: torch.Tensor,
                        extra: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, C), optional `extra` (B, T, H) added after the projection -> (B, T,
        H), padding zeroed."""
        mask = frame_mask(lengths, features.shape[1])  # (B, T)
        x = self.projection(features)
        if extra is not None:
            x = x + extra
        x = x * mask[..., None]
        x = x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)
        x = self.dropout(x) * mask[..., None]
        padded = bool((~mask).any())
        x = self.layers(x, src_key_padding_mask=~mask if padded else None)
        return self.final_norm(x) * mask[..., None]

    def encode(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor,
        extra: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`extra`: per clip (T_i, H) added to the projected features (already at the clip's
        output frames)."""
        feats = self.features_50hz(audio, sample_lengths)
        pairs = zip(feats, frame_lengths, strict=True)
        feats = [interpolate_frames(f[None], int(t))[0] for f, t in pairs]
        added = None if extra is None else pad_stack(extra)
        return self.run_transformer(pad_stack(feats), frame_lengths, added)


class CompactContentEncoder(CompactBackbone):
    """With `phone_classes`, also reads a per-frame phone track: class indices at 30 fps (-1:
    no phone; emotalk_core.phonetics.track says what the classes are), embedded (one-hot
    through a zero-initialised linear map, so a model extended with it starts from what it
    computed without) and added to the projected features."""

    def __init__(self, cfg: CompactEncoderConfig, phone_classes: int = 0):
        super().__init__(cfg)
        self.phone_classes = phone_classes
        self.phone_embed = None
        if phone_classes:
            self.phone_embed = nn.Linear(phone_classes, cfg.hidden_size)
            nn.init.zeros_(self.phone_embed.weight)
            nn.init.zeros_(self.phone_embed.bias)

    def forward(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor,
        phones: torch.Tensor | None = None, phone_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """audio (B, S) normalised, phones (B, T_p) class indices with their per-clip lengths
        (default: all of T_p) -> (B, T, H). The track is stretched to each clip's frame
        count by nearest frame; a model with a phone input given no track sees "no phone"."""
        extra = None
        if self.phone_embed is not None:
            extra = []
            for i, frames in enumerate(frame_lengths.tolist()):
                if phones is None:
                    track = torch.full((int(frames),), -1, dtype=torch.long, device=audio.device)
                else:
                    n = int(phone_lengths[i]) if phone_lengths is not None else phones.shape[1]
                    track = stretch_track(phones[i, :n], int(frames))
                extra.append(self.embed_track(track))
        return self.encode(audio, sample_lengths, frame_lengths, extra)

    def embed_track(self, track: torch.Tensor) -> torch.Tensor:
        """(T,) class indices (-1: none) -> (T, H)."""
        one_hot = F.one_hot(track.clamp(min=0), self.phone_classes).to(self.phone_embed.weight)
        one_hot = one_hot * (track >= 0).to(one_hot)[:, None]
        return self.phone_embed(one_hot)


def stretch_track(track: torch.Tensor, frames: int) -> torch.Tensor:
    """(T_p,) labels -> (frames,) by nearest frame (the identity when the counts match)."""
    if track.shape[0] == frames:
        return track
    if track.shape[0] == 0:
        return torch.full((frames,), -1, dtype=track.dtype, device=track.device)
    index = ((torch.arange(frames, device=track.device) + 0.5) * track.shape[0] / frames).long()
    return track[index.clamp(max=track.shape[0] - 1)]


class CompactEmotionEncoder(CompactBackbone):
    def __init__(self, cfg: CompactEncoderConfig, num_labels: int):
        super().__init__(cfg)
        self.classifier = EmotionClassifierHead(cfg.hidden_size, num_labels, cfg.dropout)

    def forward(
        self, audio: torch.Tensor, sample_lengths: torch.Tensor, frame_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, S) normalised -> hidden (B, T, H), logits (B, L)."""
        hidden = self.encode(audio, sample_lengths, frame_lengths)
        return hidden, self.classifier(hidden, frame_lengths)

