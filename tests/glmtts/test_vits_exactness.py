"""Inference shortcuts of the VITS module change nothing: padding to a bucket and decoding in
chunks give the samples of a plain whole-signal run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glmtts.engines.piper.vits import bucket_length


def _decode(model, z: torch.Tensor, pad_to: int, chunk: int) -> torch.Tensor:
    valid = z.shape[-1]
    x = F.pad(z, (0, pad_to - valid))[:, :, None, :].contiguous(memory_format=torch.channels_last)
    old = model.dec.chunk
    model.dec.chunk = chunk
    try:
        return model.dec(model.flow.inverse(x, valid), valid)
    finally:
        model.dec.chunk = old


@pytest.mark.parametrize("frames", [1, 17, 130, 257])
def test_padding_and_chunking_are_exact(piper_deterministic, frames: int) -> None:
    model = piper_deterministic._model
    z = torch.randn(1, 192, frames, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        plain = _decode(model, z, frames, chunk=10**9)
        padded = _decode(model, z, bucket_length(frames) + 16, chunk=10**9)
        chunked = _decode(model, z, bucket_length(frames), chunk=300)
    assert plain.shape == (frames * 256,)
    assert torch.allclose(plain, padded, atol=2e-6)
    assert torch.allclose(plain, chunked, atol=2e-6)


def test_bucket_lengths() -> None:
    sizes = {bucket_length(n) for n in range(1, 2049)}
    assert all(bucket_length(n) >= n for n in range(1, 5000))
    assert all(bucket_length(n) <= n * 1.13 + 16 for n in range(1, 5000))
    assert len(sizes) < 90  # few kernel shapes for 0-24 s sentences
