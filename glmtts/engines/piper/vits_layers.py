"""Building blocks of the VITS network (see :mod:`glmtts.engines.piper.vits`): normalisation,
convolutions, length buckets, and the relative-position text encoder."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from glmtts.engines.piper.vits_config import VitsConfig


class ChannelNorm(nn.Module):
    """Layer normalisation over the channel axis of a ``(batch, channels, time)`` tensor."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.gamma, self.beta, self.eps)
        return y.transpose(1, 2)


class GemmConv1d(nn.Conv1d):
    """A "same" convolution of a batch-1 ``(1, C, T)`` tensor as one matrix product (the
    weight times the input's ``k`` shifted copies stacked), for the text encoder and the
    duration predictor.

    They run at the raw phoneme count, and torch's CPU convolution (oneDNN) creates and keeps
    kernels for every new input length: most of what its caches held after a few hundred
    sentences came from these layers. A matrix product keeps nothing per shape, and is as
    fast here. Depth-wise convolutions (``groups == channels``) are ``k`` multiply-adds.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[0] != 1 or self.stride != (1,) or self.padding_mode != "zeros"
                or isinstance(self.padding, str)
                or 2 * self.padding[0] != self.dilation[0] * (self.kernel_size[0] - 1)):
            return super().forward(x)  # only batch-1 "same" convolutions are rewritten
        w, (d,), (p,) = self.weight, self.dilation, self.padding
        k, (cin, t) = w.shape[-1], x.shape[1:]
        xp = F.pad(x[0], (p, p)) if p else x[0]
        if self.groups == cin == w.shape[0] and w.shape[1] == 1:
            y = xp[:, :t] * w[:, :, 0]
            for j in range(1, k):
                y = y.addcmul_(xp[:, j * d: j * d + t], w[:, :, j])
            return (y if self.bias is None else y.add_(self.bias[:, None]))[None]
        if self.groups != 1:
            return super().forward(x)
        cols = xp if k == 1 else xp.as_strided((cin, k, t), (xp.stride(0), d * xp.stride(1),
                                                             xp.stride(1))).reshape(cin * k, t)
        wm = w.reshape(w.shape[0], cin * k)
        y = wm @ cols if self.bias is None else torch.addmm(self.bias[:, None], wm, cols)
        return y[None]


def _same_conv(cin: int, cout: int, k: int, dilation: int = 1, groups: int = 1,
               bias: bool = True) -> nn.Conv1d:
    return GemmConv1d(cin, cout, k, dilation=dilation, padding=dilation * (k - 1) // 2,
                      groups=groups, bias=bias)


def _zero_tail(x: torch.Tensor, valid: int) -> torch.Tensor:
    """Zero (in place) every time step from ``valid`` on: what a convolution's own zero padding
    would see past the true end of the signal."""
    if x.shape[-1] > valid:
        x[..., valid:] = 0
    return x


def bucket_length(frames: int) -> int:
    """Round a frame count up to one of about 8 sizes per octave (multiples of 16 at least).

    CPU convolution kernels are generated per input shape; decoding into a few shapes reuses
    them instead of paying the generation again for every new sentence length.
    """
    step = max(16, 1 << max(0, frames.bit_length() - 4))
    return -(-frames // step) * step


def time_major_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (a ``(1, k)`` "same" 2-D convolution of :func:`_same_conv2d`, or a 1 x 1) on
    a time-major ``(T, C_in)`` signal, as one matrix product: ``(T, C_out)``.

    A ``(1, C, 1, T)`` channels-last tensor is such a signal in memory (``as_time_major``),
    and a channels-last weight ``(out, in, 1, k)`` is an ``(out, k * in)`` matrix without a
    copy: the coupling flow's convolutions run so about 10-20% faster than through oneDNN.
    """
    w = conv.weight
    out, cin, _, k = w.shape
    d, p, t = conv.dilation[1], conv.padding[1], x.shape[0]
    if 2 * p != d * (k - 1) or conv.stride != (1, 1) or conv.padding[0] or w.shape[2] != 1:
        return as_time_major(conv(from_time_major(x.contiguous())))  # not a "same" (1, k)
    wm = w.permute(0, 2, 3, 1).reshape(out, k * cin)
    if k > 1:
        xp = F.pad(x, (0, 0, p, p))
        x = xp.as_strided((t, k, cin), (xp.stride(0), d * xp.stride(0), xp.stride(1))
                          ).reshape(t, k * cin)
    return x @ wm.t() if conv.bias is None else torch.addmm(conv.bias, x, wm.t())


def as_time_major(x: torch.Tensor) -> torch.Tensor:
    """``(1, C, 1, T)`` -> ``(T, C)`` (a view for a channels-last tensor)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[3], x.shape[1])


def from_time_major(x: torch.Tensor) -> torch.Tensor:
    """``(T, C)`` -> ``(1, C, 1, T)`` channels-last (a view of a contiguous ``x``)."""
    return x.reshape(1, 1, x.shape[0], x.shape[1]).permute(0, 3, 1, 2)


def _same_conv2d(cin: int, cout: int, k: int, dilation: int = 1, bias: bool = True
                 ) -> nn.Conv2d:
    """A 1-D convolution stored as a ``(1, k)`` 2-D one (see :class:`HifiGanDecoder`)."""
    return nn.Conv2d(cin, cout, (1, k), dilation=(1, dilation),
                     padding=(0, dilation * (k - 1) // 2), bias=bias)


# --------------------------------------------------------------------------- text encoder
class RelativeAttention(nn.Module):
    """Multi-head self-attention with windowed relative position embeddings (keys and values)."""

    def __init__(self, channels: int, n_heads: int, window: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = GemmConv1d(channels, channels, 1)
        self.conv_k = GemmConv1d(channels, channels, 1)
        self.conv_v = GemmConv1d(channels, channels, 1)
        self.conv_o = GemmConv1d(channels, channels, 1)
        span = 2 * window + 1
        self.emb_rel_k = nn.Parameter(torch.zeros(1, span, self.head_dim))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, span, self.head_dim))

    def _band_to_full(self, band: torch.Tensor) -> torch.Tensor:
        """``(h, t, 2w+1)`` offsets ``j - i + w`` -> ``(h, t, t)`` absolute scores (0 outside)."""
        h, t, span = band.shape
        w = self.window
        padded = F.pad(band, (0, t))  # (h, t, t + span); row i, column i + d after the skew
        flat = padded.reshape(h, t * (t + span))[:, : t * (t + span - 1)]
        return flat.reshape(h, t, t + span - 1)[:, :, w : w + t]

    def _full_to_band(self, full: torch.Tensor) -> torch.Tensor:
        """``(h, t, t)`` attention weights -> ``(h, t, 2w+1)`` weights per relative offset."""
        h, t, _ = full.shape
        w = self.window
        span = 2 * w + 1
        padded = F.pad(full, (w, w))  # (h, t, t + 2w)
        flat = F.pad(padded.reshape(h, t * (t + 2 * w)), (0, t))
        return flat.reshape(h, t, t + span)[:, :, :span]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, t = x.shape
        h, d = self.n_heads, self.head_dim
        q = self.conv_q(x).view(h, d, t).transpose(1, 2) * (d**-0.5)
        k = self.conv_k(x).view(h, d, t)
        v = self.conv_v(x).view(h, d, t).transpose(1, 2)
        scores = torch.matmul(q, k)
        rel_k = torch.matmul(q, self.emb_rel_k[0].t())  # (h, t, 2w+1)
        scores = scores + self._band_to_full(rel_k)
        p = torch.softmax(scores, dim=-1)
        out = torch.matmul(p, v) + torch.matmul(self._full_to_band(p), self.emb_rel_v[0])
        return self.conv_o(out.transpose(1, 2).reshape(1, c, t))


class FeedForward(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv_1 = _same_conv(channels, filter_channels, kernel)
        self.conv_2 = _same_conv(filter_channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(torch.relu(self.conv_1(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        n = cfg.n_layers
        self.attn_layers = nn.ModuleList(
            RelativeAttention(cfg.hidden, cfg.n_heads, cfg.window_size) for _ in range(n))
        self.norm_layers_1 = nn.ModuleList(ChannelNorm(cfg.hidden) for _ in range(n))
        self.ffn_layers = nn.ModuleList(
            FeedForward(cfg.hidden, cfg.filter_channels, cfg.kernel_size) for _ in range(n))
        self.norm_layers_2 = nn.ModuleList(ChannelNorm(cfg.hidden) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, n1, ffn, n2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers,
                                     self.norm_layers_2, strict=True):
            x = n1(x + attn(x))
            x = n2(x + ffn(x))
        return x


class TextEncoder(nn.Module):
    """Phoneme ids -> hidden states and the prior's mean and log-scale per phoneme."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.hidden = cfg.hidden
        self.emb = nn.Embedding(cfg.num_symbols, cfg.hidden)
        self.encoder = TransformerEncoder(cfg)
        self.proj = GemmConv1d(cfg.hidden, 2 * cfg.inter_channels, 1)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (self.emb(ids) * math.sqrt(self.hidden)).transpose(1, 2)
        x = self.encoder(x)
        m, logs = self.proj(x).chunk(2, dim=1)
        return x, m, logs


