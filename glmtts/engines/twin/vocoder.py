"""The two vocoder branches: one network per output rate, as upstream has.

- 24 kHz (:class:`HiftVocoder`, HiFT-shaped): an F0 predictor drives a harmonic sine source;
  transposed convolutions upsample the mel 8 x 5 x 3 with multi-kernel residual blocks, the
  source is mixed in at every stage, and an inverse STFT (n_fft 16, hop 4) makes the samples:
  480 per mel frame.
- 32 kHz (:class:`VocosVocoder`, Vocos-shaped): ConvNeXt blocks on the mel frames and a head
  predicting magnitude and phase for an inverse STFT with n_fft 2560, hop 640.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from glmtts.engines.twin.config import HiftShape, VocosShape


def _istft(head: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """Samples from a ``(n_fft + 2, frames)`` head output (log-magnitude, phase halves)."""
    bins = n_fft // 2 + 1
    log_mag, phase = head.float()[:bins], head.float()[bins:]
    spec = torch.polar(torch.exp(log_mag.clamp(max=4.0)), math.pi * torch.sin(phase))
    window = torch.hann_window(n_fft, device=head.device)
    return torch.istft(spec, n_fft, hop, n_fft, window, center=True, length=length)


def _normalise(audio: torch.Tensor) -> torch.Tensor:
    audio = torch.nan_to_num(audio)
    return 0.5 * audio / audio.abs().max().clamp(min=1e-6)


class ResBlock(nn.Module):
    """Dilated convolutions with residual connections (one kernel size)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2)
            for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HiftVocoder(nn.Module):
    """Mel ``(frames, 80)`` -> ``frames x 480`` samples at 24 kHz."""

    sample_rate = 24000
    hop = 480

    def __init__(self, s: HiftShape, mel_dim: int = 80) -> None:
        super().__init__()
        self.shape = s
        f0 = [nn.Conv1d(mel_dim, s.f0_channels, 3, padding=1)]
        f0 += [nn.Conv1d(s.f0_channels, s.f0_channels, 3, padding=1)
               for _ in range(s.f0_layers - 1)]
        self.f0_convs = nn.ModuleList(f0)
        self.f0_out = nn.Linear(s.f0_channels, 1)
        self.source_mix = nn.Linear(s.harmonics + 1, 1)
        self.conv_pre = nn.Conv1d(mel_dim, s.channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.source_downs = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        spec_bins = s.n_fft + 2
        channels = s.channels
        rates = s.upsample_rates
        for i, r in enumerate(rates):
            pad = (r + 1) // 2
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, r + 2 * pad, r, pad))
            channels //= 2
            down = math.prod(rates[i + 1:])
            kernel = 2 * down if down > 1 else 1
            self.source_downs.append(nn.Conv1d(spec_bins, channels, kernel, down,
                                               padding=down // 2))
            self.resblocks.append(nn.ModuleList(
                ResBlock(channels, k, s.resblock_dilations) for k in s.resblock_kernels))
        self.conv_post = nn.Conv1d(channels, spec_bins, 7, padding=3)

    def _source(self, mel: torch.Tensor, samples: int) -> torch.Tensor:
        """Harmonic excitation from the predicted F0 ``(1, samples)``, as source spectrum
        frames ``(1, n_fft + 2, samples / hop)``."""
        h = mel
        for conv in self.f0_convs:
            h = F.elu(conv(h))
        f0 = 80.0 + 300.0 * torch.sigmoid(self.f0_out(h.transpose(1, 2)))  # Hz, (1, F, 1)
        f0 = F.interpolate(f0.transpose(1, 2).float(), size=samples, mode="nearest")[0, 0]
        phase = 2 * math.pi * torch.cumsum(f0 / self.sample_rate, dim=0)
        orders = torch.arange(1, self.shape.harmonics + 2, device=mel.device)
        harmonics = 0.1 * torch.sin(phase[:, None] * orders[None, :])  # (samples, H + 1)
        source = torch.tanh(self.source_mix(harmonics.to(mel.dtype)))[:, 0]
        n_fft, hop = self.shape.n_fft, self.shape.hop
        spec = torch.stft(source.float(), n_fft, hop, n_fft, torch.hann_window(
            n_fft, device=mel.device), center=True, return_complex=True)
        return torch.cat((spec.abs(), spec.angle()))[None, :, :samples // hop].to(mel.dtype)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        frames = mel.shape[0]
        samples = frames * self.hop
        m = mel.T[None]
        source = self._source(m, samples)
        x = self.conv_pre(m)
        for up, down, blocks in zip(self.ups, self.source_downs, self.resblocks, strict=True):
            x = up(F.leaky_relu(x, 0.1))
            s = down(source)[..., :x.shape[-1]]
            x = x + F.pad(s, (0, x.shape[-1] - s.shape[-1]))
            x = sum(block(x) for block in blocks) / len(blocks)
        head = self.conv_post(F.leaky_relu(x))[0]
        return _normalise(_istft(head, self.shape.n_fft, self.shape.hop, samples))


class VocosBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T, dim)
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))


class VocosVocoder(nn.Module):
    """Mel ``(frames, 80)`` -> ``frames x 640`` samples at 32 kHz."""

    sample_rate = 32000
    hop = 640

    def __init__(self, s: VocosShape, mel_dim: int = 80) -> None:
        super().__init__()
        self.shape = s
        self.embed = nn.Conv1d(mel_dim, s.dim, 7, padding=3)
        self.norm = nn.LayerNorm(s.dim, eps=1e-6)
        self.blocks = nn.ModuleList(VocosBlock(s.dim, s.intermediate) for _ in range(s.layers))
        self.final_norm = nn.LayerNorm(s.dim, eps=1e-6)
        self.head = nn.Linear(s.dim, s.n_fft + 2)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        frames = mel.shape[0]
        x = self.norm(self.embed(mel.T[None]).transpose(1, 2))
        for block in self.blocks:
            x = block(x)
        head = self.head(self.final_norm(x))[0].T  # (n_fft + 2, frames)
        return _normalise(_istft(head, self.shape.n_fft, self.shape.hop, frames * self.hop))


VOCODERS = {24000: HiftVocoder, 32000: VocosVocoder}
