"""Analytic memory of one twin synthesis, from shapes and lengths alone.

peak = weights + the largest working set of any phase, where a phase is one stage running on
one segment:

- LLM: its attention KV cache (``2 x layers x kv_heads x head_dim`` elements per token of the
  longest sequence) plus the prefill's activations (residual stream, norm, attention
  projections and the SwiGLU intermediates of one layer at a time). With the attention cache
  off there is no cache, but every step re-runs a prefill of the whole sequence.
- prompt encoder: one whisper layer over the prompt's frames, or the quantiser's scores
  against all 32,768 codes.
- flow: one DiT block on a batch of 2 (classifier-free guidance), plus the token features,
  condition and noisy mel that live through the 10 Euler steps.
- vocoder: the widest upsampling stage (24 kHz) or the inverse-STFT head (32 kHz).
- output: the finished segments' audio (float32) lives until the end, and joining the
  segments holds it twice.

Attention scores are not counted: the fused attention kernels torch picks here (flash on the
CPU, flash or memory-efficient on CUDA) do not materialise the ``T x T`` matrix; where torch
falls back to its math kernel they would add ``heads x T x T`` values per layer. Element
counts are per phase, multiplied by the dtype's size (float32 where the code computes in
float32: norms' statistics, logits, STFTs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from glmtts.engines.twin.config import HOPS, TwinConfig
from glmtts.engines.twin.encoder import VQ_CHUNK_TOKENS
from glmtts.engines.twin.model import parameter_counts
from glmtts.engines.twin.text import SegmentPlan

FP32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of one synthesis.

    Attributes:
        weights_bytes: Every stage's parameters (both vocoders included).
        attention_cache_bytes: The LLM's attention KV cache when the peak is in the LLM
            (0 otherwise, and when the attention cache is off).
        activation_bytes: Everything else alive at the peak: activations of the peaking
            phase and the finished segments' audio.
        phase: Where the peak is: ``"prompt_encoder"``, ``"llm"``, ``"flow"``, ``"vocoder"``
            or ``"output"`` (joining the segments).
    """

    weights_bytes: int
    attention_cache_bytes: int
    activation_bytes: int
    phase: str

    @property
    def total_bytes(self) -> int:
        """Weights + attention cache + activations."""
        return self.weights_bytes + self.attention_cache_bytes + self.activation_bytes

    @property
    def transient_bytes(self) -> int:
        """What the synthesis adds on top of the loaded weights."""
        return self.total_bytes - self.weights_bytes


def weights_bytes(config: TwinConfig, dtype: torch.dtype) -> int:
    """Bytes of all parameters at ``config.scale`` in ``dtype``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(parameter_counts(config.scale).values()) * itemsize


def llm_activation_bytes(config: TwinConfig, tokens: int, itemsize: int) -> int:
    """One prefill of ``tokens`` positions: the residual stream and norm output (2 H), then the
    larger of attention (q, rotated q and k, k, v, output: ~4 H + 4 kv) and the SwiGLU MLP
    (three intermediates live at once: 3 I, and its output H), plus the norm's float32
    statistics (H)."""
    d = config.decoder
    kv = d.kv_heads * d.head_dim
    attention = 4 * d.hidden + 4 * kv
    mlp = 3 * d.intermediate + d.hidden
    return tokens * ((2 * d.hidden + max(attention, mlp)) * itemsize + d.hidden * FP32)


def encoder_activation_bytes(config: TwinConfig, prompt_tokens: int, itemsize: int) -> int:
    """Over ``2 x prompt_tokens`` positions (50 per second): the larger of one whisper layer
    and the quantiser's scores against every code (two ``8 x 32768`` matrices), plus the
    residual stream and pooled features alive around them (~4 d per position)."""
    e = config.encoder
    positions = 2 * prompt_tokens
    layer = positions * (4 * e.d_model + 2 * e.ffn)
    quantiser = 2 * min(prompt_tokens, VQ_CHUNK_TOKENS) * e.codebook
    return (max(layer, quantiser) + 4 * positions * e.d_model) * itemsize


def flow_activation_bytes(config: TwinConfig, tokens: int, itemsize: int) -> int:
    """Flow on ``tokens`` speech tokens (prompt + new): ``2 x tokens`` frames, batch 2. Live
    through the steps: token features, condition, noisy mel and velocity; inside one DiT
    block: residual, modulated input, q, k, v, rotated q and k with their temporaries,
    attention output (~11 W), or the MLP's two ``ff_mult x W`` intermediates."""
    f = config.flow
    rows = 2 * (2 * tokens)
    resident = rows * (f.text_dim + 4 * f.mel_dim)
    block = rows * max(11 * f.width, (3 + 2 * f.ff_mult) * f.width)
    text_blocks = rows * 3 * 2 * f.text_dim  # ConvNeXt intermediates during token embedding
    return (resident + max(block, text_blocks)) * itemsize


def vocoder_activation_bytes(config: TwinConfig, frames: int, sample_rate: int,
                             itemsize: int) -> int:
    """Vocoder on ``frames`` mel frames (calibrated on this module's own code by counting live
    tensors). 24 kHz: the larger of the widest upsampling stage's residual blocks (~6.5 x
    channels x length: input, running sum, convolution outputs and activations) and the
    float32 harmonic source (~26 values per output sample). 32 kHz: the inverse STFT over
    ``n_fft + 2`` values per frame (head output, magnitude, phase, complex spectrum, frames:
    ~3 float32 each)."""
    samples = frames * HOPS[sample_rate]
    if sample_rate == 24000:
        h = config.hift
        channels, length, widest = h.channels, frames, 0
        for r in h.upsample_rates:
            channels //= 2
            length *= r
            widest = max(widest, channels * length)
        return max(13 * widest * itemsize // 2, 26 * samples * FP32)
    v = config.vocos
    backbone = frames * (2 * v.dim + 2 * v.intermediate) * itemsize
    return max(backbone, frames * (v.n_fft + 2) * (itemsize + 2 * FP32))


def estimate_memory(config: TwinConfig, dtype: torch.dtype, plan: Sequence[SegmentPlan],
                    sample_rate: int, *, attention_cache: bool = True) -> MemoryEstimate:
    """Peak memory of a synthesis whose LLM calls are ``plan`` (see
    :func:`glmtts.engines.twin.text.plan_segments`), at ``sample_rate``.

    Finished segments' audio (float32) stays until the segments are joined, so it adds to
    every later phase, and the join itself holds the segments and the result."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_token = config.attention_cache_bytes_per_token(dtype)
    reference = plan[0].prompt_speech_tokens if plan else 0  # the first has no history
    # phase -> (attention cache, other bytes) at the phase's largest.
    best: dict[str, tuple[int, int]] = {
        "prompt_encoder": (0, encoder_activation_bytes(config, reference, itemsize))}

    def keep(phase: str, cache: int, other: int) -> None:
        if cache + other > sum(best.get(phase, (0, -1))):
            best[phase] = (cache, other)

    done = 0  # bytes of finished segments' audio
    for p in plan:
        if attention_cache:
            keep("llm", per_token * p.sequence_tokens,
                 llm_activation_bytes(config, p.input_tokens, itemsize) + done)
        else:
            keep("llm", 0, llm_activation_bytes(config, p.sequence_tokens - 1, itemsize) + done)
        keep("flow", 0, flow_activation_bytes(config, reference + p.new_tokens, itemsize) + done)
        frames = 2 * p.new_tokens
        keep("vocoder", 0,
             vocoder_activation_bytes(config, frames, sample_rate, itemsize) + done)
        done += frames * HOPS[sample_rate] * FP32
    keep("output", 0, 2 * done)
    phase = max(best, key=lambda k: sum(best[k]))
    cache, activation = best[phase]
    return MemoryEstimate(weights_bytes(config, dtype), cache, activation, phase)
