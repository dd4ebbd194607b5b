"""The emotion-guided decoder: one post-norm transformer decoder layer (EmoTalk's settings).

Parameter names follow `torch.nn.TransformerDecoderLayer` (so released weights load unchanged), but
the forward is our own: self-attention runs with memory-efficient scaled-dot-product attention in
blocks of query rows with the periodic causal bias built per block, and never keeps attention maps.
The cross-attention memory mask of EmoTalk lets frame i see only memory frame i; a softmax over a
single key is exactly 1, so cross-attention reduces to out_proj(W_v memory_i + b_v), computed
directly in O(T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DecoderConfig
from .masks import alibi_slopes, periodic_causal_bias

# Elements of attention bias built at once (16 MiB of float32): bounds memory for any length.
_BIAS_BUDGET = 1 << 22


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.feature_dim
        self.heads = cfg.heads
        self.period = cfg.period
        self.attn_dropout = cfg.dropout
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(
            d, cfg.heads, dropout=cfg.dropout, batch_first=True
        )
        self.linear1 = nn.Linear(d, cfg.ffn_size)
        self.linear2 = nn.Linear(cfg.ffn_size, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.register_buffer("slopes", alibi_slopes(cfg.heads), persistent=False)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """query (B, T, D), memory (B, T, D) -> (B, T, D)."""
        x = self.norm1(query + self.dropout1(self._self_attention(query)))
        x = self.norm2(x + self.dropout2(self._diagonal_cross_attention(memory)))
        ff = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm3(x + self.dropout3(ff))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, hd)

    def _self_attention(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.self_attn
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        b, h, t, hd = q.shape
        dropout = self.attn_dropout if self.training else 0.0
        rows = max(1, _BIAS_BUDGET // max(1, h * t))
        blocks = []
        slopes = self.slopes.to(dtype=q.dtype)
        for start in range(0, t, rows):
            end = min(t, start + rows)
            # Causal: queries [start, end) never see keys at or after `end`.
            bias = periodic_causal_bias(slopes, start, end, end, self.period)  # (H, Q, K)
            blocks.append(
                F.scaled_dot_product_attention(
                    q[:, :, start:end], k[:, :, :end], v[:, :, :end],
                    attn_mask=bias[None], dropout_p=dropout,
                )  # (B, H, Q, hd)
            )  # fmt: skip
        out = torch.cat(blocks, dim=2).transpose(1, 2).reshape(b, t, h * hd)
        return attn.out_proj(out)

    def _diagonal_cross_attention(self, memory: torch.Tensor) -> torch.Tensor:
        attn = self.multihead_attn
        d = memory.shape[-1]
        v = F.linear(memory, attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
        if self.training and self.attn_dropout > 0:
            # Dropout on the single attention weight (1.0) of each frame and head.
            b, t, _ = v.shape
            keep = F.dropout(v.new_ones(b, t, self.heads, 1), self.attn_dropout, training=True)
            v = (v.view(b, t, self.heads, -1) * keep).view(b, t, d)
        return attn.out_proj(v)


class EmotionGuidedDecoder(nn.Module):
    """A stack of decoder layers (EmoTalk uses one), no final norm, matching the release."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """query (B, T, D), memory (B, T, D) -> (B, T, D). Causal, so right padding never
        changes the valid frames."""
        x = query
        for layer in self.layers:
            x = layer(x, memory)
        return x
