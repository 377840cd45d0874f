"""The one way bytes and durations are written for people, everywhere (sidebar, cards, policy
sentences, CLI): three significant figures, binary units.

``fmt_bytes(62_601_836)`` -> ``59.7 MiB``; ``fmt_bytes(1536)`` -> ``1.5 KiB``;
``fmt_bytes(150 * 2**20)`` -> ``150 MiB``; ``fmt_seconds(0.0123)`` -> ``12 ms``;
``fmt_seconds(3.214)`` -> ``3.2 s``; None (or NaN) -> ``n/a``.
"""

from __future__ import annotations

import math

_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_bytes(value: float | None, *, signed: bool = False) -> str:
    """Bytes for people; ``signed`` puts ``+`` before a positive value."""
    if _missing(value):
        return "n/a"
    assert value is not None
    sign = "-" if value < 0 else ("+" if signed and value > 0 else "")
    size = abs(float(value))
    for unit, scale in _UNITS:
        if size >= scale:
            scaled = size / scale
            return f"{sign}{scaled:.{0 if scaled >= 100 else 1}f} {unit}"
    return f"{sign}{size:.0f} B"


def fmt_seconds(value: float | None) -> str:
    """Seconds for people: milliseconds below one second, one decimal below a minute."""
    if _missing(value):
        return "n/a"
    assert value is not None
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s"
