"""Counting a model's weights: the bytes of every distinct tensor, module parameter and buffer
reachable from its parts (the one weight counter of every engine)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

import torch


def _tensors(obj: Any, depth: int) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, torch.Tensor):
        yield obj
    elif depth > 0 and not isinstance(obj, (ModuleType, type, str, bytes)):
        if isinstance(obj, dict):
            values: Iterable[Any] = obj.values()
        elif isinstance(obj, (list, tuple)):
            values = obj
        else:
            values = getattr(obj, "__dict__", {}).values()
        for value in values:
            yield from _tensors(value, depth - 1)


def tensor_bytes(roots: Iterable[Any], depth: int = 3) -> int:
    """Bytes of the distinct tensors, module parameters and buffers reachable from ``roots``
    through at most ``depth`` plain attributes, dicts or lists."""
    seen: set[int] = set()
    total = 0
    for root in roots:
        for t in _tensors(root, depth):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total
