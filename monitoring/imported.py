"""Modules as this process imported them: monitoring never imports torch, it reads
``sys.modules``.

The app imports torch on its first synthesis, while the sampler thread reads every 100 ms: for
the second or so that torch's own import runs, ``sys.modules["torch"]`` is a half-built module
(no ``torch.cuda`` yet). Readers get None then, as before the import began."""

from __future__ import annotations

import sys
from types import ModuleType


def imported(name: str) -> ModuleType | None:
    """The module ``name`` once its import has finished in this process, else None (not
    imported, or still being imported by some thread)."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def imported_torch() -> ModuleType | None:
    """torch, once this process has finished importing it; else None."""
    return imported("torch")
