"""The speech-token LLM: a Llama-style decoder with an explicit attention KV cache.

Two things are called "KV cache" around GLM-TTS, and this module has only the second:

- upstream's "Use KV Cache" switch is a *prompt-history* cache (earlier segments' tokens
  prompt later ones; see :mod:`glmtts.engines.twin.text`);
- the transformer's *attention* KV cache (:class:`AttentionCache`): keys and values of every
  position already processed, so that each generation step runs one token through the model.
  Without it (``attention_cache=False`` in :func:`generate`) every step recomputes the whole
  sequence: the same tokens, no cache memory, quadratically more compute.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from glmtts.engines.twin.config import DecoderShape
from glmtts.engines.twin.layers import RMSNorm, apply_rope, rope_tables


class AttentionCache:
    """Keys and values of every layer, preallocated for ``capacity`` tokens.

    Attributes:
        keys: One ``(1, kv_heads, capacity, head_dim)`` tensor per layer.
        values: Likewise.
        length: Positions filled so far.
    """

    def __init__(self, shape: DecoderShape, capacity: int, *, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        size = (1, shape.kv_heads, capacity, shape.head_dim)
        self.keys = [torch.empty(size, dtype=dtype, device=device) for _ in range(shape.layers)]
        self.values = [torch.empty(size, dtype=dtype, device=device)
                       for _ in range(shape.layers)]
        self.capacity = capacity
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache tensors (measured from the tensors themselves)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    @property
    def bytes_per_token(self) -> int:
        """:attr:`nbytes` per cached position."""
        return self.nbytes // self.capacity


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions (no biases)."""

    def __init__(self, s: DecoderShape) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = s.heads, s.kv_heads, s.head_dim
        self.q_proj = nn.Linear(s.hidden, s.heads * s.head_dim, bias=False)
        self.k_proj = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=False)
        self.v_proj = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=False)
        self.o_proj = nn.Linear(s.heads * s.head_dim, s.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: AttentionCache | None, layer: int, start: int) -> torch.Tensor:
        b, t, _ = x.shape
        if t > 1 and start != 0:
            raise ValueError("multi-token steps must start at position 0")
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            end = start + t
            cache.keys[layer][:, :, start:end] = k
            cache.values[layer][:, :, start:end] = v
            k, v = cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, s: DecoderShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden, s.intermediate, bias=False)
        self.up_proj = nn.Linear(s.hidden, s.intermediate, bias=False)
        self.down_proj = nn.Linear(s.intermediate, s.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, s: DecoderShape) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(s.hidden, s.norm_eps)
        self.self_attn = Attention(s)
        self.post_attention_layernorm = RMSNorm(s.hidden, s.norm_eps)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: AttentionCache | None, layer: int, start: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """Embedding (tied with the output layer), decoder layers, final RMSNorm."""

    def __init__(self, shape: DecoderShape) -> None:
        super().__init__()
        self.shape = shape
        self.embed_tokens = nn.Embedding(shape.vocab, shape.hidden)
        self.layers = nn.ModuleList(DecoderLayer(shape) for _ in range(shape.layers))
        self.norm = RMSNorm(shape.hidden, shape.norm_eps)

    def new_cache(self, capacity: int) -> AttentionCache:
        weight = self.embed_tokens.weight
        return AttentionCache(self.shape, capacity, dtype=weight.dtype, device=weight.device)

    def forward(self, ids: torch.Tensor, *, cache: AttentionCache | None = None,
                start: int = 0, rows: slice | None = None) -> torch.Tensor:
        """Run ``ids`` ``(1, T)`` at positions ``start..start+T``; return the float32 logits
        of the last position only (the only ones generation needs): ``(vocab,)``, or only the
        vocabulary ``rows`` asked for."""
        x = self.embed_tokens(ids)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        cos, sin = rope_tables(positions, self.shape.head_dim, self.shape.rope_theta, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i, start)
        if cache is not None:
            cache.length = start + ids.shape[1]
        last = self.norm(x[0, -1])
        weight = self.embed_tokens.weight
        return F.linear(last, weight if rows is None else weight[rows]).float()


def generate(decoder: Decoder, prompt: torch.Tensor, count: int,
             pick: Callable[[torch.Tensor, list[int]], int], *, rows: slice,
             attention_cache: bool = True,
             on_cache: Callable[[AttentionCache], None] | None = None) -> list[int]:
    """Generate exactly ``count`` tokens after ``prompt`` ``(1, T)`` from the vocabulary
    ``rows`` (the speech tokens); return their indices within ``rows``.

    Args:
        pick: Chooses the next token (an index within ``rows``) from the last position's
            logits over ``rows`` and the indices chosen so far (the sampler).
        attention_cache: Keep keys and values (one token per step) or recompute the whole
            sequence at every step.
        on_cache: Called with the attention cache once it is allocated (for measurements).
    """
    out: list[int] = []
    if count <= 0:
        return out
    length = prompt.shape[1]

    def step_ids() -> torch.Tensor:
        return torch.tensor([[rows.start + out[-1]]], device=prompt.device)

    if attention_cache:
        cache = decoder.new_cache(length + count)
        if on_cache is not None:
            on_cache(cache)
        logits = decoder(prompt, cache=cache, rows=rows)
        for i in range(count):
            out.append(pick(logits, out))
            if i + 1 < count:
                logits = decoder(step_ids(), cache=cache, start=length + i, rows=rows)
        return out
    sequence = prompt
    for _ in range(count):
        logits = decoder(sequence, rows=rows)
        out.append(pick(logits, out))
        sequence = torch.cat((sequence, step_ids()), dim=1)
    return out
