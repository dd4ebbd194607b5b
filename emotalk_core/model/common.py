"""Shared pieces of the encoders: input normalisation, time interpolation, padding helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import frame_mask


def normalize_audio(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per clip over its valid samples, as wav2vec2's feature extractor
    does: (x - mean) / sqrt(var + 1e-7). audio (B, S) -> (B, S), padding set to 0."""
    mask = frame_mask(lengths, audio.shape[1]).to(audio.dtype)  # (B, S)
    count = lengths.to(audio.dtype).clamp(min=1)[:, None]
    mean = (audio * mask).sum(1, keepdim=True) / count
    var = (((audio - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (audio - mean) / torch.sqrt(var + 1e-7) * mask


def interpolate_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Linear interpolation along time with aligned corners. x (B, T_in, D) -> (B, frames, D)."""
    if x.shape[1] == frames:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, frames, -1)
    y = F.interpolate(x.transpose(1, 2), size=frames, mode="linear", align_corners=True)
    return y.transpose(1, 2)


def pad_stack(items: list[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Stack (T_i, D) tensors into (B, max T_i, D), zero padded at the end."""
    length = max(t.shape[0] for t in items) if length is None else length
    out = items[0].new_zeros(len(items), length, items[0].shape[1])
    for i, t in enumerate(items):
        out[i, : t.shape[0]] = t
    return out


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames. x (B, T, D) -> (B, D)."""
    mask = frame_mask(lengths, x.shape[1]).to(x.dtype)[..., None]
    return (x * mask).sum(1) / lengths.to(x.dtype).clamp(min=1)[:, None]
