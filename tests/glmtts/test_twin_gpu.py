"""The twin at full size on a GPU, against the one public measurement of upstream GLM-TTS
(official fp32 run, nvidia-smi every 200 ms on an RTX 3090: peak 8,628-8,787 MiB)."""

from __future__ import annotations

import pytest

from glmtts.request import SynthesisRequest

PUBLISHED_MIB = (8628, 8787)
#: About 10 s of speech (145 characters at ~14.5 per second).
TEN_SECONDS = ("The quick brown fox jumps over the lazy dog while the old man watches from his "
               "porch. Later that day, the rain came down over the quiet valley.")


@pytest.mark.gpu
@pytest.mark.slow
def test_full_size_fp32_peak_is_near_the_published_one() -> None:
    import torch

    from glmtts.session import SynthesisSession
    from monitoring import Store

    session = SynthesisSession("twin", engine_options={"scale": 1.0, "dtype": "fp32"},
                               device="cuda", store=Store(":memory:"))
    try:
        outcome = session.synthesize(SynthesisRequest(text=TEN_SECONDS, seed=42))
        record = outcome.record
        reserved = record.peaks.torch_reserved_bytes
        process = record.breakdown.nvml_process.peak_bytes
        estimate = session.engine.estimate(SynthesisRequest(text=TEN_SECONDS, seed=42))
        gib = 2**30
        print(f"\ntwin fp32, {outcome.result.duration_s:.1f} s of audio: torch reserved peak "
              f"{reserved / gib:.2f} GiB ({reserved / 2**20:,.0f} MiB); NVML process peak "
              f"{'n/a' if process is None else f'{process / 2**20:,.0f} MiB'}; estimate "
              f"{estimate.total_bytes / gib:.2f} GiB; published upstream peak "
              f"{PUBLISHED_MIB[0]:,}-{PUBLISHED_MIB[1]:,} MiB (nvidia-smi, CUDA context "
              f"included)")
        assert 9.0 < outcome.result.duration_s < 11.5
        assert 7 * gib < reserved < 11 * gib
        # KV switch on a long text: the prompt history costs memory at full size.
        long_text = " ".join([TEN_SECONDS] * 4)
        peaks = {}
        for kv in (False, True):
            session.cleanup("light")
            out = session.synthesize(SynthesisRequest(text=long_text, seed=42,
                                                      use_kv_cache=kv))
            peaks[kv] = out.record.breakdown.torch_allocated.peak_delta_bytes
        print(f"long text, torch allocated peak above start: KV off {peaks[False] / 2**20:.0f}"
              f" MiB, KV on {peaks[True] / 2**20:.0f} MiB")
        assert peaks[True] > peaks[False]
        assert torch.cuda.max_memory_reserved() < 11 * gib
    finally:
        session.cleanup("full")
        session.close()
