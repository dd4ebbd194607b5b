"""Attention masks of the EmoTalk decoder and padding masks.

The decoder's self-attention is causal with a periodic linear bias (ALiBi-like): frame i attends to
frame j <= i with the additive bias `-slope_h * floor((i - j) / period)`, slopes 1/4, 1/16, 1/64,
1/256 for four heads. The masks are built per block of query rows, so memory stays bounded for
any length instead of growing with its square.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(heads: int) -> torch.Tensor:
    """Geometric head slopes 2^(-8/heads * (h + 1)); a power-of-two head count as in ALiBi,
    otherwise the closest power of two's slopes plus every other slope of the next one."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        slopes = power_of_two(heads)
    else:
        closest = 2 ** math.floor(math.log2(heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def periodic_causal_bias(
    slopes: torch.Tensor, query_start: int, query_end: int, key_len: int, period: int
) -> torch.Tensor:
    """Additive mask (H, query_end - query_start, key_len) for queries [query_start, query_end).

    Keys after the query are -inf (causal); keys at distance d get `-slope * floor(d / period)`.
    """
    rows = torch.arange(query_start, query_end, device=slopes.device)[:, None]
    cols = torch.arange(key_len, device=slopes.device)[None, :]
    distance = rows - cols  # (Q, K)
    steps = torch.div(distance.clamp(min=0), period, rounding_mode="floor").to(slopes.dtype)
    bias = -slopes[:, None, None] * steps[None]  # (H, Q, K)
    return bias.masked_fill((distance < 0)[None], float("-inf"))


def frame_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B, T) bool, True on the valid frames of each sequence."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
