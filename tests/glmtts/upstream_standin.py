"""Writes a stand-in of an upstream GLM-TTS checkout into a temporary folder, for contract tests.

The real GLM-TTS needs ~8 GB of weights and a CUDA GPU, which cannot exist on a test machine. The
stand-in keeps upstream's layout (``glmtts_inference.py``, ``cosyvoice/cli/frontend.py``,
``utils/audio.py``, ``utils/tts_model_util.py``, ``llm/`` as a namespace package, ``ckpt/``
folders) and the names and signatures the adapter calls at revision c5dc7ae, with tiny tensors
on the CPU. Each call it receives is appended to ``calls.jsonl`` in the checkout (with the
working directory and ``sys.path[0]`` at the time), so a test can check order and arguments.

Behaviours copied as facts (the code is written from scratch): relative paths everywhere
(loading reads ``ckpt/...``, normalising reads ``configs/custom_replace.jsonl``); the STFT caches
``mel_basis`` (keyed by fmax + device) and ``hann_window`` (keyed by device only), so a second
rate in one process fails unless they are reset; ``set_seed`` before each segment, touching the
global RNGs and cuDNN flags; the prompt-history cache growing each later segment's prompt when
``use_cache`` is on; ``logging.basicConfig`` at import.

Nothing here is a package of the project: it exists only as text written at test time.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

_JOURNAL = '''
import json, os, sys

ROOT = os.path.dirname(os.path.abspath(__file__))


def record(step, **fields):
    entry = {"step": step, "cwd": os.getcwd(), "path0": sys.path[0], **fields}
    with open(os.path.join(ROOT, "calls.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\\n")
'''

_INFERENCE = '''
import json
import logging
import os
from functools import partial

import torch

from cosyvoice.cli.frontend import SpeechTokenizer, TextFrontEnd, TTSFrontEnd
from llm.glmtts import GLMTTS
from utils import seed_util, tts_model_util, yaml_util
from utils.audio import mel_spectrogram
import cosyvoice.transformer.attention  # namespace subpackages, as upstream has four
import cosyvoice.hifigan_cosy2.generator
import utils.whisper_models.encoder
import standin_journal as journal
{broken_import}
DEVICE = torch.device("cpu")  # upstream: cuda when available
MAX_LLM_SEQ_INP_LEN = 750
logging.basicConfig(level=logging.INFO, format="%(message)s")  # as upstream does at import


def load_frontends(speech_tokenizer, sample_rate=24000, use_phoneme=False, frontend_dir="frontend"):
    if sample_rate == 32000:
        feat = partial(mel_spectrogram, sampling_rate=32000, hop_size=640, n_fft=2560,
                       num_mels=80, win_size=2560, fmin=0, fmax=8000, center=False)
    elif sample_rate == 24000:
        feat = partial(mel_spectrogram, sampling_rate=24000, hop_size=480, n_fft=1920,
                       num_mels=80, win_size=1920, fmin=0, fmax=8000, center=False)
    else:
        raise ValueError(f"Unsupported sampling_rate: {{sample_rate}}")
    with open(os.path.join("ckpt", "vq32k-phoneme-tokenizer", "tokenizer_config.json")) as f:
        json.load(f)
    tokenize_fn = lambda text: [100 + (ord(ch) % 900) for ch in text]
    frontend = TTSFrontEnd(tokenize_fn, speech_tokenizer, feat,
                           os.path.join(frontend_dir, "campplus.onnx"),
                           os.path.join(frontend_dir, "spk2info.pt"), DEVICE)
    return frontend, TextFrontEnd(use_phoneme)


class LlamaForCausalLM:  # upstream imports transformers' class of this name
    @staticmethod
    def from_pretrained(path, dtype=None):
        model = torch.nn.Linear(8, 8).to(dtype)
        model.loaded_dtype = str(dtype)  # what upstream asked for (fp32, hard-coded)
        return model


def load_models(use_phoneme=False, sample_rate=24000):
    journal.record("load_models", use_phoneme=use_phoneme, sample_rate=sample_rate,
                   device=str(DEVICE))
    model, extractor = yaml_util.load_speech_tokenizer(os.path.join("ckpt", "speech_tokenizer"))
    speech_tokenizer = SpeechTokenizer(model, extractor)
    frontend, text_frontend = load_frontends(speech_tokenizer, sample_rate=sample_rate,
                                             use_phoneme=use_phoneme)
    llm = GLMTTS(llama_cfg_path=os.path.join("ckpt", "llm", "config.json"), mode="PRETRAIN")
    llm.llama = LlamaForCausalLM.from_pretrained(os.path.join("ckpt", "llm"),
                                                 dtype=torch.float32).to(DEVICE)
    llm.to(DEVICE)
    flow = yaml_util.load_flow_model(os.path.join("ckpt", "flow", "flow.pt"),
                                     os.path.join("ckpt", "flow", "config.yaml"), DEVICE)
    token2wav = tts_model_util.Token2Wav(flow, sample_rate=sample_rate, device=DEVICE)
    return frontend, text_frontend, speech_tokenizer, llm, token2wav


def local_llm_forward(llm, prompt_text_token, tts_text_token, prompt_speech_token,
                      beam_size=1, sampling=25, sample_method="ras"):
    out = llm.inference(text=tts_text_token, text_len=tts_text_token.shape[1],
                        prompt_text=prompt_text_token, prompt_text_len=prompt_text_token.shape[1],
                        prompt_speech_token=prompt_speech_token,
                        prompt_speech_token_len=prompt_speech_token.shape[1],
                        beam_size=beam_size, sampling=sampling, sample_method=sample_method,
                        spk=None)
    return out[0].tolist()


def local_flow_forward(flow, token_list, prompt_speech_tokens, speech_feat, embedding):
    wav, mel = flow.token2wav_with_cache(token_list, prompt_token=prompt_speech_tokens,
                                         prompt_feat=speech_feat, embedding=embedding)
    return wav.detach().cpu(), mel


def get_cached_prompt(cache, synth_text_token, device=DEVICE):
    texts, speech = cache["cache_text_token"], cache["cache_speech_token"]
    while sum(map(len, speech)) + 2 * synth_text_token.shape[1] > MAX_LLM_SEQ_INP_LEN:
        if len(speech) <= 1:
            break
        cache["cache_text"].pop(1)
        texts.pop(1)
        speech.pop(1)
    text_ids = [i for t in texts for i in t.reshape(-1).tolist()]
    speech_ids = [i for s in speech for i in s]
    return (torch.tensor([text_ids]).to(device),
            torch.tensor([speech_ids], dtype=torch.int32).to(device))


def generate_long(frontend, text_frontend, llm, flow, text_info, cache, device, embedding,
                  seed=0, sample_method="ras", flow_prompt_token=None, speech_feat=None,
                  local_llm_forward=local_llm_forward, local_flow_forward=local_flow_forward,
                  use_phoneme=False):
    uttid, syn_text = text_info
    journal.record("generate_long", uttid=uttid, syn_text=syn_text, seed=seed,
                   sample_method=sample_method, use_cache=cache["use_cache"],
                   use_phoneme=use_phoneme, device=str(device),
                   cache_text=list(cache["cache_text"]),
                   speech_feat=list(speech_feat.shape), embedding=list(embedding.shape),
                   flow_prompt_token=list(flow_prompt_token.shape),
                   llm_is=id(llm), flow_is=id(flow))
    if "explode" in syn_text.lower():
        raise ValueError("stand-in failure on request")
    if "oomplease" in syn_text.lower():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    flag = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw_oom_raised")
    if "rawoomonce" in syn_text.lower() and not os.path.exists(flag):
        open(flag, "w").close()  # once: the retry after the full cleanup succeeds
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.69 GiB "
                           "total capacity; 21.10 GiB already allocated)")
    outputs, mels, all_tokens = [], [], []
    info = {{"uttid": uttid, "syn_text": syn_text, "syn_text_tn": [], "syn_text_phoneme": []}}
    for piece in text_frontend.split_by_len(syn_text):
        seed_util.set_seed(seed)
        tn = text_frontend.text_normalize(piece)
        info["syn_text_tn"].append(tn)
        if use_phoneme:
            tn = text_frontend.g2p_infer(tn)
            info["syn_text_phoneme"].append(tn)
        tts_text_token = frontend._extract_text_token(tn)
        if cache["use_cache"] and len(cache["cache_text_token"]) > 1:
            prompt_text_token, prompt_speech_token = get_cached_prompt(cache, tts_text_token,
                                                                       device)
        else:
            prompt_text_token = cache["cache_text_token"][0].to(device)
            prompt_speech_token = torch.tensor([cache["cache_speech_token"][0]],
                                               dtype=torch.int32).to(device)
        journal.record("segment", text=tn, prompt_speech_tokens=prompt_speech_token.shape[1],
                       prompt_text_tokens=prompt_text_token.shape[1])
        tokens = local_llm_forward(llm=llm, prompt_text_token=prompt_text_token,
                                   tts_text_token=tts_text_token,
                                   prompt_speech_token=prompt_speech_token,
                                   sample_method=sample_method)
        all_tokens.extend(tokens)
        wav, mel = local_flow_forward(flow=flow, token_list=tokens,
                                      prompt_speech_tokens=flow_prompt_token,
                                      speech_feat=speech_feat, embedding=embedding)
        cache["cache_text"].append(tn)
        cache["cache_text_token"].append(tts_text_token)
        cache["cache_speech_token"].append(tokens)
        outputs.append(wav)
        mels.append(mel)
    return torch.concat(outputs, dim=1), torch.concat(mels, dim=-1), all_tokens, info
'''

_FRONTEND = '''
import json
import math
import os
import re

import soundfile
import torch

from utils.file_utils import load_wav
import standin_journal as journal


class SpeechTokenizer:
    def __init__(self, model, feature_extractor):
        self.model = model
        self.feature_extractor = feature_extractor
        self._resample_buffer = {{}}

    def extract_speech_token(self, utts):
        assert isinstance(utts, list)
        out = []
        for utt in utts:
            audio, rate = soundfile.read(utt, dtype="float32", always_2d=True)
            n = math.ceil(len(audio) / rate * 25)  # 25 tokens per second
            level = int(abs(float(audio[:, 0].sum())) * 1000) % 97
            out.append([(level * 31 + i * 7) % 32768 for i in range(n)])
        return out


class TextFrontEnd:
    def __init__(self, use_phoneme=False):
        journal.record("TextFrontEnd", use_phoneme=use_phoneme)
        self.use_phoneme = use_phoneme

    def text_normalize(self, text):
        with open("./configs/custom_replace.jsonl", encoding="utf-8") as f:  # relative, as upstream
            replacements = [json.loads(line) for line in f if line.strip()]
        for r in replacements:
            text = text.replace(r["origin"], r["new"])
        text = " ".join(text.lower().split())
        if text and text[-1] not in ".!?":
            text += "."
        journal.record("text_normalize", text=text)
        return text

    def split_by_len(self, text, min_text_len=30, max_text_len=60):
        pieces, current = [], ""
        for sentence in re.findall(r"[^.!?]+[.!?]*", text):
            sentence = sentence.strip()
            if current and len(current) + len(sentence) + 1 > max_text_len:
                pieces.append(current)
                current = sentence
            else:
                current = f"{{current}} {{sentence}}".strip()
        if current:
            pieces.append(current)
        return pieces

    def g2p_infer(self, text):
        journal.record("g2p_infer", text=text)
        return "<|PH|>" + text


class _StandInOrtSession:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return list(self._providers)


class TTSFrontEnd:
    def __init__(self, tokenize_fn, speech_tokenizer, feat_extractor, campplus_model,
                 spk2info="", device=None):
        self.device = device
        self.tokenize_fn = tokenize_fn
        self.feat_extractor = feat_extractor
        with open(campplus_model, "rb") as f:  # relative path: frontend/campplus.onnx
            f.read()
        self.campplus_session = _StandInOrtSession({providers!r})
        self.speech_tokenizer = speech_tokenizer

    def _extract_text_token(self, text):
        journal.record("_extract_text_token", text=text)
        return torch.tensor([self.tokenize_fn(text)], dtype=torch.int32).to(self.device)

    def _extract_speech_token(self, path_or_tuple):
        journal.record("_extract_speech_token", arg=path_or_tuple,
                       files=[[soundfile.info(p).channels, soundfile.info(p).samplerate]
                              for p in path_or_tuple])
        return torch.tensor(self.speech_tokenizer.extract_speech_token(path_or_tuple)).to(
            self.device)

    def _extract_spk_embedding(self, speech):
        journal.record("_extract_spk_embedding", arg=speech)
        wav = load_wav(speech, 16000) if isinstance(speech, str) else speech
        return torch.full((1, 192), float(wav.abs().mean())).to(self.device)

    def _extract_speech_feat(self, speech, sample_rate=24000):
        journal.record("_extract_speech_feat", arg=speech, sample_rate=sample_rate)
        if isinstance(speech, str):
            speech = load_wav(speech, sample_rate)
        speech = speech.to(self.device)
        feat = self.feat_extractor(speech).squeeze(dim=0).transpose(0, 1).to(self.device)
        return feat.unsqueeze(dim=0)
'''

_AUDIO = '''
import torch

import standin_journal as journal

mel_basis = {}
hann_window = {}


def mel_spectrogram(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax,
                    center=False):
    global mel_basis, hann_window
    key = f"{fmax}_{y.device}"
    if key not in mel_basis:  # keyed like upstream: the window by device only
        journal.record("mel_cache_fill", n_fft=n_fft, win_size=win_size)
        g = torch.Generator().manual_seed(n_fft)
        mel_basis[key] = torch.rand(num_mels, n_fft // 2 + 1, generator=g).to(y.device)
        hann_window[str(y.device)] = torch.hann_window(win_size).to(y.device)
    pad = (n_fft - hop_size) // 2
    y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size,
                      window=hann_window[str(y.device)], center=center, return_complex=True)
    spec = torch.matmul(mel_basis[key], spec.abs() + 1e-9)
    return torch.log(torch.clamp(spec, min=1e-5))
'''

_TTS_MODEL_UTIL = '''
import math
import os

import torch

import standin_journal as journal


class _Vocoder(torch.nn.Module):
    def __init__(self, hop, name):
        super().__init__()
        self.name = name
        self.hop = hop
        self.gain = torch.nn.Parameter(torch.full((4,), 0.25))

    def forward(self, mel):
        frames = mel.shape[-1]
        torch.matmul(mel.mean(-1), torch.ones(mel.shape[1], 1))  # an fp32 mel, as upstream's
        t = torch.arange(frames * self.hop, dtype=torch.float32)
        f0 = 120.0 + (mel.mean() % 1.0) * 60.0
        return (self.gain.sum() * 0.3 * torch.sin(2 * math.pi * f0 * t / (self.hop * 50)))[None]


def load_hift(device="cuda"):
    if not os.path.exists("ckpt/hift/hift.pt"):
        raise FileNotFoundError("Checkpoint not found at ckpt/hift/hift.pt")
    return _Vocoder(480, "hift").to(device)


def load_vocos_jit(device="cuda"):
    if not os.path.exists("ckpt/vocos2d/generator_jit.ckpt"):
        raise FileNotFoundError("ckpt/vocos2d/generator_jit.ckpt")
    return _Vocoder(640, "vocos2d").to(device)


class Token2Wav:
    def __init__(self, flow, sample_rate=24000, device="cuda"):
        journal.record("Token2Wav", sample_rate=sample_rate, device=str(device))
        self.device = device
        self.flow = flow
        self.input_frame_rate = flow.input_frame_rate
        if sample_rate == 32000:
            self.hop_size, self.sample_rate = 640, 32000
            self.vocoder = load_vocos_jit(device)
        elif sample_rate == 24000:
            self.hop_size, self.sample_rate = 480, 24000
            self.vocoder = load_hift(device)
        else:
            raise ValueError(f"Unsupported sample_rate: {sample_rate}")

    def token2wav_with_cache(self, token_list, prompt_token=None, prompt_feat=None,
                             embedding=None):
        tokens = torch.tensor(token_list, dtype=torch.long)[None]
        mel, _ = self.flow.inference_with_cache(token=tokens, prompt_token=prompt_token,
                                                prompt_feat=prompt_feat, embedding=embedding)
        return self.vocoder(mel), mel
'''

_LLM = '''
import json

import torch


class GLMTTS(torch.nn.Module):
    def __init__(self, llama_cfg_path=None, mode="PRETRAIN", lora_adapter_config=None,
                 spk_prompt_dict_path=None):
        super().__init__()
        with open(llama_cfg_path, encoding="utf-8") as f:  # relative: ckpt/llm/config.json
            self.config = json.load(f)
        self.proj = torch.nn.Linear(8, 8)
        self.mode = mode

    def inference(self, text, text_len, prompt_text, prompt_text_len, prompt_speech_token,
                  prompt_speech_token_len, beam_size=1, sampling=25, sample_method="ras",
                  spk=None):
        if sample_method == "topk":
            torch.rand(1)  # another draw: other tokens from the same seed
        n = 2 * int(text_len)  # upstream bounds the output at 2x..20x the text tokens
        return torch.randint(0, 32768, (1, n))
'''

_FLOW = '''
import torch


class Flow(torch.nn.Module):
    input_frame_rate = 25

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(80))
        self.register_buffer("offset", torch.zeros(80))
        self.spk_embed_affine_layer = torch.nn.Linear(192, 80)

    def forward(self, x):
        return x * self.scale[None, :, None] + self.offset[None, :, None]

    @torch.inference_mode()
    def inference_with_cache(self, token, prompt_token, prompt_feat, embedding,
                             n_timesteps=10):
        # as upstream: fp32 tensors built here, the fp32 speaker embedding into a Linear
        cond = torch.zeros(1, 80, 1)
        spk = self.spk_embed_affine_layer(torch.nn.functional.normalize(embedding, dim=1))
        x = token.float().repeat_interleave(2, dim=1)[:, None, :].repeat(1, 80, 1) / 32768.0
        mel = self.forward(x) + cond + 0.0 * spk[..., None]
        return torch.nn.functional.linear(mel.transpose(1, 2), torch.eye(80).to(
            self.scale.dtype)).transpose(1, 2), None
'''

_YAML_UTIL = '''
import os

import torch

from flow.flow import Flow


class _Extractor:
    hop_length = 160


def load_flow_model(flow_ckpt_path, config_path, device):
    for path in (flow_ckpt_path, config_path):
        if not os.path.exists(path):
            raise FileNotFoundError(path)
    return Flow().to(device).eval()


def load_speech_tokenizer(model_path):
    if not os.path.isdir(model_path):
        raise FileNotFoundError(model_path)
    return torch.nn.Linear(16, 4), _Extractor()
'''

_SEED_UTIL = '''
import random

import numpy
import torch


def set_seed(seed):
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
'''

_FILE_UTILS = '''
import numpy as np
import soundfile
import torch


def load_wav(wav, target_sr):
    data, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != target_sr:
        n = int(round(len(mono) * target_sr / rate))
        mono = np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono)
    return torch.from_numpy(mono.astype(np.float32))[None]
'''


def write_standin(root: Path, *, vocoders: tuple[int, ...] = (24000, 32000),
                  providers: tuple[str, ...] = ("CPUExecutionProvider",),
                  broken_import: str | None = None) -> Path:
    """Create the stand-in checkout under ``root`` and return ``root``.

    Args:
        vocoders: Rates whose vocoder file to create (24000: ``ckpt/hift/hift.pt``, 32000:
            ``ckpt/vocos2d/generator_jit.ckpt``).
        providers: What the stand-in speaker encoder's ``get_providers()`` reports.
        broken_import: A module name ``glmtts_inference`` imports (to simulate a missing
            dependency).
    """
    sources = {
        "standin_journal.py": _JOURNAL,
        "glmtts_inference.py": _INFERENCE.format(
            broken_import=f"import {broken_import}" if broken_import else ""),
        "cosyvoice/__init__.py": "",
        "cosyvoice/cli/__init__.py": "",
        "cosyvoice/cli/frontend.py": _FRONTEND.format(providers=list(providers)),
        "utils/__init__.py": "",
        "utils/audio.py": _AUDIO,
        "utils/tts_model_util.py": _TTS_MODEL_UTIL,
        "utils/yaml_util.py": _YAML_UTIL,
        "utils/seed_util.py": _SEED_UTIL,
        "utils/file_utils.py": _FILE_UTILS,
        "llm/glmtts.py": _LLM,  # no llm/__init__.py: a namespace package, as upstream
        "flow/__init__.py": "",
        "flow/flow.py": _FLOW,
        # upstream's other namespace subpackages (no __init__.py), imported at load as upstream
        # does: a cleanup that drops a parent before its children meets them
        "cosyvoice/transformer/attention.py": "ATTENTION = 'stand-in'\n",
        "cosyvoice/hifigan_cosy2/generator.py": "GENERATOR = 'stand-in'\n",
        "utils/whisper_models/encoder.py": "ENCODER = 'stand-in'\n",
    }
    for rel, text in sources.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    data: dict[str, Any] = {
        "ckpt/speech_tokenizer/config.json": "{}",
        "ckpt/vq32k-phoneme-tokenizer/tokenizer_config.json": "{}",
        "ckpt/llm/config.json": json.dumps({"hidden_size": 8}),
        "ckpt/flow/flow.pt": "stand-in",
        "ckpt/flow/config.yaml": "flow: stand-in\n",
        "frontend/campplus.onnx": "stand-in",
        "configs/custom_replace.jsonl": json.dumps({"origin": "GLM", "new": "G L M"}) + "\n",
    }
    if 24000 in vocoders:
        data["ckpt/hift/hift.pt"] = "stand-in"
    if 32000 in vocoders:
        data["ckpt/vocos2d/generator_jit.ckpt"] = "stand-in"
    for rel, text in data.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def read_calls(root: Path) -> list[dict[str, Any]]:
    """Every call the stand-in recorded, oldest first."""
    path = root / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def clear_calls(root: Path) -> None:
    """Forget the recorded calls."""
    (root / "calls.jsonl").unlink(missing_ok=True)


def voiced(seconds: float, rate: int, f0: float = 140.0, channels: int = 1,
           seed: int = 0) -> np.ndarray:
    """A speech-like test signal: five harmonics of a gliding ``f0`` under a syllable-rate
    (4 Hz) envelope, a little noise; ``(frames,)`` or ``(frames, channels)`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t)) * np.minimum(1, t / 0.05)
    mono = 0.25 * tone * envelope + 0.002 * rng.standard_normal(len(t))
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
