"""The size of a VITS voice (see :mod:`glmtts.engines.piper.vits`)."""

from __future__ import annotations

import math
from dataclasses import dataclass


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
