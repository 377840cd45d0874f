"""The whole twin: every stage in one module, built with random weights from a seed.

:func:`build_model` builds on the ``meta`` device first (no memory), sets the dtype there, and
only then allocates on the target device and fills the weights in place, so a load allocates
the weights once, in their final dtype. ``build_model(config, device="meta")`` stops before
allocating: parameter counts and shapes cost nothing.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

from glmtts.engines.twin.config import TwinConfig
from glmtts.engines.twin.encoder import PromptEncoder
from glmtts.engines.twin.flow import Flow
from glmtts.engines.twin.llm import Decoder
from glmtts.engines.twin.vocoder import HiftVocoder, VocosVocoder

#: Initial standard deviation of the LLM's weights (Llama's ``initializer_range``).
LLM_INIT_STD = 0.02
SPEAKER_DIM = 192


class TwinModel(nn.Module):
    """LLM, prompt encoder, speaker projection, flow and one vocoder per output rate.

    ``speaker`` stands in for upstream's CAM++ speaker encoder (an ONNX model run by ONNX
    Runtime, whose memory torch cannot see): a projection of the prompt's mean mel to 192
    dimensions.
    """

    def __init__(self, config: TwinConfig) -> None:
        super().__init__()
        self.config = config
        self.llm = Decoder(config.decoder)
        self.prompt_encoder = PromptEncoder(config.encoder)
        self.speaker = nn.Linear(config.flow.mel_dim, SPEAKER_DIM, bias=False)
        self.flow = Flow(config.flow)
        self.vocoders = nn.ModuleDict({
            "24000": HiftVocoder(config.hift, config.flow.mel_dim),
            "32000": VocosVocoder(config.vocos, config.flow.mel_dim),
        })

    def vocoder(self, sample_rate: int) -> nn.Module:
        return self.vocoders[str(sample_rate)]


def _fill(model: nn.Module, seed: int) -> None:
    """Seeded random weights: N(0, 0.02) in the LLM, N(0, 1/fan_in) elsewhere; norms' gains
    1, biases 0."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                std = LLM_INIT_STD if name.startswith("llm.") else 1 / math.sqrt(p[0].numel())
                p.normal_(0.0, std, generator=generator)
            elif name.endswith(("bias", "beta", "grn_gamma")):
                p.zero_()
            else:
                p.fill_(1.0)


def build_model(config: TwinConfig, *, device: str | torch.device = "meta",
                dtype: torch.dtype = torch.float32, seed: int = 0) -> TwinModel:
    """The twin with seeded random weights on ``device`` (``"meta"``: shapes only)."""
    with torch.device("meta"):
        model = TwinModel(config)
    model = model.to(dtype)
    if torch.device(device).type != "meta":
        model = model.to_empty(device=device)
        _fill(model, seed)
    return model.requires_grad_(False).eval()


@lru_cache(maxsize=16)
def parameter_counts(scale: float = 1.0) -> dict[str, int]:
    """Parameters per stage at ``scale``, counted on the meta device (no memory used).

    Keys: ``llm``, ``prompt_encoder``, ``flow``, ``vocoder_24000``, ``vocoder_32000``,
    ``speaker``.
    """
    model = build_model(TwinConfig.at_scale(scale))
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("llm", "prompt_encoder", "flow", "speaker")}
    for rate, vocoder in model.vocoders.items():
        counts[f"vocoder_{rate}"] = sum(p.numel() for p in vocoder.parameters())
    return counts
