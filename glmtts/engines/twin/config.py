"""Shapes of the GLM-TTS memory twin, at full size and scaled down for CPU runs.

The full-size numbers are upstream GLM-TTS's published stage shapes (see
``shared/reference/glmtts-upstream.md``). :meth:`TwinConfig.at_scale` shrinks widths and depths
by a factor while keeping what gives the model its meaning: the vocabularies (98,304 LLM tokens,
32,768 speech tokens, 100,001 flow tokens), the mel sizes, the frame and token rates, and the
vocoders' hop sizes. Head sizes stay multiples of 8 and at least 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Output rate -> samples per mel frame (both 50 mel frames per second).
HOPS = {24000: 480, 32000: 640}
SPEECH_TOKENS_PER_SECOND = 25
MEL_FRAMES_PER_SECOND = 50
#: Size of the speech-token codebook (``<|audio_0|>`` .. ``<|audio_32767|>``).
SPEECH_CODEBOOK = 32768
#: Where the speech tokens sit in the LLM vocabulary (the last 32,768 ids).
AUDIO_TOKEN_BASE = 98304 - SPEECH_CODEBOOK
#: Text tokens use ids below this; special tokens sit just above it.
TEXT_VOCAB = 64000
BEGIN_OF_AUDIO = TEXT_VOCAB + 1
#: Prompt audio is read at this rate for the speech tokenizer (whisper front-end).
ENCODER_SAMPLE_RATE = 16000

@dataclass(frozen=True)
class DecoderShape:
    """The Llama-style speech-token LLM (tied input/output embedding, no biases)."""

    hidden: int = 2048
    layers: int = 28
    heads: int = 16
    kv_heads: int = 4
    head_dim: int = 128
    intermediate: int = 6144
    vocab: int = 98304
    rope_theta: float = 10000.0
    max_positions: int = 8192
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class EncoderShape:
    """The prompt-audio speech tokenizer: whisper-large-v3's encoder cut at layer 16, pooled by
    2 and vector-quantised into 32,768 codes (25 tokens per second of audio)."""

    d_model: int = 1280
    layers: int = 16
    heads: int = 20
    ffn: int = 5120
    n_mels: int = 128
    max_positions: int = 1500
    pooling: int = 2
    codebook: int = SPEECH_CODEBOOK


@dataclass(frozen=True)
class FlowShape:
    """The flow-matching DiT that turns speech tokens into an 80-bin mel spectrogram."""

    width: int = 768
    depth: int = 18
    heads: int = 12
    head_dim: int = 64
    ff_mult: int = 2
    text_dim: int = 512
    text_blocks: int = 4
    text_vocab: int = 100000  # + 1 filler id: a 100,001-row embedding
    mel_dim: int = 80
    speaker_dim: int = 192
    time_dim: int = 256
    conv_pos_kernel: int = 31
    conv_pos_groups: int = 16
    steps: int = 10
    cfg_strength: float = 0.7


@dataclass(frozen=True)
class HiftShape:
    """The 24 kHz vocoder: HiFi-GAN upsampling (8 x 5 x 3) with a harmonic source, then an
    inverse STFT (n_fft 16, hop 4): 480 samples per mel frame."""

    channels: int = 512
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    f0_channels: int = 512
    f0_layers: int = 5
    harmonics: int = 8
    n_fft: int = 16
    hop: int = 4


@dataclass(frozen=True)
class VocosShape:
    """The 32 kHz vocoder: a ConvNeXt backbone on mel frames and an inverse-STFT head
    (n_fft 2560, hop 640)."""

    dim: int = 512
    layers: int = 8
    intermediate: int = 1536
    n_fft: int = 2560
    hop: int = 640


def _round8(value: float, floor: int = 16) -> int:
    return max(floor, 8 * round(value / 8))


def _depth(layers: int, scale: float) -> int:
    return max(1, int(layers * scale + 0.5))


def _heads(heads: int, head_dim: int, scale: float, min_heads: int, group: int = 1
           ) -> tuple[int, int]:
    """Scale an attention block's width: drop heads first (keeping ``head_dim``), and once
    ``min_heads`` is reached shrink the head size instead. ``heads`` stays a multiple of
    ``group`` (queries per key/value head)."""
    wanted = heads * scale
    if wanted >= min_heads:
        count = max(min_heads, group * round(wanted / group))
        return count, head_dim
    return min_heads, min(head_dim, _round8(head_dim * wanted / min_heads))


@dataclass(frozen=True)
class TwinConfig:
    """Every stage's shape. ``TwinConfig()`` is upstream's full size (scale 1.0)."""

    scale: float = 1.0
    decoder: DecoderShape = DecoderShape()
    encoder: EncoderShape = EncoderShape()
    flow: FlowShape = FlowShape()
    hift: HiftShape = HiftShape()
    vocos: VocosShape = VocosShape()

    @classmethod
    def at_scale(cls, scale: float) -> TwinConfig:
        """Upstream's shapes with widths and depths multiplied by ``scale`` (0 < scale <= 1).

        Vocabularies, mel sizes, hops and rates do not change, so output lengths and token
        counts are the same at every scale.

        Raises:
            ValueError: ``scale`` outside (0, 1].
        """
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], not {scale!r}")
        if scale == 1:
            return cls()
        d, e, f, h, v = DecoderShape(), EncoderShape(), FlowShape(), HiftShape(), VocosShape()
        heads, head_dim = _heads(d.heads, d.head_dim, scale, min_heads=4, group=4)
        hidden = heads * head_dim
        decoder = DecoderShape(hidden=hidden, layers=_depth(d.layers, scale), heads=heads,
                               kv_heads=heads * d.kv_heads // d.heads, head_dim=head_dim,
                               intermediate=hidden * d.intermediate // d.hidden)
        eh, ed = _heads(e.heads, e.d_model // e.heads, scale, min_heads=2)
        encoder = EncoderShape(d_model=eh * ed, layers=_depth(e.layers, scale), heads=eh,
                               ffn=4 * eh * ed)
        fh, fd = _heads(f.heads, f.head_dim, scale, min_heads=2)
        flow = FlowShape(width=fh * fd, depth=_depth(f.depth, scale), heads=fh, head_dim=fd,
                         text_dim=_round8(f.text_dim * scale),
                         text_blocks=_depth(f.text_blocks, scale))
        hift = HiftShape(channels=_round8(h.channels * scale, floor=32),
                         f0_channels=_round8(h.f0_channels * scale),
                         f0_layers=_depth(h.f0_layers, scale))
        vocos = VocosShape(dim=_round8(v.dim * scale), layers=_depth(v.layers, scale),
                           intermediate=3 * _round8(v.dim * scale))
        return cls(scale=scale, decoder=decoder, encoder=encoder, flow=flow, hift=hift,
                   vocos=vocos)

    def attention_cache_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes the LLM's attention KV cache holds per token: keys and values of every layer,
        ``2 x layers x kv_heads x head_dim x element size``."""
        d = self.decoder
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * d.layers * d.kv_heads * d.head_dim * itemsize
