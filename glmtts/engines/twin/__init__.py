"""``twin``: a GLM-TTS memory twin.

Upstream GLM-TTS's stage shapes (LLM, prompt speech tokenizer, flow DiT, one vocoder per output
rate) with seeded random weights, driven to realistic lengths: text split into 30-60 character
segments, 25 speech tokens per second of estimated speech, 50 mel frames per second, 480 or 640
samples per frame. Memory depends on shapes and lengths, not on weight values, so the twin
reproduces upstream's memory behaviour (and its response to the "KV cache" switch and the
sample rate) without the 8 GB download. Its audio is not speech.

Two different "KV caches":

- ``SynthesisRequest.use_kv_cache`` is upstream's switch of that name: a *prompt-history*
  cache. Later segments are prompted with earlier segments' text and speech tokens (capped at
  750 tokens), so it makes prompts longer and costs memory.
- ``TwinEngine(attention_cache=...)`` is the transformer's own *attention* KV cache: on, keys
  and values are kept and each step runs one token; off, every step recomputes the whole
  sequence (same tokens, no cache memory, far more compute).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from glmtts.audio import resample
from glmtts.cancel import checkpoint
from glmtts.device import cuda_unavailable_reason, resolve_device
from glmtts.engines.base import N_, Capabilities, Engine
from glmtts.engines.twin.config import (
    AUDIO_TOKEN_BASE,
    BEGIN_OF_AUDIO,
    ENCODER_SAMPLE_RATE,
    HOPS,
    SPEECH_CODEBOOK,
    TwinConfig,
)
from glmtts.engines.twin.estimate import MemoryEstimate, estimate_memory
from glmtts.engines.twin.llm import AttentionCache, generate
from glmtts.engines.twin.mel import WHISPER_HOP, flow_prompt_mel, whisper_features
from glmtts.engines.twin.model import TwinModel, build_model, parameter_counts
from glmtts.engines.twin.sampling import SpeechTokenSampler
from glmtts.engines.twin.text import (
    CHARS_PER_SECOND,
    HISTORY_CAP_TOKENS,
    SegmentPlan,
    plan_segments,
    text_token_ids,
)
from glmtts.engines.weights import tensor_bytes
from glmtts.precision import ITEMSIZE, check_choice, check_dtype, torch_dtype
from glmtts.request import SynthesisRequest, SynthesisResult

log = logging.getLogger(__name__)

#: Length of the prompt used when a request has no reference recording.
DEFAULT_PROMPT_SECONDS = 3.0
#: Its transcript (about 3 s of speech).
DEFAULT_PROMPT_TEXT = "This is the voice that the memory twin pretends to clone."
NATIVE_SAMPLE_RATE = 24000
#: Default scale where there is no usable GPU (upstream's full size needs ~8 GiB).
CPU_SCALE = 0.05
#: Text the ``auto`` precision sizes a load by when no request is known yet (characters).
TYPICAL_TEXT = "A typical request of about two hundred characters, " * 4


@dataclass(frozen=True)
class TwinCapabilities(Capabilities):
    """:class:`Capabilities` plus the twin's own switches.

    Attributes:
        attention_cache: Whether the LLM keeps an attention KV cache (engine option; not the
            request's ``use_kv_cache``, which is the prompt-history cache).
        attention_cache_bytes_per_token: What that cache holds per token, in bytes.
        scale: Width/depth factor of the shapes (1.0 = upstream's size).
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (the loaded or next load's precision).
    """

    attention_cache: bool = True
    attention_cache_bytes_per_token: int = 0
    scale: float = 1.0
    dtype: str = "fp32"


@dataclass(frozen=True)
class _Prompt:
    speech_ids: torch.Tensor  # (P,) speech-token ids 0..32767
    mel: torch.Tensor  # (2P, 80) at the output rate
    speaker: torch.Tensor  # (192,)
    text_ids: list[int]
    seconds: float


class TwinEngine(Engine):
    """The GLM-TTS memory twin (random weights: its audio is not speech).

    Args:
        scale: Multiplies widths and depths (1.0: upstream's 2.2 B parameters, ~8 GiB fp32;
            0.05: ~15 M parameters for quick CPU runs). Lengths do not depend on it. None:
            1.0 where CUDA is usable, else :data:`CPU_SCALE`.
        dtype: ``"fp32"`` (upstream's precision), ``"bf16"``, ``"fp16"``, or ``"auto"`` (fp32
            unless the caller predicts it will not fit: :meth:`choose_dtype`; see
            :mod:`glmtts.precision`).
        attention_cache: Keep the LLM's attention keys and values (True, as upstream does) or
            recompute the whole sequence at every step (False).
        weight_seed: Seed of the random weights.
    """

    name = "twin"

    def __init__(self, scale: float | None = None, dtype: str = "auto",
                 attention_cache: bool = True, weight_seed: int = 0) -> None:
        super().__init__()
        if scale is None:
            scale = 1.0 if cuda_unavailable_reason() is None else CPU_SCALE
        self.config = TwinConfig.at_scale(float(scale))
        self.requested_dtype = check_choice(dtype)
        self.dtype_name = "fp32" if dtype == "auto" else dtype
        self.dtype = torch_dtype(self.dtype_name)
        self.attention_cache = bool(attention_cache)
        self.weight_seed = weight_seed
        self._model: TwinModel | None = None
        # Counted on the meta device. The first meta model of a process imports torch's meta
        # kernels (~75 MiB of Python modules, once): that happens here, when the engine is
        # created, so that the measured load is the weights.
        self.parameter_count = sum(parameter_counts(self.scale).values())

    @property
    def scale(self) -> float:
        return self.config.scale

    @property
    def capabilities(self) -> TwinCapabilities:
        return TwinCapabilities(
            native_sample_rate=NATIVE_SAMPLE_RATE,
            sample_rates=tuple(sorted(HOPS)),
            honours=frozenset({"reference_audio", "sample_rate", "use_kv_cache", "seed",
                               "sampling_method", "speed"}),
            reasons={"voice": N_("the twin has no named voices: it sizes its prompt from the "
                                 "reference recording")},
            speech=False,
            lighter={"use_kv_cache": (True, False, N_("turn the KV cache off"))},
            attention_cache=self.attention_cache,
            attention_cache_bytes_per_token=self.config.attention_cache_bytes_per_token(
                self.dtype),
            scale=self.scale,
            dtype=self.dtype_name,
        )

    # ------------------------------------------------------------------ model life
    def choose_dtype(self, dtype: str) -> None:
        if self.requested_dtype != "auto" or self._model is not None:
            return  # an explicit choice stands; a loaded model keeps its precision
        self.dtype_name, self.dtype = dtype, torch_dtype(dtype)

    def memory_estimate(self, dtype: str, request: SynthesisRequest | None = None
                        ) -> tuple[int, int | None]:
        """Weights from the parameter count; the peak above them from :meth:`estimate`'s
        analytic model (for a typical 200-character request when ``request`` is None)."""
        request = request or SynthesisRequest(text=TYPICAL_TEXT[:200])
        rate = request.sample_rate or NATIVE_SAMPLE_RATE
        plan = estimate_memory(self.config, torch_dtype(dtype), self.plan(request), rate,
                               attention_cache=self.attention_cache)
        return self.parameter_count * ITEMSIZE[dtype], plan.transient_bytes

    def load(self, device: str = "auto") -> None:
        if self._model is not None:
            return
        target = resolve_device(device)
        check_dtype(self.dtype_name, target)  # before anything is built
        self._model = build_model(self.config, device=target, dtype=self.dtype,
                                  seed=self.weight_seed)
        self._device = target
        log.info("twin loaded on %s: scale %g, %s, %d parameters", target, self.scale,
                 self.dtype_name, self.parameter_count)

    def unload(self) -> None:
        self._model = None
        self._device = None

    def model_bytes(self) -> int | None:
        if self._model is None:
            return None
        return tensor_bytes([self._model])

    # ------------------------------------------------------------------ prompt
    def _reference(self, request: SynthesisRequest) -> tuple[np.ndarray, int] | None:
        if request.reference_audio is None:
            return None
        from glmtts.reference_audio import load_reference

        ref = load_reference(request.reference_audio)
        return np.asarray(ref.samples, dtype=np.float32), ref.sample_rate

    def _prompt_length(self, request: SynthesisRequest) -> tuple[float, int]:
        """Seconds of prompt audio, and its length in samples at 16 kHz."""
        ref = self._reference(request)
        if ref is None:
            return DEFAULT_PROMPT_SECONDS, round(DEFAULT_PROMPT_SECONDS * ENCODER_SAMPLE_RATE)
        samples, rate = ref
        return len(samples) / rate, math.ceil(len(samples) * ENCODER_SAMPLE_RATE / rate)

    @staticmethod
    def _prompt_text(request: SynthesisRequest, seconds: float) -> str:
        if request.reference_text and request.reference_text.strip():
            return request.reference_text.strip()
        if request.reference_audio is None:
            return DEFAULT_PROMPT_TEXT
        # No transcript: as much placeholder text as the clip would hold.
        words = "the voice in the reference clip says something here "
        chars = round(seconds * CHARS_PER_SECOND)
        return (words * (chars // len(words) + 1))[:chars]

    def _prompt(self, request: SynthesisRequest, rate: int) -> _Prompt:
        assert self._model is not None
        device = self._device
        ref = self._reference(request)
        if ref is None:
            noise = torch.Generator().manual_seed(0)
            seconds = DEFAULT_PROMPT_SECONDS
            wav16 = 0.1 * torch.randn(round(seconds * ENCODER_SAMPLE_RATE), generator=noise)
            wav_out = 0.1 * torch.randn(round(seconds * rate), generator=noise)
        else:
            samples, src_rate = ref
            seconds = len(samples) / src_rate
            wav = torch.from_numpy(samples)
            wav16 = resample(wav, src_rate, ENCODER_SAMPLE_RATE)
            wav_out = resample(wav, src_rate, rate)
        model = self._model
        features = whisper_features(wav16.to(device)).to(self.dtype)
        speech_ids = model.prompt_encoder(features)
        mel = flow_prompt_mel(wav_out.to(device), rate, HOPS[rate])
        frames = 2 * speech_ids.shape[0]
        mel = torch.nn.functional.pad(mel, (0, 0, 0, max(0, frames - mel.shape[0])))[:frames]
        speaker = model.speaker(mel.mean(0).to(self.dtype))
        speaker = speaker / speaker.float().norm().clamp(min=1e-6).to(self.dtype)
        return _Prompt(speech_ids, mel, speaker, text_token_ids(self._prompt_text(
            request, seconds)), seconds)

    def plan(self, request: SynthesisRequest) -> list[SegmentPlan]:
        """The LLM calls ``request`` makes (segments, prompt lengths, forced output lengths),
        computed from lengths alone (no model needed)."""
        seconds, samples16 = self._prompt_length(request)
        speech = samples16 // WHISPER_HOP // 4  # 100 mel frames/s -> 25 tokens/s
        text = len(text_token_ids(self._prompt_text(request, seconds)))
        return plan_segments(request.text, text, speech, use_history=request.use_kv_cache,
                             speed=request.speed)

    def estimate(self, request: SynthesisRequest) -> MemoryEstimate:
        """Analytic memory of ``request`` on this engine's shapes and dtype (weights, attention
        cache, largest activation); needs no loaded model."""
        rate = request.sample_rate or NATIVE_SAMPLE_RATE
        return estimate_memory(self.config, self.dtype, self.plan(request), rate,
                               attention_cache=self.attention_cache)

    def estimate_peak_bytes(self, request: SynthesisRequest) -> int:
        """:meth:`estimate`'s total: bytes the request needs, model included."""
        return self.estimate(request).total_bytes

    # ------------------------------------------------------------------ synthesis
    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        assert self._model is not None and self._device is not None
        model, device = self._model, self._device
        rate = request.sample_rate or NATIVE_SAMPLE_RATE
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        generator = torch.Generator()
        sampler = SpeechTokenSampler(request.sampling_method, generator)
        speech_rows = slice(AUDIO_TOKEN_BASE, AUDIO_TOKEN_BASE + SPEECH_CODEBOOK)
        timings = {"prompt": 0.0, "llm": 0.0, "flow": 0.0, "vocoder": 0.0}
        caches: list[AttentionCache] = []
        chunks: list[np.ndarray] = []
        segments: list[dict[str, Any]] = []
        generated: list[list[int]] = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            prompt = self._prompt(request, rate)
            plans = plan_segments(request.text, len(prompt.text_ids), prompt.speech_ids.shape[0],
                                  use_history=request.use_kv_cache, speed=request.speed)
            timings["prompt"] = time.perf_counter() - t0
            segment_text = [text_token_ids(p.text) for p in plans]
            for done, plan in enumerate(plans):
                checkpoint(done, len(plans))  # a cancelled synthesis stops between segments
                generator.manual_seed(seed)  # upstream re-applies the seed per segment
                t1 = time.perf_counter()
                text_ids = prompt.text_ids + [i for j in plan.history for i in segment_text[j]]
                speech = [AUDIO_TOKEN_BASE + int(i) for i in prompt.speech_ids.tolist()]
                speech += [i for j in plan.history for i in generated[j]]
                ids = torch.tensor([text_ids + segment_text[plan.index] + [BEGIN_OF_AUDIO]
                                    + speech], device=device)
                new = generate(model.llm, ids, plan.new_tokens, sampler, rows=speech_rows,
                               attention_cache=self.attention_cache, on_cache=caches.append)
                generated.append([AUDIO_TOKEN_BASE + i for i in new])
                t2 = time.perf_counter()
                tokens = torch.tensor(new, device=device)
                mel = model.flow(torch.cat((prompt.speech_ids, tokens)), prompt.mel,
                                 prompt.speaker, generator)
                t3 = time.perf_counter()
                chunks.append(model.vocoder(rate)(mel).cpu().numpy())
                t4 = time.perf_counter()
                timings["llm"] += t2 - t1
                timings["flow"] += t3 - t2
                timings["vocoder"] += t4 - t3
                segments.append({
                    "chars": len(plan.text), "text_tokens": plan.text_tokens,
                    "prompt_text_tokens": plan.prompt_text_tokens,
                    "prompt_speech_tokens": plan.prompt_speech_tokens,
                    "history": list(plan.history), "new_tokens": plan.new_tokens,
                    "llm_input_tokens": ids.shape[1], "mel_frames": mel.shape[0]})
                if caches:  # measured on the cache tensors themselves
                    segments[-1].update(attention_cache_bytes=caches[-1].nbytes,
                                        attention_cache_tokens=caches[-1].capacity)
                    caches.clear()  # drop the reference: the cache dies with the segment
        audio = np.concatenate(chunks).astype(np.float32, copy=False)
        meta: dict[str, Any] = {
            "engine": self.name, "device": device, "seed": seed, "speech": False,
            "scale": self.scale, "dtype": self.dtype_name,
            "weights_bytes": self.model_bytes(), "attention_cache": self.attention_cache,
            "attention_cache_bytes_per_token": self.config.attention_cache_bytes_per_token(
                self.dtype),
            "use_kv_cache": request.use_kv_cache, "history_cap_tokens": HISTORY_CAP_TOKENS,
            "native_sample_rate": NATIVE_SAMPLE_RATE, "prompt_seconds": prompt.seconds,
            "prompt_speech_tokens": int(prompt.speech_ids.shape[0]),
            "prompt_text_tokens": len(prompt.text_ids), "segments": segments,
            "sentences": len(segments),
            "speech_tokens": [i - AUDIO_TOKEN_BASE for seg in generated for i in seg],
            "notes": [*request.notes, "random weights: the audio is not speech"],
        }
        return SynthesisResult(audio=audio, sample_rate=rate, timings=timings,
                               wall_s=time.perf_counter() - t0, metadata=meta)


__all__ = ["CPU_SCALE", "DEFAULT_PROMPT_SECONDS", "MemoryEstimate", "TwinCapabilities",
           "TwinEngine", "build_model", "parameter_counts"]
