"""Post-norm transformer encoder/decoder as DETR (positions added to queries and keys every layer)."""
from __future__ import annotations

import torch
from torch import nn


class _FFN(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, d))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.net(x)))


class _Attention(nn.Module):
    """Multi-head attention + dropout + residual + LayerNorm (post-norm)."""

    def __init__(self, d: int, nhead: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, nhead, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = self.attn(q, k, v, need_weights=False)[0]
        return self.norm(x + self.drop(out))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, nhead: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = _Attention(d, nhead, dropout)
        self.ffn = _FFN(d, ffn, dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = src + pos
        return self.ffn(self.self_attn(src, qk, qk, src))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, nhead: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = _Attention(d, nhead, dropout)
        self.cross_attn = _Attention(d, nhead, dropout)
        self.ffn = _FFN(d, ffn, dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        qk = tgt + query_pos
        tgt = self.self_attn(tgt, qk, qk, tgt)
        tgt = self.cross_attn(tgt, tgt + query_pos, memory + pos, memory)
        return self.ffn(tgt)


class Transformer(nn.Module):
    """Encoder over the flattened feature map and decoder over N learned queries.

    ``num_decoder=0`` builds the encoder alone (no decoder layers, no decoder norm): only
    :meth:`encode` is then usable.
    """

    def __init__(self, d: int, nhead: int, num_encoder: int, num_decoder: int, ffn: int,
                 dropout: float):
        super().__init__()
        self.encoder = nn.ModuleList(EncoderLayer(d, nhead, ffn, dropout) for _ in range(num_encoder))
        self.decoder = nn.ModuleList(DecoderLayer(d, nhead, ffn, dropout) for _ in range(num_decoder))
        self.decoder_norm = nn.LayerNorm(d) if num_decoder else None
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Returns ``memory (B, HW, d)``.

        Args:
            src: ``(B, HW, d)`` projected features; pos: ``(HW, d)``.
        """
        pos = pos.unsqueeze(0)
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos)
        return memory

    def forward(self, src: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``memory (B, HW, d)`` and decoder output ``(B, N, d)``.

        Args:
            src: ``(B, HW, d)`` projected features; pos: ``(HW, d)``; query_pos: ``(N, d)``.
        """
        memory = self.encode(src, pos)
        query_pos = query_pos.unsqueeze(0).expand(src.shape[0], -1, -1)  # (B, N, d)
        tgt = torch.zeros_like(query_pos)
        for layer in self.decoder:
            tgt = layer(tgt, memory, pos.unsqueeze(0), query_pos)
        return memory, self.decoder_norm(tgt)
