"""Human formatting of bytes and times (pure functions, testable without Streamlit)."""

from __future__ import annotations

import math

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes(value: float | None, *, signed: bool = False) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``n/a``; ``signed`` adds ``+`` to positives."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    sign = "-" if value < 0 else ("+" if signed and value > 0 else "")
    size = abs(float(value))
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    digits = 0 if unit == 0 else (2 if size < 10 else 1)
    return f"{sign}{size:.{digits}f} {_UNITS[unit]}"


def fmt_seconds(value: float | None) -> str:
    """``0.0123`` -> ``12 ms``; ``3.2`` -> ``3.20 s``; ``None`` -> ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"
