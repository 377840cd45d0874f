"""Where a GLM-TTS checkout is, and whether it (and this machine) can run it.

Facts of upstream zai-org/GLM-TTS at revision c5dc7ae (``glmtts_inference.py``,
``utils/hift_util.py``, ``utils/vocos_util.py``, ``utils/yaml_util.py``): every path is relative
to the checkout's root, and the weights are a manual download into ``ckpt/``. The checks below
look for the folders and the files that code opens by name; what a folder must hold beyond that
(``config.json``, ``*.safetensors``, tokenizer files) is left to upstream's own loaders, whose
errors the engine reports when loading.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from glmtts.say import N_, Say

#: Upstream at c5dc7ae moves audio to ``"cuda"`` unconditionally (``utils/file_utils.load_wav``,
#: ``SpeechTokenizer.extract_speech_token``) and gives ONNX Runtime ``device_id`` 0, so it runs
#: on the first visible GPU only. Tests with a CPU stand-in of upstream turn this off.
REQUIRES_CUDA = True
#: Environment variable naming the checkout (an engine option ``home=`` overrides it).
HOME_ENV = "GLMTTS_HOME"
#: Upstream's entry module, at the checkout's root.
ENTRY_SCRIPT = "glmtts_inference.py"
#: ``ckpt/`` folders every rate needs, with what they hold.
CKPT_FOLDERS = {
    "speech_tokenizer": "WhisperVQ speech tokenizer",
    "vq32k-phoneme-tokenizer": "text tokenizer",
    "llm": "language model",
    "flow": "flow-matching model",
}
#: Files upstream opens by name (relative to the checkout), besides the vocoders.
REQUIRED_FILES = ("ckpt/llm/config.json", "ckpt/flow/flow.pt", "ckpt/flow/config.yaml",
                  "frontend/campplus.onnx")


@dataclass(frozen=True)
class Vocoder:
    """The vocoder upstream's ``Token2Wav`` loads for one output rate."""

    sample_rate: int
    folder: str
    file: str
    name: str

    @property
    def path(self) -> str:
        return f"ckpt/{self.folder}/{self.file}"


#: Output rate -> its vocoder. The same flow checkpoint serves both.
VOCODERS = {
    24000: Vocoder(24000, "hift", "hift.pt", "HiFT"),
    32000: Vocoder(32000, "vocos2d", "generator_jit.ckpt", "Vocos2D"),
}
#: Import name -> pip name, for the packages that the modules the adapter imports need at import
#: time (upstream's requirements.txt pins them). ``tn`` may be replaced by ``ttsfrd``.
UPSTREAM_PACKAGES = {
    "torchaudio": "torchaudio", "transformers": "transformers", "onnxruntime": "onnxruntime-gpu",
    "hyperpyyaml": "HyperPyYAML", "librosa": "librosa", "scipy": "scipy", "peft": "peft",
    "x_transformers": "x-transformers", "einops": "einops", "inflect": "inflect",
    "contractions": "contractions", "emoji": "emoji", "pronouncing": "pronouncing",
    "pypinyin": "pypinyin", "jieba": "jieba", "yaml": "PyYAML", "safetensors": "safetensors",
    "tqdm": "tqdm", "tn": "WeTextProcessing",
}
DOWNLOAD_HINT = N_("download the weights into it: huggingface-cli download zai-org/GLM-TTS "
                    "--local-dir ckpt")


def configured_home(home: str | Path | None = None) -> Path | None:
    """``home`` if given, else ``$GLMTTS_HOME``, as an absolute path; None when neither is set."""
    value = str(home) if home is not None else os.environ.get(HOME_ENV, "")
    if not value.strip():
        return None
    return Path(value.strip()).expanduser().resolve()


def _folder_ok(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def available_rates(home: Path) -> tuple[int, ...]:
    """Output rates whose vocoder file is in the checkout."""
    return tuple(rate for rate, voc in VOCODERS.items() if (home / voc.path).is_file())


def missing_vocoder(home: Path, sample_rate: int) -> str | None:
    """Why ``sample_rate`` cannot be produced from this checkout, or None when it can."""
    voc = VOCODERS.get(sample_rate)
    if voc is None:
        return Say("GLM-TTS produces {rates} Hz only",
                   rates=" or ".join(str(r) for r in VOCODERS))
    if not (home / voc.path).is_file():
        return Say("{file} is missing from {home}: {rate} Hz needs the {vocoder} vocoder "
                   "({hint})", file=voc.path, home=str(home), rate=sample_rate,
                   vocoder=voc.name, hint=DOWNLOAD_HINT)
    return None


def checkout_problem(home: str | Path | None = None) -> str | None:
    """What is missing for a checkout to be usable (one line), or None.

    Checked in order: the setting, the folder, ``glmtts_inference.py``, the ``ckpt/`` folders
    (``speech_tokenizer``, ``vq32k-phoneme-tokenizer``, ``llm``, ``flow``; empty counts as
    missing), at least one vocoder (``ckpt/hift/hift.pt`` for 24 kHz,
    ``ckpt/vocos2d/generator_jit.ckpt`` for 32 kHz), then the files upstream opens by name.
    """
    root = configured_home(home)
    if root is None:
        return Say("{setting} is not set: point it at a GLM-TTS checkout that has its ckpt/ "
                   "weights (see the README)", setting=HOME_ENV)
    if not root.exists():
        return Say("the GLM-TTS folder {folder} does not exist", folder=str(root))
    if not root.is_dir():
        return Say("{folder} is not a folder: {setting} must name a GLM-TTS checkout",
                   folder=str(root), setting=HOME_ENV)
    if not (root / ENTRY_SCRIPT).is_file():
        return Say("{folder} is not a GLM-TTS checkout: {file} is missing", folder=str(root),
                   file=ENTRY_SCRIPT)
    ckpt = root / "ckpt"
    if not ckpt.is_dir():
        return Say("{folder} has no ckpt/ folder: {hint}", folder=str(root),
                   hint=DOWNLOAD_HINT)
    missing = [name for name in CKPT_FOLDERS if not _folder_ok(ckpt / name)]
    if not available_rates(root):
        missing += [f"{v.folder} ({v.sample_rate // 1000} kHz)" for v in VOCODERS.values()]
    if missing:
        return Say("{folder} lacks {missing}: {hint}", folder=str(ckpt),
                   missing=", ".join(missing), hint=DOWNLOAD_HINT)
    absent = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if absent:
        return Say("{folder} lacks {missing}: {hint}", folder=str(root),
                   missing=", ".join(absent), hint=DOWNLOAD_HINT)
    return None


def packages_problem() -> str | None:
    """Which Python packages upstream imports are not installed (one line), or None.

    Looks them up without importing them (``importlib.util.find_spec``)."""
    missing = []
    for module, pip_name in UPSTREAM_PACKAGES.items():
        if module == "tn" and importlib.util.find_spec("ttsfrd") is not None:
            continue
        if importlib.util.find_spec(module) is None:
            missing.append(pip_name)
    if not missing:
        return None
    return Say("GLM-TTS needs Python packages this environment lacks: {packages} (pip install "
               "-r $GLMTTS_HOME/requirements.txt)", packages=", ".join(missing))


def engine_problem(home: str | Path | None = None) -> str | None:
    """Why the engine cannot run with the checkout at ``home`` (None: ``$GLMTTS_HOME``) on
    this machine, or None when it can: the checkout, upstream's packages, then CUDA (see
    :data:`REQUIRES_CUDA`). What ``GlmTtsEngine.unavailable_reason_for`` answers, without
    importing the engine (and torch) where the checkout is missing."""
    problem = checkout_problem(home) or packages_problem()
    if problem is None and REQUIRES_CUDA:
        from glmtts.device import cuda_unavailable_reason

        cuda = cuda_unavailable_reason()
        if cuda is not None:
            problem = Say("upstream GLM-TTS runs on CUDA only, and {reason}", reason=cuda)
    return problem
