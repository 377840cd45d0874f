"""The ``glm-tts`` engine: zero-shot voice cloning with a user's GLM-TTS checkout and weights.

Loading calls upstream's ``glmtts_inference.load_models(use_phoneme, sample_rate)``, which
returns five components: ``frontend`` (text tokenizer, speech tokenizer, prompt-mel extractor,
speaker encoder in ONNX Runtime), ``text_frontend`` (normaliser, optional G2P),
``speech_tokenizer``, ``llm`` and ``token2wav`` (flow + vocoder). Each request then performs the
steps of upstream's own web app (``tools/gradio_app.py`` at c5dc7ae), in its order:

1. ``text_normalize(prompt_text) + " "`` and ``text_normalize(text)``;
2. ``frontend._extract_text_token(prompt)``, ``_extract_speech_token([wav])``,
   ``_extract_speech_feat(wav, sample_rate=sr)``, ``_extract_spk_embedding(wav)``;
3. the prompt-history cache dict (``cache_text``, ``cache_text_token``, ``cache_speech_token``,
   ``use_cache``), built fresh per request: nothing of it survives the call;
4. ``generate_long(...)`` with the seed (re-applied by upstream before each segment), the
   sampling method and the phoneme switch.

The reference clip is validated by :mod:`glmtts.reference_audio` and handed to upstream as a
mono 16-bit WAV written for the request (upstream reads it with ``torchaudio.load``; its speech
tokenizer would take only the first channel of a stereo file while the other steps average).

Sample rate: 24 kHz uses the HiFT vocoder, 32 kHz Vocos2D, with the same flow. Upstream caches
its mel filter bank (keyed by fmax + device, and fmax is 8 kHz at both rates) and its Hann window
(keyed by device only) in module globals, so switching rates in one process would reuse the
other rate's tensors. A switch (:meth:`GlmTtsEngine.reload_for`) drops the old vocoder, empties
those caches, gives the frontend a mel extractor for the new rate and builds a new ``Token2Wav``
around the loaded flow: the language model, tokenizers and normaliser stay loaded (upstream's
web app reloads everything instead).

Precision (``dtype``): upstream loads fp32; bf16 and fp16 load the language model and the flow
in 16 bits (:mod:`glmtts.engines.glm_tts.precision`), refused first where the device cannot
run them (:func:`glmtts.precision.check_dtype`).
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glmtts.device import cuda_unavailable_reason, resolve_device
from glmtts.engines.base import N_, Capabilities, Engine
from glmtts.engines.glm_tts import checkout as _checkout
from glmtts.engines.glm_tts.checkout import (
    VOCODERS,
    available_rates,
    checkout_problem,
    configured_home,
    missing_vocoder,
)
from glmtts.engines.glm_tts.errors import CheckoutError
from glmtts.engines.glm_tts.parts import (
    _MEL_COMMON,
    MEL_SETTINGS,
    SampleRateSwitch,
    _cudnn_flags_kept,
    _Parts,
    _step,
    non_torch_parts,
)
from glmtts.engines.glm_tts.precision import cast_parts, loading_in, weights_estimate
from glmtts.engines.glm_tts.upstream import Checkout, Modules, modules_under
from glmtts.engines.weights import tensor_bytes
from glmtts.errors import DeviceUnavailableError, InvalidRequestError
from glmtts.precision import check_choice, check_dtype, torch_dtype
from glmtts.reference_audio import ReferenceAudio, ReferenceAudioError, load_reference
from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.say import Say

log = logging.getLogger(__name__)

#: Parts of upstream that hold GPU memory outside PyTorch's allocator (only NVML sees them).
SPEAKER_ENCODER = "onnxruntime speaker encoder (campplus)"
#: Upstream's ``seed_util.set_seed`` seeds numpy, which takes seeds below 2**32 only.
MAX_UPSTREAM_SEED = 2**32 - 1
DEFAULT_SAMPLE_RATE = 24000


class GlmTtsEngine(Engine):
    """Upstream GLM-TTS, loaded from its checkout (CUDA only, first GPU).

    Args:
        home: The checkout's folder; None reads ``$GLMTTS_HOME``.
        use_phoneme: Upstream's phoneme mode (G2P on the text, ``TextFrontEnd(use_phoneme)``
            and ``generate_long(use_phoneme=...)``).
        sample_rate: Rate whose vocoder the first load brings up; None: 24000 where its
            vocoder is present, else 32000. A request for the other rate switches the vocoder.
        dtype: ``fp32`` (upstream's), ``bf16``, ``fp16`` (the language model and the flow), or
            ``auto`` (fp32 unless the caller picks a 16-bit one: :meth:`choose_dtype`).

    Raises:
        CheckoutError: the checkout is not set, missing or incomplete.
    """

    name = "glm-tts"

    def __init__(self, home: str | Path | None = None, use_phoneme: bool = False,
                 sample_rate: int | None = None, dtype: str = "auto") -> None:
        super().__init__()
        self.requested_dtype = check_choice(dtype)
        self.dtype_name = "fp32" if dtype == "auto" else dtype
        problem = checkout_problem(home)
        if problem is not None:
            raise CheckoutError(problem)
        root = configured_home(home)
        assert root is not None
        self.home = root
        self.use_phoneme = bool(use_phoneme)
        self._rates = available_rates(root)
        if sample_rate is None:
            sample_rate = DEFAULT_SAMPLE_RATE if DEFAULT_SAMPLE_RATE in self._rates else (
                self._rates[0])
        reason = missing_vocoder(root, sample_rate)
        if reason is not None:
            raise CheckoutError(reason)
        self._load_rate = sample_rate
        self._checkout = Checkout(root)
        self._modules: Modules | None = None
        self._parts: _Parts | None = None
        self._rate: int | None = None
        self._ref_memo: tuple[tuple[str, int, int], ReferenceAudio] | None = None

    # ------------------------------------------------------------------ availability
    @classmethod
    def unavailable_reason(cls) -> str | None:
        return cls.unavailable_reason_for(None)

    @classmethod
    def unavailable_reason_for(cls, home: str | Path | None) -> str | None:
        """Like :meth:`unavailable_reason`, for the checkout at ``home`` (None: the
        environment's ``GLMTTS_HOME``)."""
        return _checkout.engine_problem(home)

    @classmethod
    def problem_for(cls, options: dict[str, Any]) -> str | None:
        return cls.unavailable_reason_for(options.get("home"))

    def resident_modules(self) -> int | None:
        """Upstream modules loaded from this checkout still in ``sys.modules`` (0 once no
        engine in this process uses it)."""
        return len(modules_under(self.home))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_sample_rate=self._rate or self._load_rate,
            sample_rates=self._rates,
            honours=frozenset({"reference_audio", "sample_rate", "use_kv_cache", "seed",
                               "sampling_method"}),
            reasons={
                "voice": N_("GLM-TTS clones the voice of the reference recording; it has no "
                            "named voices"),
                "speed": N_("upstream GLM-TTS has no speaking-rate control"),
            },
            lighter={"use_kv_cache": (True, False, N_("turn the KV cache off (later segments "
                                                      "are then prompted without the earlier "
                                                      "ones)"))},
            invalidates={
                "sample_rate": ("none", N_("the engine swaps only the vocoder and resets "
                                           "upstream's mel filter bank and Hann window itself "
                                           "(about 0.2 s; the language model stays loaded)")),
                "reference_audio": ("none", N_("the prompt's tokens and features are extracted "
                                               "per request; nothing of the old one is kept")),
            },
        )

    @property
    def sample_rate(self) -> int:
        """Rate the vocoder is loaded for (or will be at the next load)."""
        return self._rate or self._load_rate

    # ------------------------------------------------------------------ model life
    def choose_dtype(self, dtype: str) -> None:
        torch_dtype(dtype)  # a precision, not "auto"
        if self.requested_dtype == "auto" and self._parts is None:
            self.dtype_name = dtype

    def memory_estimate(self, dtype: str, request: SynthesisRequest | None = None
                        ) -> tuple[int, int | None]:
        """Weights from the checkpoint's files (:func:`weights_estimate`); no peak of its own
        (the caller's history predicts it)."""
        rate = (request.sample_rate if request else None) or self.sample_rate
        return weights_estimate(self.home, rate, dtype), None

    def _check_device(self, device: str) -> str:
        target = resolve_device(device)
        if not _checkout.REQUIRES_CUDA:
            return target
        if not target.startswith("cuda"):
            raise DeviceUnavailableError(
                "upstream GLM-TTS runs on CUDA only (its audio loader and speech tokenizer "
                f"call .cuda()); {cuda_unavailable_reason() or 'the CPU was chosen'}")
        if target not in ("cuda", "cuda:0"):
            index = target.split(":", 1)[1]
            raise DeviceUnavailableError(
                f"upstream GLM-TTS uses the first visible GPU only (its speech tokenizer and "
                f"speaker encoder are pinned to it): to run on {target}, start the app with "
                f"CUDA_VISIBLE_DEVICES={index}")
        return target

    def load(self, device: str = "auto") -> None:
        """Import upstream from the checkout and run its ``load_models``.

        Raises:
            DeviceUnavailableError: not a CUDA device (see :data:`checkout.REQUIRES_CUDA`).
            UpstreamError: importing or loading failed (missing package, missing weights).
        """
        if self._parts is not None:
            return
        target = self._check_device(device)
        check_dtype(self.dtype_name, target)  # before anything is imported or loaded
        rate, dtype = self._load_rate, self.dtype_name
        t0 = time.perf_counter()
        with self._checkout.entered():
            modules = self._checkout.acquire()
            ok = False
            try:
                modules.inference.DEVICE = torch.device(target)
                self._checkout.reset_mel_cache(modules, rate)
                with _step(f"loading the models for {rate} Hz in {dtype}"), loading_in(
                        modules, dtype):
                    loaded = modules.inference.load_models(use_phoneme=self.use_phoneme,
                                                           sample_rate=rate)
                    parts = _Parts(*loaded)
                    cast_parts(parts.llm, parts.token2wav, dtype, target)
                ok = True
            finally:
                if not ok:
                    self._checkout.release()
        self._modules, self._parts, self._rate, self._device = modules, parts, rate, target
        log.info("loaded GLM-TTS from %s on %s at %d Hz in %s in %.1f s", self.home, target,
                 rate, dtype, time.perf_counter() - t0)

    def unload(self) -> None:
        """Drop all five components, empty upstream's STFT caches, and (when no other engine
        uses the checkout) remove upstream's modules from ``sys.modules``. Idempotent."""
        modules, self._modules = self._modules, None
        self._parts = None
        self._device = None
        if self._rate is not None:
            self._load_rate = self._rate
        self._rate = None
        self._ref_memo = None
        if modules is not None:
            self._checkout.reset_mel_cache(modules, None)
        del modules
        self._checkout.release()

    def model_bytes(self) -> int | None:
        """Bytes of the PyTorch weights and buffers of the five components (speech tokenizer,
        LLM, flow, vocoder, ...). ONNX Runtime's speaker encoder is not included: its memory
        is outside PyTorch (see ``metadata["non_torch_parts"]``)."""
        if self._parts is None:
            return None
        return tensor_bytes(self._parts.all())

    # ------------------------------------------------------------------ sample rate
    def _target_rate(self, request: SynthesisRequest) -> int:
        return request.sample_rate or self.sample_rate

    def needs_reload(self, request: SynthesisRequest) -> bool:
        """True when the model is loaded for another rate than ``request`` asks for: call
        :meth:`reload_for` (and measure it as a load) before synthesising."""
        return self._parts is not None and self._target_rate(request) != self._rate

    def reload_for(self, request: SynthesisRequest) -> SampleRateSwitch | None:
        """Bring the vocoder side to ``request``'s rate.

        Not loaded: only remembers the rate for the next :meth:`load` (no work, returns None).
        Loaded at that rate already: nothing to do (None).

        Raises:
            InvalidRequestError: the checkout has no vocoder for that rate.
        """
        rate = self._target_rate(request)
        self._check_rate(rate)
        if self._parts is None:
            self._load_rate = rate
            return None
        if rate == self._rate:
            return None
        with self._checkout.entered():
            return self._switch(rate)

    def _switch(self, rate: int) -> SampleRateSwitch:
        """Swap the vocoder side (inside the checkout context)."""
        assert self._parts is not None and self._modules is not None and self._rate is not None
        parts, modules, old = self._parts, self._modules, self._rate
        t0 = time.perf_counter()
        flow = parts.token2wav.flow
        parts.token2wav = None  # the old vocoder is unreachable before the new one loads
        dropped = self._checkout.reset_mel_cache(modules, rate)
        self._load_rate = rate
        ok = False
        try:
            parts.frontend.feat_extractor = partial(modules.audio.mel_spectrogram,
                                                    sampling_rate=rate, **MEL_SETTINGS[rate],
                                                    **_MEL_COMMON)
            with _step(f"loading the {VOCODERS[rate].name} vocoder for {rate} Hz"):
                parts.token2wav = modules.tts_model_util.Token2Wav(
                    flow, sample_rate=rate, device=modules.inference.DEVICE)
            ok = True
        finally:
            if not ok:  # half switched: drop everything; the next load brings up ``rate``
                del flow
                self._rate = None
                self.unload()
                self._load_rate = rate
        self._rate = rate
        switch = SampleRateSwitch(old, rate, time.perf_counter() - t0, dropped)
        log.info("GLM-TTS switched from %d to %d Hz in %.2f s", old, rate, switch.seconds)
        return switch

    # ------------------------------------------------------------------ requests
    def _check_rate(self, rate: int) -> None:
        if rate not in self._rates:
            reason = missing_vocoder(self.home, rate)
            raise InvalidRequestError("sample_rate", Say("{engine} cannot produce {rate} Hz: "
                                                         "{reason}", engine=self.name,
                                                         rate=rate, reason=reason))

    def _reference(self, path: Path) -> ReferenceAudio:
        try:
            st = path.stat()
        except OSError:
            return load_reference(path)  # raises the typed error for a missing file
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if self._ref_memo is not None and self._ref_memo[0] == key:
            return self._ref_memo[1]
        ref = load_reference(path)
        self._ref_memo = (key, ref)
        return ref

    def check(self, request: SynthesisRequest) -> None:
        """Reject what GLM-TTS cannot do: a rate without its vocoder, a seed numpy refuses,
        no reference recording, no transcript, an unusable recording."""
        self._check_rate(self._target_rate(request))
        if request.seed is not None and request.seed > MAX_UPSTREAM_SEED:
            raise InvalidRequestError("seed", Say("GLM-TTS seeds must be at most {top} "
                                                  "(numpy's limit), not {seed}",
                                                  top=MAX_UPSTREAM_SEED, seed=request.seed))
        if request.reference_audio is None:
            raise ReferenceAudioError(N_("GLM-TTS clones a voice: give a reference recording "
                                         "(2-30 s of clear speech) and its transcript"))
        if not (request.reference_text or "").strip():
            raise InvalidRequestError("reference_text", N_(
                "type the transcript of the reference recording: GLM-TTS needs the words "
                "spoken in it"))
        self._reference(request.reference_audio)

    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        assert self._parts is not None and self._modules is not None
        assert request.reference_audio is not None and request.reference_text is not None
        t0 = time.perf_counter()
        rate = self._target_rate(request)
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        ref = self._reference(request.reference_audio)
        prompt_text = " ".join(request.reference_text.split())
        timings: dict[str, float] = {}
        switch = None
        with self._checkout.entered(), tempfile.TemporaryDirectory(
                prefix="glmtts-prompt-") as tmp:
            if rate != self._rate:  # the caller did not use reload_for: switch here
                switch = self._switch(rate)
                timings["reload"] = switch.seconds
            elif not self._checkout.mel_cache_matches(rate):  # another engine used the other
                self._checkout.reset_mel_cache(self._modules, rate)
            parts, modules = self._parts, self._modules
            assert parts is not None and modules is not None
            t1 = time.perf_counter()
            wav = str(ref.write_wav(Path(tmp) / "prompt.wav"))
            t2 = time.perf_counter()
            with torch.no_grad(), _cudnn_flags_kept():
                speech, tokens, info, norm = self._run(parts, modules, request, wav, prompt_text,
                                                       rate, seed, timings)
            timings["reference"] = t2 - t1
        audio = np.clip(speech.detach().float().cpu().numpy().reshape(-1), -1.0, 1.0).astype(
            np.float32, copy=False)
        del speech
        segments = list(info.get("syn_text_tn", [])) if isinstance(info, dict) else []
        meta: dict[str, Any] = {
            "engine": self.name, "device": self._device, "seed": seed,
            "sample_rate": rate, "native_sample_rate": rate,
            "vocoder": VOCODERS[rate].name, "sampling_method": request.sampling_method,
            "use_kv_cache": request.use_kv_cache, "use_phoneme": self.use_phoneme,
            "sentences": len(segments) or None, "segments": segments,
            "speech_tokens": len(tokens), "normalized_text": norm[1],
            "normalized_prompt_text": norm[0], "reference_id": ref.content_id,
            "reference_s": round(ref.duration_s, 3), "reference": ref.summary(),
            "notes": list(request.notes), "checkout": str(self.home),
            "dtype": self.dtype_name, "weights_bytes": self.model_bytes(),
            **non_torch_parts(self._parts, SPEAKER_ENCODER),
        }
        if switch is not None:
            meta["sample_rate_switch"] = {"from_rate": switch.from_rate,
                                          "to_rate": switch.to_rate,
                                          "seconds": round(switch.seconds, 4)}
        return SynthesisResult(audio=audio, sample_rate=rate, timings=timings,
                               wall_s=time.perf_counter() - t0, metadata=meta)

    def _run(self, parts: _Parts, modules: Modules, request: SynthesisRequest, wav: str,
             prompt_text: str, rate: int, seed: int, timings: dict[str, float]
             ) -> tuple[torch.Tensor, list[int], Any, tuple[str, str]]:
        """Upstream's per-request steps, in the web app's order."""
        fe, tf = parts.frontend, parts.text_frontend
        device = modules.inference.DEVICE
        t0 = time.perf_counter()
        with _step("normalising the text"):
            norm_prompt = tf.text_normalize(prompt_text) + " "
            norm_text = tf.text_normalize(request.text)
        if not (norm_text or "").strip():
            raise InvalidRequestError("text", N_("GLM-TTS's text normaliser left nothing to "
                                                 "speak in this text"))
        with _step("extracting the prompt's tokens and features"):
            prompt_text_token = fe._extract_text_token(norm_prompt)
            prompt_speech_token = fe._extract_speech_token([wav])
            speech_feat = fe._extract_speech_feat(wav, sample_rate=rate)
            embedding = fe._extract_spk_embedding(wav)
        cache_speech_token = [prompt_speech_token.squeeze().tolist()]
        flow_prompt_token = torch.tensor(cache_speech_token, dtype=torch.int32).to(device)
        cache = {"cache_text": [norm_prompt], "cache_text_token": [prompt_text_token],
                 "cache_speech_token": cache_speech_token, "use_cache": request.use_kv_cache}
        t1 = time.perf_counter()
        with _step("generating speech"):
            speech, _mel, tokens, info = modules.inference.generate_long(
                frontend=fe, text_frontend=tf, llm=parts.llm, flow=parts.token2wav,
                text_info=["", norm_text], cache=cache, embedding=embedding,
                flow_prompt_token=flow_prompt_token, speech_feat=speech_feat,
                sample_method=request.sampling_method, seed=seed, device=device,
                use_phoneme=self.use_phoneme)
        timings["prompt"] = t1 - t0
        timings["generate"] = time.perf_counter() - t1
        return speech, list(tokens), info, (norm_prompt, norm_text)
