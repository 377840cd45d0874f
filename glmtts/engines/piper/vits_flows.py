"""The stochastic duration predictor and the coupling flow of the VITS network (see
:mod:`glmtts.engines.piper.vits`)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from glmtts.engines.piper.vits_config import VitsConfig
from glmtts.engines.piper.vits_layers import (
    ChannelNorm,
    GemmConv1d,
    _same_conv,
    _same_conv2d,
    as_time_major,
    from_time_major,
    time_major_conv,
)


# --------------------------------------------------------------------------- duration predictor
class DilatedSeparableConvs(nn.Module):
    """Residual stack of dilated depth-wise convolutions (dilation = kernel ** i)."""

    def __init__(self, channels: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList(
            _same_conv(channels, channels, kernel, dilation=kernel**i, groups=channels)
            for i in range(n_layers))
        self.convs_1x1 = nn.ModuleList(GemmConv1d(channels, channels, 1) for _ in range(n_layers))
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
        self.pre = GemmConv1d(1, filter_channels, 1)
        self.convs = DilatedSeparableConvs(filter_channels, kernel, 3)
        self.proj = GemmConv1d(filter_channels, 3 * bins - 1, 1)

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
        self.pre = GemmConv1d(cfg.hidden, c, 1)
        self.convs = DilatedSeparableConvs(c, cfg.dp_kernel, 3)
        self.proj = GemmConv1d(c, c, 1)
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

    Works on time-major ``(T, C)`` signals (see :func:`time_major_conv`); rows past ``valid``
    are zeroed before every convolution wider than one step.
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
        h = self.hidden
        for i, (conv, rs) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            if x.shape[0] > valid:
                x[valid:] = 0
            a = time_major_conv(conv, x)
            y = time_major_conv(rs, torch.tanh(a[:, :h]).mul_(torch.sigmoid(a[:, h:])))
            if i < last:
                x = x + y[:, :h]
                y = y[:, h:]
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
        """``z``: time-major ``(T, C)``."""
        z0, z1 = z[:, : self.half], z[:, self.half:]
        shift = time_major_conv(self.post, self.enc(time_major_conv(self.pre, z0), valid))
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
        """Map prior samples ``(1, C, 1, T)`` (channels-last) to decoder latents of the same
        shape and layout; steps from ``valid`` on are padding (their values are undefined on
        return)."""
        z = as_time_major(z)
        for name in reversed(list(self.flows.keys())):
            z = self.flows[name].inverse(torch.flip(z, [1]), valid)
        return from_time_major(z)
