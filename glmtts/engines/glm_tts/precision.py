"""GLM-TTS in bf16 or fp16: the weights' size predicted from the checkpoint, and the cast.

Upstream (c5dc7ae) hard-codes fp32: ``load_models`` calls
``LlamaForCausalLM.from_pretrained(..., dtype=torch.float32).to(DEVICE)`` and
``yaml_util.load_flow_model(ckpt, config, DEVICE)``, which loads the flow's state dict onto the
device. Casting only after that would put the fp32 language model on the GPU first, so a 16-bit
load could never serve a GPU where fp32 does not fit. While ``load_models`` runs,
:func:`loading_in` therefore hands ``from_pretrained`` the chosen dtype and builds the flow on
the CPU, casts it, then moves it: the device never holds the fp32 copies. :func:`cast_parts`
then casts the language model and the flow after the load (a no-op when the interception
worked; the guarantee when a checkout's names differ).

Only the language model (1.55 B parameters) and the flow (DiT) change precision; the speech
tokenizer, the vocoders, the speaker encoder (ONNX) and the prompt features stay fp32. The
language model's inputs are token ids, so it runs in its own dtype as Hugging Face models do. The
flow is called with fp32 features (prompt mel, speaker embedding) and builds fp32 tensors
itself, so its ``inference_with_cache`` runs under ``torch.autocast`` in the chosen dtype and
its mel comes back as fp32 for the vocoder; the ODE's state stays fp32.
"""

from __future__ import annotations

import functools
import json
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from glmtts.engines.glm_tts.checkout import VOCODERS
from glmtts.precision import torch_dtype

log = logging.getLogger(__name__)

#: Parts whose weights change precision (``ckpt/`` folders).
CAST_PARTS = ("llm", "flow")


def _safetensors_elements(path: Path) -> int | None:
    """Elements of the floating-point tensors in a ``.safetensors`` file, from its header
    (8 bytes of length, then JSON); None when the header is unreadable."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100 * 2**20:
                return None
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError):
        return None
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        if str(info.get("dtype", "")).startswith(("F", "BF")):
            count = 1
            for dim in info.get("shape", []):
                count *= int(dim)
            total += count
    return total


def _fp32_bytes(folder: Path) -> int:
    """fp32 bytes of a ``ckpt/`` folder's weights: the elements of its safetensors files x 4
    (exact, whatever dtype they are stored in), plus the size of its other weight files
    (``.pt``, ``.ckpt``, ``.bin``: read as fp32)."""
    total = 0
    for path in sorted(folder.glob("*")):
        if path.suffix == ".safetensors":
            elements = _safetensors_elements(path)
            total += 4 * elements if elements is not None else path.stat().st_size
        elif path.suffix in (".pt", ".ckpt", ".bin", ".pth"):
            total += path.stat().st_size
    return total


@functools.lru_cache(maxsize=32)
def _part_bytes(home: str, stamp: tuple[tuple[str, int, int], ...]) -> dict[str, int]:
    root = Path(home) / "ckpt"
    return {name: _fp32_bytes(root / name) for name, _size, _mtime in stamp}


def checkpoint_bytes(home: Path, sample_rate: int) -> dict[str, int]:
    """fp32 bytes per part that ``load_models`` puts on the device at ``sample_rate``:
    ``llm``, ``flow``, ``speech_tokenizer`` and the rate's vocoder folder (from the files in
    ``ckpt/``, without loading them)."""
    names = ("llm", "flow", "speech_tokenizer", VOCODERS[sample_rate].folder)
    stamp = []
    for name in names:
        folder = home / "ckpt" / name
        files = [p.stat() for p in folder.glob("*")] if folder.is_dir() else []
        stamp.append((name, sum(s.st_size for s in files),
                      max((s.st_mtime_ns for s in files), default=0)))
    return dict(_part_bytes(str(home), tuple(stamp)))


def weights_estimate(home: Path, sample_rate: int, dtype: str) -> int:
    """Predicted weights on the device in ``dtype``: the checkpoint's fp32 bytes, with the
    language model's and the flow's halved for a 16-bit dtype."""
    parts = checkpoint_bytes(home, sample_rate)
    factor = 1.0 if dtype == "fp32" else 0.5
    return round(sum(size * (factor if name in CAST_PARTS else 1.0)
                     for name, size in parts.items()))


@contextmanager
def loading_in(modules: Any, dtype: str) -> Iterator[None]:
    """While upstream's ``load_models`` runs: its language model loads in ``dtype`` and its flow
    is built on the CPU, cast, then moved to the device (see the module's docstring). Nothing
    is patched for fp32; every patched name is put back on exit."""
    if dtype == "fp32":
        yield
        return
    target = torch_dtype(dtype)
    inference = modules.inference
    restore: list[tuple[Any, str, Any]] = []
    llama = getattr(inference, "LlamaForCausalLM", None)
    if llama is not None and hasattr(llama, "from_pretrained"):
        class _InDtype:  # upstream calls LlamaForCausalLM.from_pretrained(path, dtype=fp32)
            @staticmethod
            def from_pretrained(*args: Any, **kwargs: Any) -> Any:
                key = "torch_dtype" if "torch_dtype" in kwargs else "dtype"
                kwargs[key] = target
                return llama.from_pretrained(*args, **kwargs)

        restore.append((inference, "LlamaForCausalLM", llama))
        inference.LlamaForCausalLM = _InDtype
    yaml_util = getattr(inference, "yaml_util", None)
    load_flow = getattr(yaml_util, "load_flow_model", None)
    if load_flow is not None:
        def load_flow_model(ckpt: Any, config: Any, device: Any) -> Any:
            return load_flow(ckpt, config, "cpu").to(target).to(device)

        restore.append((yaml_util, "load_flow_model", load_flow))
        yaml_util.load_flow_model = load_flow_model
    if len(restore) < 2:
        log.warning("upstream's load_models does not use the names this adapter expects: "
                    "its fp32 weights load first and are cast afterwards")
    try:
        yield
    finally:
        for owner, name, value in reversed(restore):
            setattr(owner, name, value)


def cast_parts(llm: Any, token2wav: Any, dtype: str, device: str) -> None:
    """Cast the language model and the flow to ``dtype`` (in place) and run the flow under
    autocast with fp32 output; fp32 leaves everything as upstream loaded it."""
    if dtype == "fp32":
        return
    target = torch_dtype(dtype)
    llm.to(target)
    flow = token2wav.flow
    flow.to(target)
    if getattr(flow.inference_with_cache, "_glmtts_dtype", None) == dtype:
        return
    inner = flow.inference_with_cache
    kind = "cuda" if device.startswith("cuda") else "cpu"

    @functools.wraps(inner)
    def inference_with_cache(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(kind, dtype=target):
            mel, cache = inner(*args, **kwargs)
        return mel.float(), cache

    inference_with_cache._glmtts_dtype = dtype  # type: ignore[attr-defined]
    flow.inference_with_cache = inference_with_cache
