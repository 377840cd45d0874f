"""The flow: a DiT that turns speech tokens into an 80-bin mel spectrogram by flow matching.

Speech tokens (25/s) are stretched to mel frames (50/s), embedded (100,001-row table) and
refined by ConvNeXt blocks; the DiT mixes them with the noisy mel and the prompt's mel, and its
blocks are modulated (adaptive LayerNorm) by the time step and a 192-dim speaker vector. The
sampler takes 10 Euler steps on a cosine schedule with classifier-free guidance: conditional
and unconditional inputs run together as a batch of 2.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from glmtts.engines.twin.config import FlowShape
from glmtts.engines.twin.layers import apply_rope, rope_tables


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sinusoidal features ``(len(positions), dim)`` (float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, s: FlowShape) -> None:
        super().__init__()
        self.time_dim = s.time_dim
        self.mlp = nn.Sequential(nn.Linear(s.time_dim, s.width), nn.SiLU(),
                                 nn.Linear(s.width, s.width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        w = self.mlp[0].weight
        return self.mlp(sinusoid(t * 1000.0, self.time_dim).to(w.dtype))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv 7, LayerNorm, pointwise MLP (x2) with global response norm."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.grn_gamma = nn.Parameter(torch.zeros(hidden))
        self.grn_beta = nn.Parameter(torch.zeros(hidden))
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim)
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = F.gelu(self.pwconv1(self.norm(h)))
        g = h.norm(p=2, dim=1, keepdim=True)
        h = h + self.grn_gamma * (h * (g / (g.mean(-1, keepdim=True) + 1e-6))) + self.grn_beta
        return x + self.pwconv2(h)


class TokenEmbedding(nn.Module):
    """Speech tokens -> per-frame features: nearest stretch to the frame count, embedding,
    fixed sinusoidal positions, ConvNeXt blocks. Id 0 is the filler (unconditional input)."""

    def __init__(self, s: FlowShape) -> None:
        super().__init__()
        self.embed = nn.Embedding(s.text_vocab + 1, s.text_dim)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(s.text_dim, 2 * s.text_dim)
                                      for _ in range(s.text_blocks)))

    def forward(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        stretched = F.interpolate(tokens[:, None].float(), size=frames, mode="nearest")
        h = self.embed(stretched[:, 0].long())
        h = h + sinusoid(torch.arange(frames, device=h.device), h.shape[-1]).to(h.dtype)
        return self.blocks(h)


class InputMixer(nn.Module):
    """Concatenate noisy mel, prompt mel and token features; project; add a convolutional
    position embedding (two grouped convolutions)."""

    def __init__(self, s: FlowShape) -> None:
        super().__init__()
        groups = math.gcd(s.conv_pos_groups, s.width)
        self.proj = nn.Linear(2 * s.mel_dim + s.text_dim, s.width)
        k = s.conv_pos_kernel
        self.conv_pos = nn.Sequential(nn.Conv1d(s.width, s.width, k, padding=k // 2,
                                                groups=groups), nn.Mish(),
                                      nn.Conv1d(s.width, s.width, k, padding=k // 2,
                                                groups=groups), nn.Mish())

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.proj(torch.cat((x, cond, text), dim=-1))
        return h + self.conv_pos(h.transpose(1, 2)).transpose(1, 2)


class DiTBlock(nn.Module):
    """Adaptive-LayerNorm transformer block (shift, scale and gate for attention and MLP,
    from the time step and speaker vector), rotary self-attention, GELU MLP."""

    def __init__(self, s: FlowShape) -> None:
        super().__init__()
        self.heads, self.head_dim = s.heads, s.head_dim
        self.modulation = nn.Linear(s.width + s.speaker_dim, 6 * s.width)
        self.attn_norm = nn.LayerNorm(s.width, elementwise_affine=False, eps=1e-6)
        self.to_q = nn.Linear(s.width, s.heads * s.head_dim)
        self.to_k = nn.Linear(s.width, s.heads * s.head_dim)
        self.to_v = nn.Linear(s.width, s.heads * s.head_dim)
        self.to_out = nn.Linear(s.heads * s.head_dim, s.width)
        self.ff_norm = nn.LayerNorm(s.width, elementwise_affine=False, eps=1e-6)
        self.ff1 = nn.Linear(s.width, s.ff_mult * s.width)
        self.ff2 = nn.Linear(s.ff_mult * s.width, s.width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (
            self.modulation(F.silu(cond))[:, None].chunk(6, dim=-1))
        h = self.attn_norm(x) * (1 + scale_a) + shift_a
        q, k, v = (p(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for p in (self.to_q, self.to_k, self.to_v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        x = x + gate_a * self.to_out(attn)
        h = self.ff_norm(x) * (1 + scale_f) + shift_f
        return x + gate_f * self.ff2(F.gelu(self.ff1(h), approximate="tanh"))


class DiT(nn.Module):
    def __init__(self, s: FlowShape) -> None:
        super().__init__()
        self.shape = s
        self.time_embed = TimestepEmbedding(s)
        self.token_embed = TokenEmbedding(s)
        self.mixer = InputMixer(s)
        self.blocks = nn.ModuleList(DiTBlock(s) for _ in range(s.depth))
        self.norm_modulation = nn.Linear(s.width + s.speaker_dim, 2 * s.width)
        self.norm_out = nn.LayerNorm(s.width, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(s.width, s.mel_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor,
                t: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Velocity ``(B, T, 80)`` for noisy mel ``x``, prompt mel ``cond`` and token features
        ``text`` (all ``(B, T, .)``), time ``t`` ``(B,)`` and speaker ``(B, 192)``."""
        c = torch.cat((self.time_embed(t), speaker), dim=-1)
        h = self.mixer(x, cond, text)
        positions = torch.arange(h.shape[1], device=h.device)
        cos, sin = rope_tables(positions, self.shape.head_dim, 10000.0, h.dtype)
        for block in self.blocks:
            h = block(h, c, cos, sin)
        shift, scale = self.norm_modulation(F.silu(c))[:, None].chunk(2, dim=-1)
        return self.proj_out(self.norm_out(h) * (1 + scale) + shift)


class Flow(nn.Module):
    """Tokens -> mel with the Euler sampler and classifier-free guidance."""

    def __init__(self, shape: FlowShape) -> None:
        super().__init__()
        self.shape = shape
        self.dit = DiT(shape)

    def forward(self, tokens: torch.Tensor, prompt_mel: torch.Tensor, speaker: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        """Mel ``(frames - prompt_frames, 80)`` of the new tokens.

        Args:
            tokens: Speech-token ids (0..32767) of the prompt followed by the new ones.
            prompt_mel: ``(prompt_frames, 80)``, 2 frames per prompt token.
            speaker: ``(192,)`` speaker vector.
            generator: CPU generator for the starting noise.
        """
        s = self.shape
        dtype = self.dit.proj_out.weight.dtype
        device = tokens.device
        frames = 2 * tokens.shape[0]
        prompt_frames = min(prompt_mel.shape[0], frames)
        cond = torch.zeros(2, frames, s.mel_dim, dtype=dtype, device=device)
        cond[0, :prompt_frames] = prompt_mel[:prompt_frames].to(dtype)  # row 1: unconditional
        ids = torch.stack((tokens + 1, torch.zeros_like(tokens)))  # 0 = filler
        text = self.dit.token_embed(ids, frames)
        spk = torch.stack((speaker, torch.zeros_like(speaker))).to(dtype)
        noise = torch.randn(1, frames, s.mel_dim, generator=generator)
        x = noise.to(device=device, dtype=dtype)
        times = 1.0 - torch.cos(torch.linspace(0.0, 1.0, s.steps + 1) * math.pi / 2)
        for i in range(s.steps):
            t = torch.full((2,), float(times[i]), device=device)
            v_cond, v_uncond = self.dit(x.expand(2, -1, -1), cond, text, t, spk).chunk(2)
            v = v_cond + s.cfg_strength * (v_cond - v_uncond)
            x = x + float(times[i + 1] - times[i]) * v
        return x[0, prompt_frames:]
