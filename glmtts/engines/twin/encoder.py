"""The prompt-audio speech tokenizer: a whisper-large-v3-shaped encoder (two convolutions on a
128-bin log-mel, learned positions, pre-norm transformer layers), average-pooled by 2 and
vector-quantised: 25 speech tokens per second of prompt audio."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from glmtts.engines.twin.config import EncoderShape

#: Tokens quantised at once (each holds a row of 32,768 scores).
VQ_CHUNK_TOKENS = 8


class EncoderLayer(nn.Module):
    """Pre-norm self-attention (whisper's bias layout: none on the key) and a GELU MLP."""

    def __init__(self, s: EncoderShape) -> None:
        super().__init__()
        self.heads = s.heads
        self.self_attn_layer_norm = nn.LayerNorm(s.d_model)
        self.q_proj = nn.Linear(s.d_model, s.d_model)
        self.k_proj = nn.Linear(s.d_model, s.d_model, bias=False)
        self.v_proj = nn.Linear(s.d_model, s.d_model)
        self.out_proj = nn.Linear(s.d_model, s.d_model)
        self.final_layer_norm = nn.LayerNorm(s.d_model)
        self.fc1 = nn.Linear(s.d_model, s.ffn)
        self.fc2 = nn.Linear(s.ffn, s.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.self_attn_layer_norm(x)
        q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out_proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class PromptEncoder(nn.Module):
    """Log-mel ``(128, frames)`` at 100 frames/s -> speech-token ids at 25 per second."""

    def __init__(self, shape: EncoderShape) -> None:
        super().__init__()
        self.shape = shape
        self.conv1 = nn.Conv1d(shape.n_mels, shape.d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(shape.d_model, shape.d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(shape.max_positions, shape.d_model)
        self.layers = nn.ModuleList(EncoderLayer(shape) for _ in range(shape.layers))
        self.layer_norm = nn.LayerNorm(shape.d_model)
        self.codebook = nn.Embedding(shape.codebook, shape.d_model)

    def _window(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel[None]))))  # (1, d, frames / 2)
        x = x.transpose(1, 2)
        x = x + self.embed_positions.weight[:x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        x = self.layer_norm(x)
        pooled = F.avg_pool1d(x.transpose(1, 2), self.shape.pooling, ceil_mode=True)
        return pooled[0].T  # (tokens, d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Token ids ``(frames // 4,)`` of a log-mel ``(128, frames)``; audio longer than
        30 s is encoded in 30 s windows, as whisper does."""
        window = 2 * self.shape.max_positions
        frames = mel.shape[1] - mel.shape[1] % 4
        book = self.codebook.weight
        # Nearest code in L2: argmax of z.c - |c|^2 / 2 (the norm is a reduction: no copy of
        # the codebook), a few tokens at a time so the scores stay small.
        half_norms = (0.5 * torch.linalg.vector_norm(book, dim=-1, dtype=torch.float32).square()
                      ).to(book.dtype)
        ids = []
        for start in range(0, frames, window):
            z = self._window(mel[:, start:min(start + window, frames)])
            for chunk in z.split(VQ_CHUNK_TOKENS):
                ids.append((chunk @ book.T - half_norms).argmax(-1))
        return torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long, device=mel.device)
