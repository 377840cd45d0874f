"""Choosing the compute device: explicit, with a clear error where it does not exist."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from pathlib import Path

from glmtts.errors import DeviceUnavailableError
from glmtts.say import N_, Say

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_hidden_by_env() -> bool:
    """True when ``CUDA_VISIBLE_DEVICES`` hides every GPU (``-1`` or empty)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() in ("", "-1")


_CPU_ONLY = N_("this PyTorch build is CPU-only (install the CUDA build of torch 2.13.0, see the "
                "README)")


@functools.cache
def _cpu_only_build() -> bool:
    """True when the installed torch was built without CUDA, read from its ``version.py``
    (``cuda = None``) without importing torch (~1.5 s, which the app's first page would pay
    only to learn that it runs on the CPU); False when that cannot be told (ask torch)."""
    spec = importlib.util.find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = (Path(folder) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        return re.search(r"^cuda\s*(?::[^=]*)?=\s*None\s*$", text, re.MULTILINE) is not None
    return False


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    if cuda_hidden_by_env():
        return N_("CUDA_VISIBLE_DEVICES hides every GPU")
    if "torch" not in sys.modules and _cpu_only_build():
        return _CPU_ONLY
    import torch

    if torch.version.cuda is None:
        return _CPU_ONLY
    if not torch.cuda.is_available():
        return N_("no CUDA device or driver found")
    return None


def resolve_device(device: str | None = "auto") -> str:
    """Map ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a concrete torch device string.

    Raises:
        DeviceUnavailableError: CUDA was asked for where there is none, or the name is unknown.
    """
    name = (device or "auto").strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "cuda" if cuda_unavailable_reason() is None else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise DeviceUnavailableError(Say("CUDA was requested but {reason}; use --cpu (or "
                                             "device 'cpu') to run on the processor",
                                             reason=reason))
        if ":" in name:
            import torch

            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise DeviceUnavailableError(Say("no such GPU {name}: this machine has {count} "
                                                 "CUDA device(s)", name=repr(name),
                                                 count=torch.cuda.device_count()))
        return name
    raise DeviceUnavailableError(Say("unknown device {device}; choose auto, cpu, cuda or cuda:N",
                                     device=repr(device)))
