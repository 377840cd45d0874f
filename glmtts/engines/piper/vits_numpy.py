"""The VITS network of :mod:`glmtts.engines.piper.vits` in NumPy, for one-off CPU syntheses.

A ``glmtts synth --cpu`` process speaks one text and exits; importing torch alone takes it
1.5-2 s and about 220 MB, far more than the synthesis itself. This module runs the same
network, with the same weights (the voice cache's, see :func:`arrays_from_state`) and the same
random draws, on NumPy and its BLAS: a cold process needs no torch at all. It is the inference
path only, batch 1, float32, and it runs on the true length (no buckets, no windows, no tail
masking; only the decoder's last stage runs in windows, for memory), so it needs none of the
torch module's other shortcuts. Outputs agree with the torch module to within float rounding
(a test compares them), except where rounding moves a phoneme's frame count (the ceiling of a
predicted duration) across an integer: then that sentence's length and later draws differ, as
they would between two BLAS libraries; not seen on the test texts.

Layout: ``(channels, time)`` arrays. Convolutions are matrix products over stacked shifted
views of the input (in time slices, so that the stacked copy stays small).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from glmtts.engines.piper.vits_config import VitsConfig

F32 = np.float32
#: Time steps per matrix product of a wide convolution (bounds its stacked copy).
SLICE = 8192
#: The decoder's last stage runs in windows of at most this many input steps, each with at
#: least OVERLAP steps of context on both sides (its receptive field is about 13), as the torch
#: decoder does: memory stays bounded for long sentences.
WINDOW, OVERLAP = 8192, 32


def arrays_from_state(state: dict) -> dict[str, np.ndarray]:
    """The torch module's state dict as C-ordered float32 arrays, the ``(out, in, 1, k)``
    weights of its 2-D convolutions as ``(out, in, k)``."""
    out = {}
    for name, value in state.items():
        a = np.ascontiguousarray(value.detach().cpu().numpy(), dtype=F32)
        if a.ndim == 4 and a.shape[2] == 1:
            a = np.ascontiguousarray(a[:, :, 0, :])
        out[name] = a
    return out


# --------------------------------------------------------------------------- operations
def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dilation: int = 1
           ) -> np.ndarray:
    """``(in, T)`` -> ``(out, T)``: a convolution with "same" zero padding."""
    cout, cin, k = w.shape
    t = x.shape[1]
    if k % 2 == 0:
        raise ValueError(f"a 'same' convolution needs an odd kernel, not {k}")
    if k == 1:
        y = w[:, :, 0] @ x
    else:
        pad = dilation * (k - 1) // 2
        xp = np.pad(x, ((0, 0), (pad, pad)))
        s0, s1 = xp.strides
        view = as_strided(xp, (cin, k, t), (s0, dilation * s1, s1), writeable=False)
        wm = w.reshape(cout, cin * k)
        if t <= SLICE:
            y = wm @ view.reshape(cin * k, t)
        else:
            y = np.empty((cout, t), F32)
            for lo in range(0, t, SLICE):
                hi = min(t, lo + SLICE)
                y[:, lo:hi] = wm @ view[:, :, lo:hi].reshape(cin * k, hi - lo)
    if b is not None:
        y += b[:, None]
    return y


def depthwise_conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, dilation: int) -> np.ndarray:
    """One filter per channel (``w``: ``(C, 1, k)``), "same" zero padding."""
    k = w.shape[2]
    t = x.shape[1]
    if k % 2 == 0:
        raise ValueError(f"a 'same' convolution needs an odd kernel, not {k}")
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, pad)))
    y = w[:, 0, 0, None] * xp[:, :t]
    for j in range(1, k):
        y += w[:, 0, j, None] * xp[:, j * dilation: j * dilation + t]
    return y + b[:, None]


def conv_transpose1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int
                     ) -> np.ndarray:
    """``(in, T)`` -> ``(out, (T - 1) * stride + k - 2 * padding)`` (``w``: ``(in, out, k)``):
    one matrix product, then the taps added into place."""
    cin, cout, k = w.shape
    t = x.shape[1]
    taps = (w.reshape(cin, cout * k).T @ x).reshape(cout, k, t)
    full = (t - 1) * stride + k
    if k % stride == 0:  # tap i * stride + s of step n lands on (n + i) * stride + s
        q = k // stride
        y = np.zeros((cout, t + q - 1, stride), F32)
        for i in range(q):
            y[:, i: i + t, :] += taps[:, i * stride: (i + 1) * stride, :].transpose(0, 2, 1)
        y = y.reshape(cout, full)
    else:
        y = np.zeros((cout, full), F32)
        for j in range(k):
            y[:, j: j + (t - 1) * stride + 1: stride] += taps[:, j, :]
    y = y[:, padding: full - padding]
    return y + b[:, None]


def leaky_relu(x: np.ndarray, slope: float) -> np.ndarray:
    return np.maximum(x, x * F32(slope))


def channel_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
                 ) -> np.ndarray:
    mean = x.mean(axis=0, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=0, keepdims=True)
    return centred / np.sqrt(var + F32(eps)) * gamma[:, None] + beta[:, None]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function (Numerical Recipes' ``erfcc``, fractional error below 1.2e-7)."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (
        0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (
            1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    return (np.sign(x) * (1.0 - t * np.exp(poly))).astype(F32)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, torch's default."""
    return F32(0.5) * x * (F32(1) + erf(x * F32(1 / math.sqrt(2))))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(F32(0), x)


# --------------------------------------------------------------------------- the network
class NumpyVits:
    """Phoneme ids -> waveform for one sentence, from :func:`arrays_from_state`'s weights
    (the decoder's block mean folded in, as the voice cache keeps them)."""

    def __init__(self, cfg: VitsConfig, weights: dict[str, np.ndarray]) -> None:
        self.cfg = cfg
        self.w = weights

    def _conv(self, name: str, x: np.ndarray, dilation: int = 1) -> np.ndarray:
        return conv1d(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"), dilation)

    def _norm(self, name: str, x: np.ndarray) -> np.ndarray:
        return channel_norm(x, self.w[f"{name}.gamma"], self.w[f"{name}.beta"])

    # ------------------------------------------------------------------ text encoder
    def _attention(self, p: str, x: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        c, t = x.shape
        h, d, win = cfg.n_heads, cfg.hidden // cfg.n_heads, cfg.window_size
        span = 2 * win + 1
        q = self._conv(f"{p}.conv_q", x).reshape(h, d, t).transpose(0, 2, 1) * F32(d ** -0.5)
        k = self._conv(f"{p}.conv_k", x).reshape(h, d, t)
        v = self._conv(f"{p}.conv_v", x).reshape(h, d, t).transpose(0, 2, 1)
        scores = q @ k
        band = q @ self.w[f"{p}.emb_rel_k"][0].T  # (h, t, 2w+1): offset j - i + w
        padded = np.pad(band, ((0, 0), (0, 0), (0, t)))
        flat = padded.reshape(h, t * (t + span))[:, : t * (t + span - 1)]
        scores += flat.reshape(h, t, t + span - 1)[:, :, win: win + t]
        probs = softmax(scores)
        padded = np.pad(probs, ((0, 0), (0, 0), (win, win))).reshape(h, t * (t + 2 * win))
        bands = np.pad(padded, ((0, 0), (0, t))).reshape(h, t, t + span)[:, :, :span]
        out = probs @ v + bands @ self.w[f"{p}.emb_rel_v"][0]
        return self._conv(f"{p}.conv_o", np.ascontiguousarray(out.transpose(0, 2, 1))
                          .reshape(c, t))

    def encode(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        emb = self.w["enc_p.emb.weight"][np.asarray(ids, dtype=np.int64)]
        x = np.ascontiguousarray((emb * F32(math.sqrt(cfg.hidden))).T)
        e = "enc_p.encoder"
        for i in range(cfg.n_layers):
            x = self._norm(f"{e}.norm_layers_1.{i}", x + self._attention(f"{e}.attn_layers.{i}", x))
            ffn = f"{e}.ffn_layers.{i}"
            y = self._conv(f"{ffn}.conv_2", np.maximum(self._conv(f"{ffn}.conv_1", x), F32(0)))
            x = self._norm(f"{e}.norm_layers_2.{i}", x + y)
        stats = self._conv("enc_p.proj", x)
        return x, stats[: cfg.inter_channels], stats[cfg.inter_channels:]

    # ------------------------------------------------------------------ duration predictor
    def _separable(self, p: str, x: np.ndarray, cond: np.ndarray | None = None) -> np.ndarray:
        if cond is not None:
            x = x + cond
        k, w = self.cfg.dp_kernel, self.w
        for i in range(3):
            y = depthwise_conv1d(x, w[f"{p}.convs_sep.{i}.weight"], w[f"{p}.convs_sep.{i}.bias"],
                                 k**i)
            y = gelu(self._norm(f"{p}.norms_1.{i}", y))
            y = gelu(self._norm(f"{p}.norms_2.{i}", self._conv(f"{p}.convs_1x1.{i}", y)))
            x = x + y
        return x

    def _spline_flow(self, p: str, z: np.ndarray, cond: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        kb = cfg.spline_bins
        params = self._conv(f"{p}.proj", self._separable(f"{p}.convs",
                                                         self._conv(f"{p}.pre", z[:1]), cond)).T
        scale = F32(cfg.dp_filter ** -0.5)
        z1 = inverse_rq_spline(z[1], params[:, :kb] * scale, params[:, kb: 2 * kb] * scale,
                               params[:, 2 * kb:], cfg.spline_tail)
        return np.concatenate([z[:1], z1[None]], axis=0)

    def log_durations(self, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        cond = self._conv("dp.proj", self._separable("dp.convs", self._conv("dp.pre", x)))
        z = noise
        for i in range(2 * self.cfg.dp_flows - 1, 2, -2):
            z = self._spline_flow(f"dp.flows.{i}", z[::-1], cond)
        z = z[::-1]
        z = (z - self.w["dp.flows.0.m"]) * np.exp(-self.w["dp.flows.0.logs"])
        return z[:1]

    # ------------------------------------------------------------------ flow and decoder
    def _coupling(self, p: str, z: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        half, hidden = cfg.inter_channels // 2, cfg.hidden
        x = self._conv(f"{p}.pre", z[:half])
        skip = None
        for i in range(cfg.flow_wn_layers):
            a = self._conv(f"{p}.enc.in_layers.{i}", x)
            gated = np.tanh(a[:hidden]) * (F32(1) / (F32(1) + np.exp(-a[hidden:])))
            y = self._conv(f"{p}.enc.res_skip_layers.{i}", gated)
            if i < cfg.flow_wn_layers - 1:
                x = x + y[:hidden]
                y = y[hidden:]
            skip = y if skip is None else skip + y
        return np.concatenate([z[:half], z[half:] - self._conv(f"{p}.post", skip)], axis=0)

    def flow_inverse(self, z: np.ndarray) -> np.ndarray:
        for i in reversed(range(self.cfg.flow_layers)):
            z = self._coupling(f"flow.flows.{2 * i}", np.ascontiguousarray(z[::-1]))
        return z

    def _stage(self, i: int, x: np.ndarray) -> np.ndarray:
        """Upsampling stage ``i``: the sum of its residual blocks (their mean is folded into
        the next convolution's weights)."""
        cfg, w = self.cfg, self.w
        rate, k = cfg.upsample_rates[i], cfg.upsample_kernels[i]
        x = conv_transpose1d(leaky_relu(x, 0.1), w[f"dec.ups.{i}.weight"],
                             w[f"dec.ups.{i}.bias"], rate, (k - rate) // 2)
        x_act = leaky_relu(x, 0.1)
        n = len(cfg.resblock_kernels)
        acc = None
        for j, dilations in enumerate(cfg.resblock_dilations):
            block = f"dec.resblocks.{i * n + j}.convs"
            y = x + self._conv(f"{block}.0", x_act, dilations[0])
            for c, dil in enumerate(dilations[1:], start=1):
                y += self._conv(f"{block}.{c}", leaky_relu(y, 0.1), dil)
            if acc is None:
                acc = y
            else:
                acc += y
        assert acc is not None
        return acc

    def _post(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(self._conv("dec.conv_post", leaky_relu(x, 0.01))[0])

    def decode(self, x: np.ndarray) -> np.ndarray:
        x = self._conv("dec.conv_pre", x)
        last = len(self.cfg.upsample_rates) - 1
        for i in range(last):
            x = self._stage(i, x)
        valid = x.shape[1]
        if valid <= WINDOW + 2 * OVERLAP:
            return self._post(self._stage(last, x))
        n = -(-valid // WINDOW)
        step = -(-valid // n)
        width = step + 2 * OVERLAP
        rate = self.cfg.upsample_rates[last]
        pieces = []
        for start in range(0, valid, step):
            end = min(start + step, valid)
            lo = min(max(0, start - OVERLAP), valid - width)
            y = self._post(self._stage(last, x[:, lo: lo + width]))
            pieces.append(y[(start - lo) * rate: (end - lo) * rate])
        return np.concatenate(pieces)

    def __call__(self, ids: list[int], rng: np.random.Generator, noise_scale: float,
                 length_scale: float, noise_w: float) -> np.ndarray:
        """One sentence: the same draws from ``rng``, in the same order, as the torch module's
        :meth:`~glmtts.engines.piper.vits.VitsVoice.forward`."""
        x, m, logs = self.encode(ids)
        noise = rng.standard_normal((2, x.shape[1]), dtype=F32) * F32(noise_w)
        logw = self.log_durations(x, noise)
        frames = np.ceil(np.exp(logw) * F32(length_scale))[0].astype(np.int64)
        if frames.sum() < 1:
            frames = np.ones_like(frames)
        m = np.repeat(m, frames, axis=1)
        logs = np.repeat(logs, frames, axis=1)
        eps = rng.standard_normal(m.shape, dtype=F32)
        z = m + eps * np.exp(logs) * F32(noise_scale)
        return self.decode(self.flow_inverse(z))


def inverse_rq_spline(y: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                      derivs: np.ndarray, bound: float, min_size: float = 1e-3,
                      min_deriv: float = 1e-3) -> np.ndarray:
    """NumPy twin of :func:`glmtts.engines.piper.vits_flows._inverse_rq_spline`."""
    bins = widths.shape[-1]
    inside = (y >= -bound) & (y <= bound)
    yc = np.clip(y, -bound, bound)

    def knots(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = F32(min_size) + F32(1 - min_size * bins) * softmax(raw)
        cum = np.pad(np.cumsum(size, axis=-1), ((0, 0), (1, 0)))
        cum = F32(2 * bound) * cum - F32(bound)
        cum[:, 0] = -bound
        cum[:, -1] = bound
        return cum, cum[:, 1:] - cum[:, :-1]

    cumw, w = knots(widths)
    cumh, h = knots(heights)
    edge = F32(math.log(math.expm1(1 - min_deriv)))
    d = F32(min_deriv) + softplus(np.pad(derivs, ((0, 0), (1, 1)), constant_values=edge))
    edges = cumh.copy()
    edges[:, -1] += F32(1e-6)
    idx = np.clip(np.sum(yc[:, None] >= edges, axis=-1) - 1, 0, bins - 1)[:, None]

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, idx, axis=-1)[:, 0]

    x0, bw, y0, bh = pick(cumw), pick(w), pick(cumh), pick(h)
    d0, d1 = pick(d[:, :-1]), pick(d[:, 1:])
    delta = bh / bw
    dy = yc - y0
    a = dy * (d0 + d1 - 2 * delta) + bh * (delta - d0)
    b = bh * d0 - dy * (d0 + d1 - 2 * delta)
    c = -delta * dy
    disc = np.maximum(b * b - 4 * a * c, F32(0))
    root = (2 * c) / (-b - np.sqrt(disc))
    return np.where(inside, root * bw + x0, y).astype(F32)
