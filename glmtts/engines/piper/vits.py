"""A VITS text-to-speech network for inference only, written for Piper voices.

The modules mirror the parameter names of a Piper ONNX export (``enc_p.*``, ``dp.*``, ``flow.*``,
``dec.*``) so that weights load by name. Only the inference path exists: no posterior encoder, no
training-only flows, no dropout, and batch size 1 (one sentence at a time), which lets every mask
be dropped. Weight normalisation is already folded in the exported weights.

Architecture facts (Kim et al., 2021, "Conditional Variational Autoencoder with Adversarial
Learning for End-to-End Text-to-Speech"), sized for a Piper "medium" voice by :class:`VitsConfig`.
"""


from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from glmtts.engines.piper.vits_config import VitsConfig
from glmtts.engines.piper.vits_flows import CouplingFlow, StochasticDurationPredictor
from glmtts.engines.piper.vits_layers import (
    TextEncoder,
    _same_conv2d,
    _zero_tail,
    bucket_length,
)

__all__ = ["VitsConfig", "VitsVoice", "bucket_length"]


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

    def mark_folded(self) -> None:
        """Weights that were saved after :meth:`fold_block_mean` (the voice cache's) are
        folded already: only record it."""
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
        if valid <= self.chunk + 2 * self.overlap:
            return self._post(*self._stage(last, x, valid))
        # As many windows as chunks of at most `chunk` steps, of equal steps (so that little
        # is computed twice), each as wide as a bucket length (few kernel shapes).
        n = -(-valid // self.chunk)
        step = -(-valid // n)
        width = min(valid, bucket_length(step + 2 * self.overlap))
        rate = self.rates[last]
        pieces = []
        for start in range(0, valid, step):
            end = min(start + step, valid)
            # Every window has the same width (one kernel shape); the first and last windows
            # lean on the true signal ends instead of carrying context past them.
            lo = min(max(0, start - self.overlap), valid - width)
            y = self._post(*self._stage(last, x[..., lo: lo + width], width))
            pieces.append(y[(start - lo) * rate: (end - lo) * rate])
        return torch.cat(pieces)


class _SkipInit(TorchFunctionMode):
    """Within it (this thread only), ``torch.nn.init`` functions leave their tensor as it is.

    The ``meta`` device would skip the allocation as well, but initialising a meta tensor
    imports ``torch._dynamo`` and sympy (1.5 s, 70 MB)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


def _normal(rng: np.random.Generator, shape: tuple[int, ...], like: torch.Tensor
            ) -> torch.Tensor:
    """Standard normal float32 draws from ``rng``, as a tensor on ``like``'s device."""
    draws = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    return draws.to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------- the whole voice
class VitsVoice(nn.Module):
    """Phoneme ids -> waveform for one sentence (batch 1).

    The flow and the decoder run on ``(1, C, 1, T)`` channels-last tensors; with ``bucketing``
    on, the decoder's ``T`` is rounded up by :func:`bucket_length` (padding masked, results
    unchanged) so that CPU kernels generated for one length serve many sentences (the flow's
    matrix products need no such thing: it runs on the true length).
    """

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bucketing = True
        self.enc_p = TextEncoder(cfg)
        self.dp = StochasticDurationPredictor(cfg)
        self.flow = CouplingFlow(cfg)
        self.dec = HifiGanDecoder(cfg)

    @classmethod
    def for_weights(cls, cfg: VitsConfig) -> VitsVoice:
        """A voice whose parameters are left uninitialised, for weights that are all assigned
        next (``load_state_dict(..., assign=True)``, strict): skips about 0.1 s of random
        initialisation and never touches the pages of the placeholder tensors."""
        with _SkipInit():
            return cls(cfg)

    def durations(self, ids: torch.Tensor, noise_w: float, length_scale: float,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode ``ids`` ``(1, t)``; return prior mean, log-scale and integer frame counts."""
        x, m, logs = self.enc_p(ids)
        noise = _normal(rng, (1, 2, x.shape[-1]), x) * noise_w
        logw = self.dp(x, noise)
        frames = torch.ceil(torch.exp(logw) * length_scale)[0, 0].long()
        return m, logs, frames

    def forward(self, ids: torch.Tensor, noise_scale: float = 0.667, length_scale: float = 1.0,
                noise_w: float = 0.8, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Synthesize one sentence; returns float audio ``(samples,)`` in [-1, 1].

        The noise comes from ``rng`` (NumPy's, so that :mod:`~glmtts.engines.piper.vits_numpy`
        draws the same numbers for the same seed): the durations' first, then the prior's.
        """
        rng = np.random.default_rng() if rng is None else rng
        m, logs, frames = self.durations(ids, noise_w, length_scale, rng)
        if int(frames.sum()) < 1:
            frames = torch.ones_like(frames)
        m = torch.repeat_interleave(m, frames, dim=2)
        logs = torch.repeat_interleave(logs, frames, dim=2)
        eps = _normal(rng, tuple(m.shape), m)
        z = m + eps * torch.exp(logs) * noise_scale
        valid = z.shape[-1]
        # the flow's matrix products keep nothing per shape: it runs on the true length
        z = self.flow.inverse(z[:, :, None, :].contiguous(memory_format=torch.channels_last),
                              valid)
        if self.bucketing:
            z = F.pad(z, (0, bucket_length(valid) - valid)).contiguous(
                memory_format=torch.channels_last)
        return self.dec(z, valid)
