"""A VITS text-to-speech network for inference only, written for Piper voices.

The modules mirror the parameter names of a Piper ONNX export (``enc_p.*``, ``dp.*``, ``flow.*``,
``dec.*``) so that weights load by name. Only the inference path exists: no posterior encoder, no
training-only flows, no dropout, and batch size 1 (one sentence at a time), which lets every mask
be dropped. Weight normalisation is already folded in the exported weights.

Architecture facts (Kim et al., 2021, "Conditional Variational Autoencoder with Adversarial
Learning for End-to-End Text-to-Speech"), sized for a Piper "medium" voice by :class:`VitsConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class VitsConfig:
    """Hyper-parameters of a Piper VITS voice (defaults: Piper "medium")."""

    num_symbols: int = 256
    hidden: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    window_size: int = 4
    inter_channels: int = 192
    flow_layers: int = 4
    flow_wn_layers: int = 4
    flow_kernel: int = 5
    dp_filter: int = 192
    dp_kernel: int = 3
    dp_flows: int = 4
    spline_bins: int = 10
    spline_tail: float = 5.0
    upsample_initial: int = 256
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    upsample_kernels: tuple[int, ...] = (16, 16, 8)
    resblock_kernels: tuple[int, ...] = (3, 5, 7)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))

    @property
    def hop_length(self) -> int:
        """Audio samples produced per latent frame."""
        return math.prod(self.upsample_rates)


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


def _same_conv(cin: int, cout: int, k: int, dilation: int = 1, groups: int = 1,
               bias: bool = True) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, k, dilation=dilation, padding=dilation * (k - 1) // 2,
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
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
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
        self.proj = nn.Conv1d(cfg.hidden, 2 * cfg.inter_channels, 1)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (self.emb(ids) * math.sqrt(self.hidden)).transpose(1, 2)
        x = self.encoder(x)
        m, logs = self.proj(x).chunk(2, dim=1)
        return x, m, logs


# --------------------------------------------------------------------------- duration predictor
class DilatedSeparableConvs(nn.Module):
    """Residual stack of dilated depth-wise convolutions (dilation = kernel ** i)."""

    def __init__(self, channels: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList(
            _same_conv(channels, channels, kernel, dilation=kernel**i, groups=channels)
            for i in range(n_layers))
        self.convs_1x1 = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(n_layers))
        self.norms_1 = nn.ModuleList(ChannelNorm(channels) for _ in range(n_layers))
        self.norms_2 = nn.ModuleList(ChannelNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            x = x + cond
        for sep, n1, pw, n2 in zip(self.convs_sep, self.norms_1, self.convs_1x1, self.norms_2,
                                   strict=True):
            y = F.gelu(n1(sep(x)))
            y = F.gelu(n2(pw(y)))
            x = x + y
        return x


def _inverse_rq_spline(y: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor,
                       derivs: torch.Tensor, bound: float, min_size: float = 1e-3,
                       min_deriv: float = 1e-3) -> torch.Tensor:
    """Inverse of a monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

    Durkan et al. (2019), "Neural Spline Flows". ``widths``/``heights`` are unnormalised bin sizes
    ``(..., K)``; ``derivs`` are the ``K - 1`` unnormalised interior knot derivatives (the two
    boundary derivatives are 1, matching linear tails).
    """
    bins = widths.shape[-1]
    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)

    def knots(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = min_size + (1 - min_size * bins) * torch.softmax(raw, dim=-1)
        cum = F.pad(torch.cumsum(size, dim=-1), (1, 0))
        cum = 2 * bound * cum - bound
        cum[..., 0] = -bound
        cum[..., -1] = bound
        return cum, cum[..., 1:] - cum[..., :-1]

    cumw, w = knots(widths)
    cumh, h = knots(heights)
    d = min_deriv + F.softplus(F.pad(derivs, (1, 1), value=math.log(math.expm1(1 - min_deriv))))

    edges = cumh.clone()
    edges[..., -1] += 1e-6
    idx = (torch.sum(yc[..., None] >= edges, dim=-1) - 1).clamp(0, bins - 1)[..., None]

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx)[..., 0]

    x0, bw, y0, bh = pick(cumw), pick(w), pick(cumh), pick(h)
    d0, d1 = pick(d[..., :-1]), pick(d[..., 1:])
    delta = bh / bw
    dy = yc - y0
    a = dy * (d0 + d1 - 2 * delta) + bh * (delta - d0)
    b = bh * d0 - dy * (d0 + d1 - 2 * delta)
    c = -delta * dy
    disc = (b.pow(2) - 4 * a * c).clamp_min(0)
    root = (2 * c) / (-b - torch.sqrt(disc))
    x = root * bw + x0
    return torch.where(inside, x, y)


class SplineCouplingFlow(nn.Module):
    """Coupling layer whose second half is transformed by a rational-quadratic spline."""

    def __init__(self, filter_channels: int, kernel: int, bins: int, tail: float) -> None:
        super().__init__()
        self.bins = bins
        self.tail = tail
        self.filter_channels = filter_channels
        self.pre = nn.Conv1d(1, filter_channels, 1)
        self.convs = DilatedSeparableConvs(filter_channels, kernel, 3)
        self.proj = nn.Conv1d(filter_channels, 3 * bins - 1, 1)

    def inverse(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        z0, z1 = z[:, :1], z[:, 1:]
        params = self.proj(self.convs(self.pre(z0), cond))  # (1, 3K-1, t)
        params = params.transpose(1, 2)  # (1, t, 3K-1)
        k = self.bins
        scale = self.filter_channels**-0.5
        z1 = _inverse_rq_spline(z1[:, 0], params[..., :k] * scale, params[..., k: 2 * k] * scale,
                                params[..., 2 * k:], self.tail)
        return torch.cat([z0, z1[:, None]], dim=1)


class AffineFlow(nn.Module):
    """Element-wise affine flow ``z = m + exp(logs) * x`` on the two duration channels."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(2, 1))
        self.logs = nn.Parameter(torch.zeros(2, 1))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.m) * torch.exp(-self.logs)


class StochasticDurationPredictor(nn.Module):
    """Samples log-durations per phoneme by inverting a normalising flow conditioned on text."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        c = cfg.dp_filter
        self.pre = nn.Conv1d(cfg.hidden, c, 1)
        self.convs = DilatedSeparableConvs(c, cfg.dp_kernel, 3)
        self.proj = nn.Conv1d(c, c, 1)
        # Training layout: [affine, (spline, flip) * n]; inference skips the first spline flow,
        # whose output channel is discarded, so only odd indices >= 3 hold weights.
        flows: dict[str, nn.Module] = {"0": AffineFlow()}
        for i in range(3, 2 * cfg.dp_flows + 1, 2):
            flows[str(i)] = SplineCouplingFlow(c, cfg.dp_kernel, cfg.spline_bins, cfg.spline_tail)
        self.flows = nn.ModuleDict(flows)
        self._inverse_order = [str(i) for i in range(2 * cfg.dp_flows - 1, 2, -2)]

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Return log-durations ``(1, 1, t)`` from text states ``x`` and noise ``(1, 2, t)``."""
        cond = self.proj(self.convs(self.pre(x)))
        z = noise
        for name in self._inverse_order:
            z = self.flows[name].inverse(torch.flip(z, [1]), cond)
        z = torch.flip(z, [1])
        return self.flows["0"].inverse(z)[:, :1]


# --------------------------------------------------------------------------- flow
class GatedResidualStack(nn.Module):
    """WaveNet-style stack of gated (tanh x sigmoid) convolutions with skip outputs.

    Works on ``(1, C, 1, T)`` channels-last tensors (see :class:`HifiGanDecoder`); inputs past
    ``valid`` are zeroed before every convolution wider than one step.
    """

    def __init__(self, hidden: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList(_same_conv2d(hidden, 2 * hidden, kernel)
                                       for _ in range(n_layers))
        self.res_skip_layers = nn.ModuleList(
            nn.Conv2d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1)
            for i in range(n_layers))

    def forward(self, x: torch.Tensor, valid: int) -> torch.Tensor:
        skip = None
        last = len(self.in_layers) - 1
        for i, (conv, rs) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a, b = conv(_zero_tail(x, valid)).chunk(2, dim=1)
            y = rs(torch.tanh(a) * torch.sigmoid(b))
            if i < last:
                x = x + y[:, : self.hidden]
                y = y[:, self.hidden:]
            skip = y if skip is None else skip + y
        return skip


class MeanCoupling(nn.Module):
    """Volume-preserving coupling: the second half is shifted by a function of the first."""

    def __init__(self, channels: int, hidden: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv2d(self.half, hidden, 1)
        self.enc = GatedResidualStack(hidden, kernel, n_layers)
        self.post = nn.Conv2d(hidden, self.half, 1)

    def inverse(self, z: torch.Tensor, valid: int) -> torch.Tensor:
        z0, z1 = z[:, : self.half], z[:, self.half:]
        shift = self.post(self.enc(self.pre(z0), valid))
        return torch.cat([z0, z1 - shift], dim=1)


class CouplingFlow(nn.Module):
    """Prior-to-posterior flow: alternating mean couplings and channel flips."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.flows = nn.ModuleDict({
            str(2 * i): MeanCoupling(cfg.inter_channels, cfg.hidden, cfg.flow_kernel,
                                     cfg.flow_wn_layers)
            for i in range(cfg.flow_layers)})

    def inverse(self, z: torch.Tensor, valid: int) -> torch.Tensor:
        """Map prior samples ``(1, C, 1, T)`` to decoder latents; steps from ``valid`` on are
        padding (their values are undefined on return)."""
        for name in reversed(list(self.flows.keys())):
            z = self.flows[name].inverse(torch.flip(z, [1]), valid)
        return z


# --------------------------------------------------------------------------- decoder
class DilatedResBlock(nn.Module):
    """HiFi-GAN residual block "2": one dilated convolution per residual step."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_same_conv2d(channels, channels, kernel, dilation=d)
                                   for d in dilations)

    def forward(self, x: torch.Tensor, x_act: torch.Tensor, valid: int) -> torch.Tensor:
        """``x_act`` is ``leaky_relu(x, 0.1)`` with its tail zeroed, shared by sibling blocks."""
        y = x + self.convs[0](x_act)
        for conv in self.convs[1:]:
            y.add_(conv(_zero_tail(F.leaky_relu(y, 0.1), valid)))
        return y


class HifiGanDecoder(nn.Module):
    """Latent frames -> waveform by transposed-convolution upsampling and multi-receptive fusion.

    Inference shortcuts, all exact up to float rounding:

    - the signal runs as a 2-D ``(1, C, 1, T)`` tensor in channels-last layout, for which the
      CPU convolution kernels need no layout conversion (about twice as fast for 1-D audio);
    - the input may be padded (see :func:`bucket_length`): every convolution input is zeroed
      past the true length, so the valid samples equal an unpadded run;
    - each stage's shared ``leaky_relu`` is computed once for its residual blocks;
    - the mean over the residual blocks is folded into the next convolution's weights by
      :meth:`fold_block_mean` (``leaky_relu`` commutes with a positive scale).
    """

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        ch = cfg.upsample_initial
        self.conv_pre = _same_conv2d(cfg.inter_channels, ch, 7)
        ups, blocks = [], []
        for i, (rate, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels, strict=True)):
            cin, cout = ch // 2**i, ch // 2 ** (i + 1)
            ups.append(nn.ConvTranspose2d(cin, cout, (1, k), (1, rate),
                                          padding=(0, (k - rate) // 2)))
            blocks.extend(DilatedResBlock(cout, rk, dil) for rk, dil in
                          zip(cfg.resblock_kernels, cfg.resblock_dilations, strict=True))
        self.ups = nn.ModuleList(ups)
        self.rates = tuple(cfg.upsample_rates)
        self.resblocks = nn.ModuleList(blocks)
        self.n_kernels = len(cfg.resblock_kernels)
        self.conv_post = _same_conv2d(ch // 2 ** len(ups), 1, 7, bias=False)
        self._mean_scale = 1.0 / self.n_kernels
        #: Input steps of the last stage per chunk, and context on each side (see forward).
        self.chunk = 8192
        self.overlap = 32

    @torch.no_grad()
    def fold_block_mean(self) -> None:
        """Scale the convolutions that follow each block mean by ``1 / n`` (once)."""
        if self._mean_scale == 1.0:
            return
        for conv in [*self.ups[1:], self.conv_post]:
            conv.weight.mul_(self._mean_scale)
        self._mean_scale = 1.0

    def _stage(self, i: int, x: torch.Tensor, valid: int) -> tuple[torch.Tensor, int]:
        """Upsampling stage ``i``: returns the (unscaled) sum of its residual blocks."""
        if i and self._mean_scale != 1.0:
            x = x * self._mean_scale
        x = self.ups[i](_zero_tail(F.leaky_relu(x, 0.1), valid))
        valid *= self.rates[i]
        x_act = _zero_tail(F.leaky_relu(x, 0.1), valid)
        n = self.n_kernels
        acc = None
        for block in self.resblocks[i * n: (i + 1) * n]:
            y = block(x, x_act, valid)
            acc = y if acc is None else acc.add_(y)
        return acc, valid

    def _post(self, x: torch.Tensor, valid: int) -> torch.Tensor:
        if self._mean_scale != 1.0:
            x = x * self._mean_scale
        x = self.conv_post(_zero_tail(F.leaky_relu(x, inplace=True), valid))
        return torch.tanh(x[0, 0, 0, :valid])

    def forward(self, x: torch.Tensor, valid: int) -> torch.Tensor:
        """``(1, C, 1, T)`` latent frames, of which the first ``valid`` are real, ->
        ``(valid * hop,)`` samples.

        The last stage, whose tensors are the widest in time, runs in overlapping time chunks
        of :attr:`chunk` input steps: each chunk carries at least :attr:`overlap` steps of
        context on each side (more than the stage's receptive field) or reaches the signal's
        end, so the kept samples are those of a whole-signal run, while peak memory stays
        bounded and the working set fits the cache.
        """
        x = self.conv_pre(_zero_tail(x, valid))
        last = len(self.ups) - 1
        for i in range(last):
            x, valid = self._stage(i, x, valid)
        width = self.chunk + 2 * self.overlap
        if valid <= width:
            return self._post(*self._stage(last, x, valid))
        rate = self.rates[last]
        pieces = []
        for start in range(0, valid, self.chunk):
            end = min(start + self.chunk, valid)
            # Every window has the same width (one kernel shape); the first and last windows
            # lean on the true signal ends instead of carrying context past them.
            lo = min(max(0, start - self.overlap), valid - width)
            y = self._post(*self._stage(last, x[..., lo: lo + width], width))
            pieces.append(y[(start - lo) * rate: (end - lo) * rate])
        return torch.cat(pieces)


# --------------------------------------------------------------------------- the whole voice
class VitsVoice(nn.Module):
    """Phoneme ids -> waveform for one sentence (batch 1).

    The flow and the decoder run on ``(1, C, 1, T)`` channels-last tensors; with ``bucketing``
    on, ``T`` is rounded up by :func:`bucket_length` (padding masked, results unchanged) so that
    CPU kernels generated for one length serve many sentences.
    """

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bucketing = True
        self.enc_p = TextEncoder(cfg)
        self.dp = StochasticDurationPredictor(cfg)
        self.flow = CouplingFlow(cfg)
        self.dec = HifiGanDecoder(cfg)

    def durations(self, ids: torch.Tensor, noise_w: float, length_scale: float,
                  generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode ``ids`` ``(1, t)``; return prior mean, log-scale and integer frame counts."""
        x, m, logs = self.enc_p(ids)
        noise = torch.randn(1, 2, x.shape[-1], generator=generator, device=x.device,
                            dtype=x.dtype) * noise_w
        logw = self.dp(x, noise)
        frames = torch.ceil(torch.exp(logw) * length_scale)[0, 0].long()
        return m, logs, frames

    def forward(self, ids: torch.Tensor, noise_scale: float = 0.667, length_scale: float = 1.0,
                noise_w: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
        """Synthesize one sentence; returns float audio ``(samples,)`` in [-1, 1]."""
        m, logs, frames = self.durations(ids, noise_w, length_scale, generator)
        if int(frames.sum()) < 1:
            frames = torch.ones_like(frames)
        m = torch.repeat_interleave(m, frames, dim=2)
        logs = torch.repeat_interleave(logs, frames, dim=2)
        eps = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
        z = m + eps * torch.exp(logs) * noise_scale
        valid = z.shape[-1]
        if self.bucketing:
            z = F.pad(z, (0, bucket_length(valid) - valid))
        z = z[:, :, None, :].contiguous(memory_format=torch.channels_last)
        return self.dec(self.flow.inverse(z, valid), valid)
